"""The C TOML reader (csrc/pp_toml.c) against tomllib: differential fuzzing plus the
corners of the spec a manifest can meet.

Every document is either parsed by both to the same values (same types, same order of
keys, floats bit for bit up to NaN) or rejected by both.  Three exceptions, all
documents our reader refuses *by design* (``BY_DESIGN``) while tomllib accepts them:

* dates and times, anywhere (a manifest has no use for them);
* nesting deeper than 128 levels of tables and arrays (tomllib has no bound for
  tables and Python's recursion limit for values);
* integer literals longer than 1000 characters (Python's own int() stops at 4300
  digits).

Documents come from four strategies: TOML written from random values in every
syntax the spec allows (string forms, escapes, number bases, underscores, dotted
keys, inline tables, [table], [[array of tables]], comments, CRLF); manifest-shaped
documents; byte-level mutations of both; and raw text over TOML's punctuation.
"""

from __future__ import annotations

import json
import math
import os
import random
import string
import struct
import sys
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from polyplug import ffi, lib

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Examples per property; POLYPLUG_FUZZ_SCALE=10 runs ten times as many (a longer hunt).
SCALE = float(os.environ.get("POLYPLUG_FUZZ_SCALE", "1"))
DIFF = settings(max_examples=int(300 * SCALE), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

BY_DESIGN = ("dates and times are not supported", "values nested too deeply",
             "an integer literal longer than")


# ── the two readers ──────────────────────────────────────────────────────────


class Rejected(Exception):
    """A reader refused the document; ``str()`` is its reason."""


def ours(text: str) -> Any:
    """The document as pp_toml_to_json reads it."""
    raw = text.encode("utf-8", "surrogatepass")
    view = ffi.new("StringView *")
    buf = ffi.from_buffer("uint8_t[]", raw)
    view.ptr, view.len = buf, len(raw)
    out, length = ffi.new("char **"), ffi.new("size_t *")
    err = ffi.new("pp_error *")
    if lib.pp_toml_to_json(view[0], out, length, err) != 0:
        raise Rejected(ffi.string(err.message).decode("utf-8", "replace"))
    try:
        return json.loads(ffi.unpack(out[0], length[0]).decode("utf-8"))
    finally:
        lib.pp_toml_json_free(out[0])


def theirs(text: str) -> Any:
    try:
        return tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or int()'s digit limit
        raise Rejected(str(exc)) from None
    except RecursionError:
        raise Rejected("recursion") from None


def canonical(v: Any) -> Any:
    """A comparable form: types kept apart (1 != 1.0 != True), floats by bits, keys in
    order, dates and times marked."""
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, int):
        return ("int", v)
    if isinstance(v, float):
        return ("float", "nan" if math.isnan(v) else struct.pack("<d", v).hex())
    if isinstance(v, str):
        return ("str", v)
    if isinstance(v, list):
        return ("array", [canonical(x) for x in v])
    if isinstance(v, dict):
        return ("table", [(k, canonical(x)) for k, x in v.items()])
    return ("datetime", str(v))


def depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max((depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    return 0


def has_datetime(v: Any) -> bool:
    if isinstance(v, list):
        return any(has_datetime(x) for x in v)
    if isinstance(v, dict):
        return any(has_datetime(x) for x in v.values())
    return hasattr(v, "isoformat")


def compare(text: str) -> str:
    """Run both readers; return the outcome, or fail the test on a disagreement."""
    try:
        expected: Any = theirs(text)
    except Rejected as exc:
        expected = exc
    try:
        got: Any = ours(text)
    except Rejected as exc:
        got = exc
    if isinstance(expected, Rejected) and isinstance(got, Rejected):
        return "rejected by both"
    if isinstance(got, Rejected):
        reason = str(got)
        by_design = any(b in reason for b in BY_DESIGN)
        justified = (has_datetime(expected) if BY_DESIGN[0] in reason
                     else depth(expected) > 128 if BY_DESIGN[1] in reason else by_design)
        assert justified, f"we rejected a document tomllib reads as {expected!r}: {reason}"
        return "rejected by design"
    assert not isinstance(expected, Rejected), (
        f"we read {got!r} from a document tomllib rejects: {expected}")
    assert canonical(got) == canonical(expected)
    return "same values"


# ── writing TOML in every style ──────────────────────────────────────────────

SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r",
                 "\b": "\\b", "\f": "\\f"}
BARE = set(string.ascii_letters + string.digits + "-_")


def basic_string(s: str, rnd: random.Random, multiline: bool = False) -> str:
    out = []
    for i, c in enumerate(s):
        if multiline and c == "\n" and rnd.random() < 0.7:
            out.append("\n" if rnd.random() < 0.7 else "\r\n")
        elif multiline and c == '"' and rnd.random() < 0.5 and s[i + 1:i + 2] != '"' and \
                (i == 0 or s[i - 1] != '"'):
            out.append('"')  # a lone quote needs no escape in a multi-line string
        elif c in SHORT_ESCAPES and rnd.random() < 0.7:
            out.append(SHORT_ESCAPES[c])
        elif ord(c) < 0x20 or c in ('"', "\\", "\x7f"):
            out.append(f"\\u{ord(c):04x}" if rnd.random() < 0.8 else f"\\U{ord(c):08X}")
        elif ord(c) > 0x7F and rnd.random() < 0.2:
            out.append(f"\\u{ord(c):04X}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
        else:
            out.append(c)
        if multiline and rnd.random() < 0.05:
            out.append("\\" + rnd.choice(["", " ", "\t "]) + "\n" + rnd.choice(["", "  ", "\n\t"]))
    body = "".join(out)
    if multiline:
        lead = "\n" if rnd.random() < 0.5 else ""  # a newline right after """ is dropped
        return '"""' + lead + body + '"""'
    return '"' + body + '"'


def toml_string(s: str, rnd: random.Random, key: bool = False) -> str:
    plain = all(c == "\t" or (ord(c) >= 0x20 and c != "\x7f") for c in s)
    roll = rnd.random()
    if plain and "'" not in s and roll < 0.25:
        return f"'{s}'"
    if key:
        return basic_string(s, rnd)
    if roll < 0.45 and all(c in "\t\n" or (ord(c) >= 0x20 and c != "\x7f") for c in s) \
            and "'''" not in s:
        lead = "\n" if s.startswith("\n") or rnd.random() < 0.5 else ""
        return "'''" + lead + s + "'''"
    if roll < 0.65:
        return basic_string(s, rnd, multiline=True)
    return basic_string(s, rnd)


def with_underscores(digits: str, rnd: random.Random) -> str:
    if len(digits) < 2 or rnd.random() < 0.6:
        return digits
    out = [digits[0]]
    for d in digits[1:]:
        if rnd.random() < 0.3:
            out.append("_")
        out.append(d)
    return "".join(out)


def toml_int(v: int, rnd: random.Random) -> str:
    roll = rnd.random()
    if v >= 0 and roll < 0.15:
        return "0x" + with_underscores(format(v, rnd.choice(["x", "X"])), rnd)
    if v >= 0 and roll < 0.25:
        return "0o" + with_underscores(format(v, "o"), rnd)
    if v >= 0 and roll < 0.32:
        return "0b" + with_underscores(format(v, "b"), rnd)
    sign = "-" if v < 0 else ("+" if rnd.random() < 0.2 else "")
    return sign + with_underscores(str(abs(v)), rnd)


def toml_float(v: float, rnd: random.Random) -> str:
    if math.isnan(v):
        return rnd.choice(["nan", "+nan", "-nan"])
    if math.isinf(v):
        return ("-" if v < 0 else rnd.choice(["", "+"])) + "inf"
    text = repr(v)
    if "e" in text or "E" in text:
        mant, exp = text.split("e")
        if rnd.random() < 0.3:
            exp = exp.lstrip("+")
        return mant + rnd.choice("eE") + exp
    if rnd.random() < 0.2 and text.endswith(".0") and abs(v) < 1e15:
        return text[:-2] + "e0"
    return text


def toml_key(k: str, rnd: random.Random) -> str:
    if k and all(c in BARE for c in k) and rnd.random() < 0.6:
        return k
    return toml_string(k, rnd, key=True)


def ws(rnd: random.Random) -> str:
    return rnd.choice(["", " ", " ", "  ", "\t", " \t"])


def inline(v: Any, rnd: random.Random) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return toml_int(v, rnd)
    if isinstance(v, float):
        return toml_float(v, rnd)
    if isinstance(v, str):
        return toml_string(v, rnd)
    if isinstance(v, list):
        if rnd.random() < 0.3:  # across lines, with comments and a trailing comma
            items = [f"\n  {inline(x, rnd)},{rnd.choice(['', ' # c'])}" for x in v]
            return "[" + "".join(items) + "\n]"
        return "[" + ws(rnd) + ("," + ws(rnd)).join(inline(x, rnd) for x in v) + ws(rnd) + "]"
    if hasattr(v, "isoformat"):  # dates and times, refused by design
        return v.isoformat()
    if isinstance(v, dict):
        if not v:
            return "{" + ws(rnd) + "}"
        parts = []
        for path, x in flatten(v, rnd):
            parts.append(".".join(toml_key(p, rnd) for p in path) + ws(rnd) + "=" + ws(rnd) +
                         inline(x, rnd))
        return "{" + ws(rnd) + ("," + ws(rnd)).join(parts) + ws(rnd) + "}"
    raise TypeError(type(v).__name__)


def flatten(table: dict[str, Any], rnd: random.Random) -> list[tuple[list[str], Any]]:
    """Key paths and values, turning some nested non-empty tables into dotted keys."""
    out: list[tuple[list[str], Any]] = []
    for k, v in table.items():
        if isinstance(v, dict) and v and rnd.random() < 0.4:
            out += [([k, *path], x) for path, x in flatten(v, rnd)]
        else:
            out.append(([k], v))
    return out


def is_aot(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def emit(path: list[str], table: dict[str, Any], rnd: random.Random, lines: list[str]) -> None:
    deferred = []
    for k, v in table.items():
        if (isinstance(v, dict) or is_aot(v)) and rnd.random() < 0.6:
            deferred.append((k, v))
        elif isinstance(v, dict) and v and rnd.random() < 0.5:
            for sub, x in flatten({k: v}, rnd):
                lines.append(".".join(toml_key(p, rnd) for p in sub) + ws(rnd) + "=" + ws(rnd) +
                             inline(x, rnd) + rnd.choice(["", "", " # note"]))
        else:
            lines.append(toml_key(k, rnd) + ws(rnd) + "=" + ws(rnd) + inline(v, rnd) +
                         rnd.choice(["", "", " # note", "\t#"]))
        if rnd.random() < 0.1:
            lines.append(rnd.choice(["", "# comment", "   ", "#"]))
    for k, v in deferred:
        sub = path + [k]
        head = ".".join(toml_key(p, rnd) for p in sub)
        if isinstance(v, dict):
            lines.append("[" + ws(rnd) + head + ws(rnd) + "]")
            emit(sub, v, rnd, lines)
        else:
            for item in v:
                lines.append("[[" + ws(rnd) + head + ws(rnd) + "]]")
                emit(sub, item, rnd, lines)


def document(doc: dict[str, Any], rnd: random.Random) -> str:
    lines: list[str] = []
    emit([], doc, rnd, lines)
    eol = "\r\n" if rnd.random() < 0.15 else "\n"
    return eol.join(lines) + (eol if rnd.random() < 0.9 else "")


# ── strategies ───────────────────────────────────────────────────────────────

keys = st.one_of(st.text(alphabet=string.ascii_lowercase + "_-0", min_size=1, max_size=6),
                 st.text(max_size=6))
plain_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.text(alphabet="ab\"'\\\n\t \x00\x7f\u00e9\U0001f600", max_size=10),
)
dates_and_times = st.one_of(st.datetimes(timezones=st.sampled_from([None, timezone.utc])),
                            st.dates(), st.times())


def documents_of(scalars: Any) -> Any:
    values = st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                st.dictionaries(keys, inner, max_size=4)),
        max_leaves=20,
    )
    return st.dictionaries(keys, values, max_size=6)


documents = documents_of(plain_scalars)
# some leaves are dates or times (refused by design)
documents_with_dates = documents_of(
    st.integers(0, 15).flatmap(lambda n: dates_and_times if n == 7 else plain_scalars))

contract_keys = st.sampled_from(["example.arith@1", "x@0", "a.b@2", "bad", "x@01", "y@1"])
fn_specs = st.fixed_dictionaries(
    {"id": st.one_of(st.integers(0, 5), st.integers(-2, 2**33), st.text(max_size=2))},
    optional={"args": st.lists(st.sampled_from(["u32", "i64", "string", "f64", "bogus", "uint8_t"]),
                               max_size=3),
              "returns": st.sampled_from(["u32", "string", "nope"]),
              "ars": st.just(["u32"])})
manifest_docs = st.fixed_dictionaries(
    {"loader": st.sampled_from(["lua", "", "Lua"]),
     "name": st.sampled_from(["demo", "", "x y"])},
    optional={
        "id": st.one_of(st.integers(0, 2**64 - 1), st.just(1), st.text(max_size=3)),
        "version": st.sampled_from(["1.0.0", "1", "2.5", "x.y", ""]),
        "file": st.one_of(st.sampled_from(["bundle.lua", "../x.lua", " "]),
                          st.fixed_dictionaries({"linux": st.fixed_dictionaries(
                              {"x86_64": st.sampled_from(["a.lua", "b.lua"])})})),
        "provides": st.lists(st.sampled_from(["x@1", "y", "@1", "z@v"]), max_size=3),
        "provieds": st.lists(st.just("x@1"), max_size=1),
        "function_count": st.dictionaries(st.sampled_from(["x@1", "y@0", "y@1"]),
                                          st.integers(-1, 2**32), max_size=3),
        "dependency": st.lists(st.fixed_dictionaries(
            {"kind": st.just("contract"), "contract": st.sampled_from(["x", "y@2"]),
             "min_version": st.sampled_from(["1.0", "1", "2.0.0"])},
            optional={"contract_id": st.integers(0, 2**64 - 1), "bundle": st.just("core"),
                      "bundle_id": st.integers(0, 10), "note": st.just(1)}), max_size=3),
        "needs_reinit_on_dep_reload": st.one_of(st.booleans(), st.just("yes")),
        "bundle_dependencies": st.lists(st.sampled_from(["core@1.0", "a"]), max_size=2),
        "contracts": st.dictionaries(contract_keys, st.fixed_dictionaries(
            {"functions": st.dictionaries(st.sampled_from(["add", "sub", "9x"]), fn_specs,
                                          max_size=3)}), max_size=2),
    })

PUNCTUATION = "[]{}=.,\"'#\\\n\r\t :+-_0123456789abexoTZtruefalsinn\x00\x7f\u00e9"
raw_texts = st.text(alphabet=PUNCTUATION, max_size=60)


def mutate(text: str, rnd: random.Random) -> str:
    """A few random edits with characters that matter to TOML."""
    chars = list(text)
    for _ in range(rnd.randint(1, 4)):
        pos = rnd.randint(0, len(chars))
        op = rnd.random()
        if op < 0.4:
            chars.insert(pos, rnd.choice(PUNCTUATION))
        elif op < 0.7 and chars:
            del chars[min(pos, len(chars) - 1)]
        elif chars:
            chars[min(pos, len(chars) - 1)] = rnd.choice(PUNCTUATION)
    return "".join(chars)


# ── the properties ───────────────────────────────────────────────────────────


@DIFF
@given(doc=documents, rnd=st.randoms(use_true_random=False))
def test_documents_in_every_style_read_the_same(doc: dict[str, Any], rnd: random.Random) -> None:
    text = document(doc, rnd)
    note(f"document: {text!r}")
    outcome = compare(text)
    event(outcome)
    assert outcome != "rejected by both", "the test's writer produced invalid TOML"


def _leaves(v: Any) -> list[Any]:
    if isinstance(v, list):
        return [y for x in v for y in _leaves(x)]
    if isinstance(v, dict):
        return [y for x in v.values() for y in _leaves(x)]
    return [v]


@DIFF
@given(doc=manifest_docs, rnd=st.randoms(use_true_random=False))
def test_manifest_shaped_documents_read_the_same(doc: dict[str, Any], rnd: random.Random) -> None:
    text = document(doc, rnd)
    note(f"document: {text!r}")
    event(compare(text))


@DIFF
@given(doc=st.one_of(documents_with_dates, manifest_docs), rnd=st.randoms(use_true_random=False))
def test_mutated_documents_read_the_same_or_are_rejected_by_both(doc: dict[str, Any],
                                                                 rnd: random.Random) -> None:
    text = mutate(document(doc, rnd), rnd)
    note(f"document: {text!r}")
    event(compare(text))


@DIFF
@given(text=raw_texts)
def test_raw_text_reads_the_same_or_is_rejected_by_both(text: str) -> None:
    event(compare(text))


# ── the corners, one by one ──────────────────────────────────────────────────

SAME = [
    "", "\n\n", "# only a comment", "a = 1 # c\r\n", "a=1\n\r\n",
    'a = "\\u00e9\\U0001F600\\b\\t\\n\\f\\r\\"\\\\"', "a = 'C:\\\\path'",
    'a = """\nline1\r\nline2"""', 'a = """x\\\n    y"""', 'a = """x\\   \n\n  y"""',
    'a = """a""""', 'a = """a"""""', "a = '''a''''", "a = '''\n'''",
    "a = 0x_1", "a = 0xDEAD_beef", "a = 0o755", "a = 0b1010", "a = -0", "a = +0", "a = 1_000",
    "a = 1__0", "a = 01", "a = 1.", "a = .5", "a = 1e5", "a = 1E-5", "a = -0.0", "a = 6.626e-34",
    "a = 1_0.0_1e1_0", "a = inf", "a = -inf", "a = +nan", "a = infinity", "a = 0e0",
    "a = 18446744073709551615", "a = -18446744073709551615", "a = 18446744073709551616",
    "a = 0xFFFFFFFFFFFFFFFFFFFF", "a = -99999999999999999999999",
    "a = true", "a = truex", "a = [1,]", "a = [ ]", "a = [\n1, # c\n2\n]", "a = [1 2]",
    "a = {}", "a = {b=1,}", "a = {b.c = 1, b.d = 2}", "a = {b = 1, b.c = 2}",
    "a = {\nb = 1}", "a.b = 1\na.c = 2", "a.b = 1\n[a]", "[a]\nb.c = 1\n[a.b]",
    "[x]\na.b=1\n[x.a.c]", "[a.b.c]\n[a]\nb.d = 1", "[a.b]\n[a]\nb.c = 1",
    "[a]\n[a]", "[[a]]\n[a]", "[[a]]\nb=1\n[[a]]\nb=2", "[[a]]\n[a.b]\n[[a]]\n[a.b]",
    "a = [{}]\n[[a]]", "a = 1\n[a]", "[a.b]\n[[a]]", "[ a . b ]", "[[ a ]]", "[[a] ]",
    '"" = 1', "'' = 1", '"a.b" = 1', 'a."b.c".d = 1', '"""a""" = 1', "a = 1\na = 2",
    "a = \"x\ny\"", "a = 'x\ty'", "a = \"\x01\"", "# \x7f", "a = 1 # \r", "a = \"\\x41\"",
    "a = \"\\uD800\"", "a = \"\\U00110000\"", "a = \"\\u12\"", "a\n= 1", "a =", "= 1",
    "\ufeffa = 1", "a = 1979-05-27", "a = 07:32:00", "a = 1979-05-27T07:32:00.999999-07:00",
    "a = 1979-13-01", "a = 12:61:00", "a = 1234-", "a = 1_2:00",
]


@pytest.mark.parametrize("text", SAME)
def test_corner(text: str) -> None:
    compare(text)


CORPUS = sorted((Path(__file__).parent / "c" / "toml_corpus").glob("*.toml"))


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_seed_corpus_reads_the_same(path: Path) -> None:
    assert compare(path.read_text(encoding="utf-8")) == "same values"


def test_depth_limit_is_by_design_and_exact() -> None:
    assert ours("a = " + "[" * 128 + "]" * 128)["a"] is not None
    with pytest.raises(Rejected, match="nested too deeply"):
        ours("a = " + "[" * 129 + "]" * 129)
    with pytest.raises(Rejected, match="nested too deeply"):
        ours("[" + ".".join("t" * 129) + "]")
    assert compare("a = " + "[" * 200 + "]" * 200) == "rejected by design"


def test_error_names_line_and_column_and_quotes_the_line() -> None:
    with pytest.raises(Rejected) as info:
        ours('a = 1\nname "x"\n')
    assert str(info.value) == (
        "invalid TOML: expected `=` after the key, found `\"` (at line 2, column 6)\n"
        '2 | name "x"\n'
        "  |      ^")


def test_error_column_counts_characters_not_bytes() -> None:
    with pytest.raises(Rejected, match=r"\(at line 1, column 11\)"):
        ours('"ééé" = 1 x')


@pytest.mark.parametrize(("text", "message"), [
    ("a = 1\x00", "control character U+0000"),
    ('a = "\x00"', "control character U+0000 is not allowed in a string"),
    ("a = '\n'", "a string on one line cannot contain a newline"),
    ('a = "abc', "unterminated string (it starts here) (at line 1, column 5)"),
    ("a = [1, 2", "unclosed array"),
    ("a = 1\na = 2", "duplicate key `a` (at line 2, column 1)"),
    ("[a]\n[a]", "table `a` is defined twice"),
    ("a.b = 1\n[a]", "table `a` is defined twice"),
    ("a = {}\na.b = 1", "an inline table is complete as written"),
    ("[[a]]\n[a.b]\nc = 1\n[a]", "cannot declare table `a`: it already holds an array of tables"),
    ('a = "\\e"', "invalid escape `\\e`"),
])
def test_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(Rejected) as info:
        ours(text)
    assert message in str(info.value)


def test_invalid_utf8_is_refused_with_its_offset() -> None:
    view = ffi.new("StringView *")
    raw = b'a = "\xff"'
    buf = ffi.from_buffer("uint8_t[]", raw)
    view.ptr, view.len = buf, len(raw)
    out, err = ffi.new("char **"), ffi.new("pp_error *")
    assert lib.pp_toml_to_json(view[0], out, ffi.NULL, err) != 0
    assert ffi.string(err.message) == b"invalid TOML: invalid UTF-8 (byte 0xff at offset 5)"


@pytest.mark.parametrize("size", [1 << 20, 8 << 20])
def test_huge_strings_and_long_lines(size: int) -> None:
    doc = ours('a = "' + "x" * size + '"\nb = [' + "1," * (size // 16) + "]\n")
    assert len(doc["a"]) == size and len(doc["b"]) == size // 16


def test_many_keys_in_one_table_stay_fast() -> None:
    text = "".join(f"k{i} = {i}\n" for i in range(200_000))
    assert len(ours(text)) == 200_000
    with pytest.raises(Rejected, match="duplicate key `k7`"):
        ours(text + "k7 = 0\n")


def test_float_text_reads_like_python_float() -> None:
    rnd = random.Random(7)
    for _ in range(2000):
        v = struct.unpack("<d", rnd.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(v):
            text = f"a = {v!r}"
            assert canonical(ours(text)) == canonical(tomllib.loads(text)), text


def test_json_of_a_document_keeps_document_order() -> None:
    assert list(ours("z = 1\na = 2\n[m]\nq = 1\n[b]\n")) == ["z", "a", "m", "b"]
