"""Property-based fuzzing of bad input (issue 8): ``manifest.toml`` and the
``polyplug_init`` return shape.

The property everywhere: every input yields either a loaded bundle or a typed
:class:`PolyplugError` -- never another exception, never a crash, and never a
partially registered bundle.  After a failed load the runtime is as it was (same
bundle list, nothing of the bundle in the registry) and still loads a good bundle.

* Manifests come three ways: random bytes and text, mutations of a valid manifest,
  and structured documents (dicts of right and wrong values) written by the small
  TOML writer below, which is itself checked by a ``tomllib`` round trip.
* ``polyplug_init`` results are Lua table constructors generated as text.  The
  generator also predicts the outcome where the protocol (lua-loader.md §2.8-2.9)
  leaves no doubt: ``OK`` must load, ``FAIL`` must be refused, ``EITHER`` covers
  the places where we are deliberately stricter than upstream (a 1-based
  ``functions`` list, an unconvertible ``contract_version`` ...).

Inputs that kill the host process cannot run inside pytest; each such shape has a
minimal repro below that runs in a child process.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import polyplug
from polyplug import ffi, lib
from polyplug._errors import PluginNotFound, PolyplugError, StaleHandle
from polyplug.manifest import Dependency, check_function_counts, read_manifest, validate
from polyplug.signature import signature

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)

U32_MAX = 2**32 - 1
GUEST_VALUE = 42  # what fn 0 of the manifest fuzz's entry file returns


# ── a tiny TOML writer ───────────────────────────────────────────────────────

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r",
                  "\b": "\\b", "\f": "\\f"}


def toml_string(s: str, rnd: random.Random) -> str:
    """A TOML string literal for ``s``: a literal '...' string when it can be, else basic."""
    literal_ok = "'" not in s and all(c == "\t" or (ord(c) >= 0x20 and c != "\x7f") for c in s)
    if literal_ok and rnd.random() < 0.3:
        return f"'{s}'"
    out = []
    for c in s:
        if c in _SHORT_ESCAPES and rnd.random() < 0.7:
            out.append(_SHORT_ESCAPES[c])
        elif ord(c) < 0x20 or c in ('"', "\\", "\x7f"):
            out.append(f"\\u{ord(c):04x}")
        elif ord(c) > 0xFFFF and rnd.random() < 0.3:
            out.append(f"\\U{ord(c):08x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_key(k: str, rnd: random.Random) -> str:
    """A key: bare when it may be and the dice say so, else quoted."""
    if k and all(c.isascii() and (c.isalnum() or c in "-_") for c in k) and rnd.random() < 0.5:
        return k
    return toml_string(k, rnd)


def toml_value(v: Any, rnd: random.Random) -> str:
    """An inline TOML value (inline tables and arrays, never headers)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_string(v, rnd)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x, rnd) for x in v) + "]"
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{toml_key(k, rnd)} = {toml_value(x, rnd)}"
                                for k, x in v.items()) + " }"
    if hasattr(v, "isoformat"):  # datetime, date, time
        return v.isoformat()
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _emit_table(path: list[str], table: dict[str, Any], rnd: random.Random,
                lines: list[str]) -> None:
    """Write ``table``'s keys under the header already emitted for ``path``."""
    deferred: list[tuple[str, Any]] = []
    for k, v in table.items():
        if (isinstance(v, dict) or _is_table_array(v)) and rnd.random() < 0.6:
            deferred.append((k, v))  # as a [header] / [[header]] after the plain keys
        else:
            lines.append(f"{toml_key(k, rnd)} = {toml_value(v, rnd)}")
    for k, v in deferred:
        sub = path + [toml_key(k, rnd)]
        if isinstance(v, dict):
            lines.append(f"[{'.'.join(sub)}]")
            _emit_table(sub, v, rnd, lines)
        else:
            for item in v:
                lines.append(f"[[{'.'.join(sub)}]]")
                _emit_table(sub, item, rnd, lines)


def toml_document(doc: dict[str, Any], rnd: random.Random) -> str:
    """``doc`` as a TOML document, mixing inline tables with [table] / [[array]] headers."""
    lines: list[str] = []
    _emit_table([], doc, rnd, lines)
    return "\n".join(lines) + "\n"


def _comparable(v: Any) -> Any:
    """NaN-safe structure for comparing a document with its round trip."""
    if isinstance(v, float) and math.isnan(v):
        return "<nan>"
    if isinstance(v, list):
        return [_comparable(x) for x in v]
    if isinstance(v, dict):
        return {k: _comparable(x) for k, x in v.items()}
    return v


# ── manifest strategies ──────────────────────────────────────────────────────

scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, U32_MAX, U32_MAX + 1, 2**63 - 1, -(2**63), 2**64 - 1, 2**64,
                     10**40]),
    st.floats(),
    st.booleans(),
    st.datetimes(timezones=st.sampled_from([None, timezone.utc])),
    st.dates(),
    st.times(),
)
toml_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                               max_size=4),
    max_leaves=10,
)

GOOD_NAMES = st.one_of(st.sampled_from(["fz", "fuzz.bundle", "ünï-cødé", "a b", "x@1", "🙂"]),
                       st.text(min_size=1, max_size=16))
GOOD_FILES = st.sampled_from([
    "bundle.lua", "./bundle.lua", "sub/../bundle.lua", "sub/./../bundle.lua",
    {"linux": {"x86_64": "bundle.lua", "aarch64": "bundle.lua"},
     "macos": {"aarch64": "bundle.dylib"}, "windows": {"x86_64": "bundle.dll"}},
])
BAD_FILES = st.sampled_from([
    "missing.lua", "../escape.lua", "/etc/passwd", "bundle.lua\x00x", "   ", "", "..", ".",
    "bundle.lua/", "sub", "sub/../../escape.lua",
    {"linux": {"x86_64": 7, "aarch64": ["bundle.lua"]}},
    {"linux": "bundle.lua"}, {"windows": {"x86_64": "bundle.dll"}}, {},
])
GOOD_VERSIONS = st.sampled_from(["", "1.0.0", "0.1", "1.2.3.4", "4294967295.0.0", "01.2.3",
                                 "+1.2.3", "1.2.3.x"])
BAD_VERSIONS = st.one_of(st.sampled_from(["1", "x.y", "1.0.0-alpha", "4294967296.0.0", " 1.0.0",
                                          "1..2", ".", "-1.0.0", "1.2.-3"]),
                         st.text(max_size=10))
BAD_SPECS = st.one_of(st.sampled_from(["fuzz.c@x", "@1", " @1", "fuzz.c@", "fuzz.c@4294967296",
                                       "a@b@c", "", "x@1.2.3-rc"]),
                      st.text(max_size=12))


@st.composite
def dependencies(draw: Any, good: bool) -> dict[str, Any]:
    """One [[dependency]] table: well formed, or with one thing wrong."""
    contract = draw(st.sampled_from(["fuzz.dep@1", "fuzz.dep", "fuzz.dep@2", "ü.dep@3"]))
    min_version = draw(st.sampled_from(["1", "1.0.0", "", "x", "4294967296", "2.5"]))
    dep: dict[str, Any] = {"kind": draw(st.sampled_from(["guest", "host"])),
                           "contract": contract, "min_version": min_version}
    canonical = Dependency("guest", contract, min_version).canonical_contract_id()
    cid = draw(st.sampled_from(["canonical", "zero", "absent"]))
    if cid != "absent":
        dep["contract_id"] = canonical if cid == "canonical" else 0
    if draw(st.booleans()):
        dep["bundle"] = draw(st.sampled_from(["fz", "other", ""]))
        if draw(st.booleans()):
            dep["bundle_id"] = draw(st.sampled_from([0, polyplug.bundle_id("other"), 2**64 - 1]))
    if good:
        return dep
    fault = draw(st.sampled_from(["missing", "wrong-type", "wrong-id", "range"]))
    key = draw(st.sampled_from(["kind", "contract", "min_version", "contract_id", "bundle",
                                "bundle_id"]))
    if fault == "missing":
        dep.pop(key, None)
        dep.pop(draw(st.sampled_from(["kind", "contract", "min_version"])), None)
    elif fault == "wrong-type":
        dep[key] = draw(toml_values.filter(lambda v: not isinstance(v, str)))
    elif fault == "wrong-id":
        dep["contract_id"] = canonical ^ draw(st.integers(1, 2**64 - 1))
    else:
        dep[draw(st.sampled_from(["contract_id", "bundle_id"]))] = draw(
            st.sampled_from([-1, 2**64, -(2**63), 10**30]))
    return dep


GOOD_SIGNATURES = st.sampled_from([
    {}, {"fuzz.c@1": {"functions": {"get": {"id": 0, "returns": "u32"}}}},
    {"fuzz.c@1": {"functions": {"get": {"id": 0, "args": ["u32", "string"], "returns": "f64"},
                                "put": {"id": 1, "args": ["uint32_t"]}, "_x": {"id": 2}}},
     "fuzz.more@2": {"functions": {}}},
    {"fuzz.c@1": {}},
])


@st.composite
def bad_signatures(draw: Any) -> Any:
    """A [contracts] table with one thing wrong, or garbage."""
    if draw(st.integers(0, 3)) == 0:
        return draw(toml_values)
    key = draw(st.sampled_from(["fuzz.c@1", "fuzz.c", "fuzz.c@01", "fuzz.c@99999999999", "a b@1",
                                "@1", ""]))
    fn_name = draw(st.sampled_from(["get", "1bad", "", "with space", "_ok", "ünï"]))
    spec: Any = {"id": 0, "args": ["u32"], "returns": "u32"}
    fault = draw(st.integers(0, 6))
    if fault == 0:
        spec["id"] = draw(st.sampled_from([-1, 2**32, "0", True, 1.0, None]).filter(
            lambda v: v is not None) | toml_values)
    elif fault == 1:
        spec["args"] = draw(st.sampled_from([["nope"], "u32", [1], [["u32"]], {}]))
    elif fault == 2:
        spec["returns"] = draw(st.sampled_from(["nope", 3, ["u32"], ""]))
    elif fault == 3:
        spec["extra"] = 1
    elif fault == 4:
        spec = draw(toml_values)
    elif fault == 5:
        return {key: {"functions": {"a": {"id": 0}, "b": {"id": 0}}}}  # shared id
    else:
        return {key: {"functions": draw(toml_values)}}
    return {key: {"functions": {fn_name: spec}}}


REQUIRED = ("name", "id", "loader", "file")


@st.composite
def manifest_docs(draw: Any) -> tuple[str, dict[str, Any]]:
    """(mode, manifest document).  ``valid`` documents must load; ``one-fault`` ones
    have one key wrong, missing or out of range; ``chaos`` ones anything."""
    mode = draw(st.sampled_from(["valid", "valid", "one-fault", "one-fault", "chaos"]))
    name = draw(GOOD_NAMES)
    version = draw(GOOD_VERSIONS)
    bundle_major = version.split(".", 1)[0] if "." in version else "0"
    provides = draw(st.sampled_from([[], ["fuzz.c@1"], ["fuzz.c"], ["fuzz.c@1.0.0"],
                                     ["fuzz.c@1", "fuzz.more@2"]]))
    # keyed by the contract major, by the bundle major (upstream), and by "0" (no version)
    counts = {"fuzz.c@1": 1, f"fuzz.c@{bundle_major}": 1, "fuzz.c@0": 1, "fuzz.more@2": 0}
    good: dict[str, Any] = {
        "name": name, "id": polyplug.bundle_id(name), "loader": "lua",
        "file": draw(GOOD_FILES), "version": version, "provides": provides,
        "function_count": counts,
        "dependency": draw(st.lists(dependencies(good=True), max_size=2)),
        "needs_reinit_on_dep_reload": draw(st.booleans()),
        "bundle_dependencies": draw(st.sampled_from([[], ["other@1"], ["other", "x@1.2.3"]])),
        "contracts": draw(GOOD_SIGNATURES),
    }
    if "fuzz.more@2" in good["contracts"] and provides and "fuzz.more@2" not in provides:
        good["contracts"] = {}  # (a table for a contract `provides` leaves out is refused)
    doc = {k: v for k, v in good.items()
           if k in REQUIRED or k == "function_count" and provides or draw(st.booleans())}
    if mode != "valid" and draw(st.booleans()):  # an unknown key: refused in Strict mode
        doc["description"] = draw(st.text(max_size=10))
    bad_values: dict[str, Any] = {
        "name": st.sampled_from(["", "other-name"]) | toml_values,
        "id": st.sampled_from([0, -1, 2**64, 2**64 - 1, polyplug.bundle_id(name) + 1, 1.5,
                               str(polyplug.bundle_id(name))]) | toml_values,
        "loader": st.sampled_from(["", "LUA", "nope", "lua\x00", " lua"]) | toml_values,
        "file": BAD_FILES | toml_values,
        "version": BAD_VERSIONS | toml_values,
        "provides": st.lists(BAD_SPECS, min_size=1, max_size=3) | toml_values,
        "function_count": st.sampled_from([{}, {"fuzz.c@1": -1}, {"fuzz.c@1": 2**32},
                                           {"fuzz.c@1": "1"}, {"fuzz.c@1": 1.0},
                                           {"fuzz.c@1": True}]) | toml_values,
        "dependency": st.lists(dependencies(good=False), min_size=1, max_size=2)
        | st.just({"kind": "guest"}) | toml_values,
        "needs_reinit_on_dep_reload": toml_values.filter(lambda v: not isinstance(v, bool)),
        "bundle_dependencies": st.lists(BAD_SPECS, min_size=1, max_size=2) | toml_values,
        "contracts": bad_signatures(),
    }
    if mode == "one-fault":
        key = draw(st.sampled_from(sorted(bad_values)))
        if key in REQUIRED and draw(st.integers(0, 3)) == 0:
            doc.pop(key)
        else:
            doc[key] = draw(bad_values[key])
            if key == "provides":
                doc.setdefault("function_count", counts)
    elif mode == "chaos":
        for key, bad in bad_values.items():
            roll = draw(st.integers(0, 3))
            if roll == 0:
                doc.pop(key, None)
            elif roll == 1:
                doc[key] = draw(bad)
            elif roll == 2:
                doc[key] = good[key]
        for extra in draw(st.dictionaries(st.text(max_size=8), toml_values, max_size=2)).items():
            doc.setdefault(*extra)
    keys = list(doc)
    draw(st.randoms(use_true_random=False)).shuffle(keys)
    return mode, {k: doc[k] for k in keys}


VALID_MANIFEST = textwrap.dedent(f"""\
    name = "fz"
    id = {polyplug.bundle_id("fz")}
    loader = "lua"
    file = "bundle.lua"
    version = "1.2.3"
    provides = ["fuzz.c@1"]

    [function_count]
    "fuzz.c@1" = 1

    [[dependency]]
    kind = "guest"
    contract = "fuzz.dep@1"
    min_version = "1"

    [contracts."fuzz.c@1".functions]
    get = {{ id = 0, returns = "u32" }}
    """)


@st.composite
def mutated_manifests(draw: Any) -> bytes:
    """The valid manifest with a few random byte edits."""
    data = bytearray(VALID_MANIFEST.encode())
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        pos = draw(st.integers(0, len(data)))
        chunk = draw(st.binary(min_size=1, max_size=4)
                     | st.sampled_from([b'"', b"[", b"]", b"=", b"\n", b"\\", b"'", b"{",
                                        b"\xff", b"\x00", b"#", b"\xc3"]))
        if op == "insert":
            data[pos:pos] = chunk
        elif op == "delete":
            del data[pos:pos + len(chunk)]
        else:
            data[pos:pos + len(chunk)] = chunk
    return bytes(data)


raw_manifests = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda s: s.encode("utf-8")),
    st.text(max_size=200).map(lambda s: b"\xef\xbb\xbf" + s.encode("utf-8")),
    mutated_manifests(),
)

# Pathological documents: deep nesting, huge integers, huge strings, odd encodings.
PATHOLOGICAL = {
    "deep-arrays": b"x = " + b"[" * 100_000 + b"]" * 100_000,
    "deep-inline-tables": b"x = " + b"{a=" * 20_000 + b"1" + b"}" * 20_000,
    "deep-headers": b"[" + b".".join([b"a"] * 20_000) + b"]\n",
    "huge-int-id": b'name = "fz"\nloader = "lua"\nfile = "bundle.lua"\nid = ' + b"9" * 5000,
    "huge-negative-count": b'[function_count]\n"x@1" = -' + b"9" * 5000,
    "huge-string-name": b'name = "' + b"n" * 2_000_000 + b'"\nloader = "lua"\nid = 1\n',
    "utf16": VALID_MANIFEST.encode("utf-16"),
    "latin1": 'name = "caf\u00e9"\n'.encode("latin-1"),
    "bom-only": b"\xef\xbb\xbf",
    "nul-bytes": b"\x00" * 64,
    "lone-surrogate-escape": b'name = "\\ud800"\n',
    "crlf": VALID_MANIFEST.replace("\n", "\r\n").encode(),
    "bare-cr": VALID_MANIFEST.replace("\n", "\r").encode(),
}


# ── shared fixtures: a bundle directory and a runtime with a resident bundle ──

FUZZ_ENTRY = f"""
local pg = require("polyplug_guest")
function polyplug_init()
    local function get(_, _, out) pg.ptr(out, "uint32_t *")[0] = {GUEST_VALUE} end
    return {{ ["fuzz.c"] = {{ factory = function() return {{}} end,
                            functions = {{ [0] = get }} }} }},
        {{ code = 0 }}
end
"""

RESIDENT = "fuzz-resident"
RESIDENT_ENTRY = """
local pg = require("polyplug_guest")
function polyplug_init()
    return { ["fuzz.resident"] = { factory = function() return {} end,
        functions = { [0] = function(_, _, out) pg.ptr(out, "uint32_t *")[0] = 7 end } } },
        { code = 0 }
end
"""
U32_SIG = {"get": signature("get", 0, (), "u32")}


def write_bundle(d: Path, name: str, lua: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.toml").write_text(
        f'name = "{name}"\nid = {polyplug.bundle_id(name)}\nloader = "lua"\n'
        'file = "bundle.lua"\n', encoding="utf-8")
    (d / "bundle.lua").write_text(lua, encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def manifest_dir(workdir: Path) -> Path:
    """A bundle directory whose manifest each example overwrites; the entry is valid."""
    d = workdir / "manifest-fuzz"
    d.mkdir()
    (d / "bundle.lua").write_text(FUZZ_ENTRY, encoding="utf-8")
    (d / "sub").mkdir()
    return d


@pytest.fixture(scope="module")
def rt(workdir: Path) -> Iterator[polyplug.Runtime]:
    """One runtime for a whole property, with a resident bundle that must keep working."""
    runtime = polyplug.RuntimeBuilder().config(polyplug.RuntimeConfig(
        log=lambda *_: None, log_max_level=polyplug.LogLevel.Error)).loader(
        polyplug.LuaLoader()).build()
    runtime.load_bundle(write_bundle(workdir / "resident", RESIDENT, RESIDENT_ENTRY))
    yield runtime
    runtime.close()


def bundle_slot_count(rt: polyplug.Runtime, bid: int) -> int:
    """How many registry slots the bundle ``bid`` owns (published contracts)."""
    return int(lib.pp_registry_bundle_slots(rt._ptr(), bid, ffi.NULL, 0))


def assert_runtime_intact(rt: polyplug.Runtime, bundles_before: list[int]) -> None:
    """The bundle list is as it was and the resident bundle still answers."""
    assert sorted(rt.list_bundles()) == sorted(bundles_before)
    assert rt.contract("fuzz.resident", 1, U32_SIG).get() == 7


def assert_not_registered(rt: polyplug.Runtime, bid: int, contracts: list[tuple[str, int]]) -> None:
    """Nothing of bundle ``bid`` is in the registry."""
    assert bundle_slot_count(rt, bid) == 0, "a failed load left contracts registered"
    for name, major in contracts:
        with pytest.raises(PluginNotFound):
            rt.find_guest_contract(polyplug.guest_contract_id(name, major), major)


def typed_outcome(fn: Any, *args: Any) -> PolyplugError | None:
    """Run ``fn``; return the PolyplugError it raised, None on success.  Anything else
    (TypeError, KeyError, RecursionError, ...) propagates and fails the test."""
    try:
        fn(*args)
    except PolyplugError as exc:
        assert str(exc), f"{type(exc).__name__} with an empty message"
        return exc
    return None


# ── manifest fuzzing ─────────────────────────────────────────────────────────


def check_manifest(bundle_dir: Path, raw: bytes) -> polyplug.ManifestData | None:
    """read_manifest + validate + the function-count check: a manifest or None (typed error)."""
    (bundle_dir / "manifest.toml").write_bytes(raw)
    try:
        m = read_manifest(bundle_dir)
    except PolyplugError:
        return None
    for mode in (0, 1, 2):
        typed_outcome(check_function_counts, m, mode)  # also on unvalidated manifests
    return m if typed_outcome(validate, m) is None else None


def load_manifest(rt: polyplug.Runtime, bundle_dir: Path, raw: bytes) -> bool:
    """Load the bundle with this manifest: loaded (then unloaded; returns True) or a
    typed error (returns False), and after an error the runtime is exactly as before."""
    (bundle_dir / "manifest.toml").write_bytes(raw)
    before = rt.list_bundles()
    try:
        m = rt.load_bundle(bundle_dir)
    except PolyplugError as exc:
        event(f"refused: {type(exc).__name__}")
        note(f"load refused: {type(exc).__name__}: {exc}")
        assert_runtime_intact(rt, before)
        with pytest.raises(PluginNotFound):
            rt.find_guest_contract(polyplug.guest_contract_id("fuzz.c", 1), 1)
        try:
            name = tomllib.loads(raw.decode("utf-8-sig")).get("name")
        except (ValueError, RecursionError):
            name = None
        if isinstance(name, str):
            assert bundle_slot_count(rt, polyplug.bundle_id(name)) == 0
        return False
    event("loaded")
    note(f"loaded {m.name!r}")
    assert m.id in rt.list_bundles()
    handle = rt.find_guest_contract(polyplug.guest_contract_id("fuzz.c", 1), 1)
    assert rt.registry().info(handle)["bundle_id"] == m.id
    assert rt.contract("fuzz.c", 1, U32_SIG).get() == GUEST_VALUE
    rt.contract("fuzz.c", 1)  # with the manifest's own signature table, whatever it says
    rt.unload_bundle(m.id)
    assert_runtime_intact(rt, before)
    with pytest.raises(StaleHandle):
        rt.resolve_guest_contract(handle)
    return True


@FUZZ
@given(raw=raw_manifests)
def test_random_manifest_bytes_give_a_manifest_or_a_typed_error(manifest_dir: Path,
                                                                raw: bytes) -> None:
    check_manifest(manifest_dir, raw)


@FUZZ
@given(case=manifest_docs(), rnd=st.randoms(use_true_random=False))
def test_structured_manifests_give_a_manifest_or_a_typed_error(
        manifest_dir: Path, case: tuple[str, dict[str, Any]], rnd: random.Random) -> None:
    mode, doc = case
    text = toml_document(doc, rnd)
    note(text)
    assert _comparable(tomllib.loads(text)) == _comparable(doc), "the test's TOML writer is wrong"
    m = check_manifest(manifest_dir, text.encode("utf-8"))
    event(f"{mode}: {'accepted' if m is not None else 'refused'}")
    if mode == "valid":
        assert m is not None, "a valid manifest was refused"


@pytest.mark.parametrize("raw", list(PATHOLOGICAL.values()), ids=list(PATHOLOGICAL))
def test_pathological_manifests_give_a_typed_error(manifest_dir: Path, raw: bytes) -> None:
    valid = raw in (PATHOLOGICAL["crlf"],)  # CRLF line ends are TOML; everything else is not
    assert (check_manifest(manifest_dir, raw) is not None) == valid


@FUZZ
@given(case=manifest_docs(), rnd=st.randoms(use_true_random=False))
def test_load_with_fuzzed_manifest_loads_or_leaves_runtime_unchanged(
        rt: polyplug.Runtime, manifest_dir: Path, case: tuple[str, dict[str, Any]],
        rnd: random.Random) -> None:
    mode, doc = case
    text = toml_document(doc, rnd)
    note(text)
    loaded = load_manifest(rt, manifest_dir, text.encode("utf-8"))
    event(f"{mode}: {'loaded' if loaded else 'refused'}")
    if mode == "valid":
        assert loaded, "a valid manifest did not load"


@settings(FUZZ, max_examples=150)
@given(raw=raw_manifests)
def test_load_with_random_manifest_bytes_loads_or_leaves_runtime_unchanged(
        rt: polyplug.Runtime, manifest_dir: Path, raw: bytes) -> None:
    load_manifest(rt, manifest_dir, raw)


# ── polyplug_init return shapes ──────────────────────────────────────────────

OK, EITHER, FAIL = 0, 1, 2  # what must happen; combining takes the worst


def lua_str(s: str | bytes) -> str:
    """A Lua string literal for ``s`` (its UTF-8 bytes), ASCII-only source text."""
    data = s.encode("utf-8") if isinstance(s, str) else s
    return '"' + "".join(chr(c) if 32 <= c < 127 and c not in (34, 92) else f"\\{c:03d}"
                         for c in data) + '"'


@dataclass
class Shape:
    """A piece of generated Lua and what loading it must do."""

    src: str
    expect: int = OK


@dataclass
class Registration:
    """One generated ``registrations`` entry."""

    key_src: str                 # the Lua key expression, e.g. ["name"] or [1]
    name: str | None          # the bare contract name, if the key is a string
    expect: int
    majors: list[int]            # majors it could register under (upstream default 1)
    fns: list[int | None] | None  # per counted fn: the value it writes, None = raises
    plugin: str | None        # the plugin_name we must see, when it is unambiguous
    src: str = ""


@dataclass
class InitShape:
    regs: list[Registration] = field(default_factory=list)
    source: str = ""
    expect: int = OK


FN_RAISES = 'function() error("guest fn boom") end'


def fn_writing(value: int) -> str:
    return f'function(_, _, out) if out ~= 0 then pg.ptr(out, "uint32_t *")[0] = {value} end end'


@st.composite
def contract_versions(draw: Any, good: bool) -> tuple[str, int, list[int]]:
    """(Lua field text or "", expectation, candidate majors)."""
    if good:
        if draw(st.booleans()):
            return "", OK, [1]
        major = draw(st.sampled_from([0, 1, 2, 7, 65535, U32_MAX]) | st.integers(0, U32_MAX))
        text = draw(st.sampled_from([str(major), f"{major}.0", f"0x{major:x}", f"({major})"]))
        return f"contract_version = {text}, ", OK, [major]
    if draw(st.booleans()):
        major = draw(st.integers(0, 100))  # a numeric string: upstream may convert it
        return f"contract_version = {lua_str(str(major))}, ", EITHER, [major, 1]
    # not a u32: we refuse it, upstream registers major 1; a few convert to another major
    bad, majors = draw(st.sampled_from([
        ("-1", []), ("-0.5", []), ("1.5", []), ("4294967296", []), ("1e300", []),
        ("-1e300", []), ("0/0", []), ("1/0", []), ("-1/0", []), ("-0", [0]), ('"abc"', []),
        ('""', []), ('" 3 "', [3]), ('"0x10"', [16]), ("true", []), ("false", []), ("{}", []),
        ("function() end", []), ("2^53", []), ("2^53+1", [])]))
    return f"contract_version = {bad}, ", EITHER, [1, *majors]


GOOD_FACTORIES = ["function() return {} end", "function(h) return h end", "function() end",
                  "function() return 1, 2, 3 end", "function() return setmetatable({}, {}) end",
                  "function(h) assert(type(h) == 'number' and h ~= 0); return { h = h } end"]
BAD_FACTORIES = [
    'function() error("factory boom") end', "function() error({}) end",
    "function() error() end", "function() error(nil) end",
    'function() error(setmetatable({}, {__tostring = function() return "custom" end})) end',
    'function() error(setmetatable({}, {__tostring = function() error("nested") end})) end',
    "function() local t = nil; return t.x end", "function() return coroutine.yield() end",
    "function() local function r() return r() + 1 end return r() end",
    "42", '"factory"', "{}", "setmetatable({}, {__call = function() return {} end})", "true"]


@st.composite
def factories(draw: Any, good: bool) -> tuple[str, int]:
    if good:
        return f"factory = {draw(st.sampled_from(GOOD_FACTORIES))}, ", OK
    if draw(st.integers(0, 5)) == 0:
        return "", FAIL  # missing
    return f"factory = {draw(st.sampled_from(BAD_FACTORIES))}, ", FAIL


@st.composite
def function_tables(draw: Any, good: bool) -> tuple[str, int, list[int | None] | None]:
    """(Lua field text, expectation, the counted functions' results; None = raises)."""
    fns: list[int | None] = [
        draw(st.none() | st.integers(0, U32_MAX)) for _ in range(draw(st.integers(1, 3)))]
    srcs = [FN_RAISES if v is None else fn_writing(v) for v in fns]
    if good:
        kind = draw(st.integers(0, 3))
        if kind <= 1:  # 0-based, the protocol's shape
            body = ", ".join([f"[0] = {srcs[0]}", *srcs[1:]])
            return f"functions = {{ {body} }}, ", OK, fns
        if kind == 2:  # empty: zero functions
            return "functions = {}, ", OK, []
        junk = draw(st.sampled_from(["42", '"x"', FN_RAISES, "{}"]))  # after a gap: ignored
        return f"functions = {{ [0] = {srcs[0]}, [2] = {junk} }}, ", OK, fns[:1]
    kind = draw(st.integers(0, 2))
    if kind == 0:  # 1-based: upstream counts 0 functions, we refuse
        return f"functions = {{ {', '.join(srcs)} }}, ", EITHER, None
    if kind == 1:  # a counted slot that is not a function
        bad = draw(st.sampled_from(["42", '"f"', "false", "{}", "true",
                                    "setmetatable({}, {__call = function() end})"]))
        pos = draw(st.integers(0, len(srcs)))
        slots = srcs[:pos] + [bad] + srcs[pos:]
        body = ", ".join([f"[0] = {slots[0]}", *slots[1:]])
        return f"functions = {{ {body} }}, ", FAIL, None
    bad = draw(st.sampled_from(["", "functions = 42, ", 'functions = "f", ',
                                "functions = function() end, ", "functions = true, "]))
    return bad, FAIL, None


@st.composite
def plugin_names(draw: Any) -> tuple[str, str | None]:
    """Any plugin_name is accepted (a bad one falls back to a default)."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return "", None
    if kind == 1:
        name = draw(st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s))
        return f"plugin_name = {lua_str(name)}, ", name
    other = draw(st.sampled_from(['""', "42", "{}", "true", lua_str(b"\xff\xfe"),
                                  lua_str(b"a\x00b"), lua_str("p" * 300)]))
    return f"plugin_name = {other}, ", None


@st.composite
def registration_keys(draw: Any, good: bool) -> tuple[str, str | None, int]:
    """(Lua key expression, bare name, expectation)."""
    if good:
        if draw(st.integers(0, 5)) == 0:  # long names up to the 256-byte limit: still found
            unit = draw(st.sampled_from(["n", "ü", "a.b."]))
            name = unit * draw(st.integers(20, 256 // len(unit.encode())))
        else:
            name = draw(st.text(min_size=1, max_size=24).filter(
                lambda s: "@" not in s and "\x00" not in s))
        return f"[{lua_str(name)}]", name, OK
    kind = draw(st.integers(0, 3))
    if kind == 3:  # longer than the 256-byte limit on contract names: refused
        unit = draw(st.sampled_from(["n", "ü", "a.b."]))
        name = unit * (256 // len(unit.encode()) + draw(st.integers(1, 200)))
        return f"[{lua_str(name)}]", None, FAIL
    if kind == 0:  # we refuse '@', empty, NUL and non-UTF-8 names (upstream may not)
        bad = draw(st.sampled_from(["x@1", "@", "", "a\x00b"]) | st.text(max_size=8).map(
            lambda s: s + "@" + s))
        return f"[{lua_str(bad)}]", None, EITHER
    if kind == 1:
        key = lua_str(b"\xff\xfe" + draw(st.binary(max_size=4)))
        return f"[{key}]", None, EITHER
    other = draw(st.sampled_from(["1", "0", "-1", "1.5", "true", "{}", "function() end"]))
    return f"[{other}]", None, EITHER


@st.composite
def registrations(draw: Any, good: bool) -> Registration:
    """One registrations entry; a bad one has exactly one thing wrong."""
    fault = None if good else draw(st.sampled_from(
        ["key", "value", "version", "factory", "functions", "metatable"]))
    key_src, name, key_expect = draw(registration_keys(good=fault != "key"))
    if fault == "value":
        value = draw(st.sampled_from(["42", '"contract"', "true", "function() end"]))
        return Registration(key_src, name, FAIL, [1], None, None, f"{key_src} = {value}")
    cv, cv_expect, majors = draw(contract_versions(good=fault != "version"))
    fac, fac_expect = draw(factories(good=fault != "factory"))
    fns_src, fns_expect, fns = draw(function_tables(good=fault != "functions"))
    pn, plugin = draw(plugin_names())
    fields = [cv, fac, fns_src, pn]
    draw(st.randoms(use_true_random=False)).shuffle(fields)
    body = "".join(fields)
    expect = max(key_expect, cv_expect, fac_expect, fns_expect)
    if fault == "metatable":  # the fields behind an __index table (nothing raises)
        value = f"setmetatable({{}}, {{ __index = {{ {body} }} }})"
        expect = max(expect, EITHER)
    else:
        value = f"{{ {body} }}"
    return Registration(key_src, name, expect, majors, fns, plugin, f"{key_src} = {value}")


OK_STATUSES = ["{ code = 0 }", "{}", '{ code = 0, message = "fine" }', "{ code = nil }",
               '{ code = "0" }', "{ code = 0, extra = {} }", "{ code = -0 }"]
BAD_STATUSES = [
    # non-zero codes, numeric strings coerced as upstream does: refused
    *[(s, FAIL) for s in ["{ code = 1 }", '{ code = 7, message = "guest says no" }',
                          '{ code = 2, message = "" }', "{ code = 4294967295 }",
                          '{ code = 1, message = {} }', '{ code = 3, message = "\\0" }',
                          '{ code = "3" }']],
    # codes that are not a u32: refused naming the value (upstream reads 0)
    *[(s, FAIL) for s in ["{ code = -1 }", "{ code = 0.5 }", "{ code = 0/0 }",
                          '{ code = "x" }', "{ code = 1e300 }", "{ code = 4294967296 }",
                          "{ code = true }"]],
    # not a table
    *[(s, FAIL) for s in ["nil", "42", '"ok"', "true", "function() end"]],
]


@st.composite
def init_shapes(draw: Any) -> InitShape:
    """A whole entry file.  ``valid`` shapes must load; ``one-fault`` shapes have one
    thing wrong; ``chaos`` shapes may have anything wrong anywhere."""
    mode = draw(st.sampled_from(["valid", "valid", "one-fault", "one-fault", "chaos"]))
    where = draw(st.sampled_from(["registration", "registration", "regs", "status", "init"]))
    chaos = mode == "chaos"

    def faulty(part: str) -> bool:
        return draw(st.booleans()) if chaos else (mode == "one-fault" and where == part)

    n = draw(st.integers(1, 3))
    bad_index = draw(st.integers(0, n - 1))
    regs: list[Registration] = []
    seen: set[str] = set()
    for i in range(n):
        bad = faulty("registration") if chaos else (
            mode == "one-fault" and where == "registration" and i == bad_index)
        reg = draw(registrations(good=not bad).filter(lambda r: r.key_src not in seen))
        seen.add(reg.key_src)
        regs.append(reg)
    regs_src = "{ " + ", ".join(r.src for r in regs) + " }"
    expect = max(r.expect for r in regs)
    if faulty("regs"):
        regs, expect = [], FAIL
        regs_src = draw(st.sampled_from(["{}", "nil", "42", '"regs"', "true", "function() end",
                                         "setmetatable({}, {})"]))
    if faulty("status"):
        status, status_expect = draw(st.sampled_from(BAD_STATUSES))
        expect = max(expect, status_expect)
    else:
        status = draw(st.sampled_from(OK_STATUSES))
    ret = f"return {regs_src}, {status}"
    if draw(st.booleans()):
        ret = f"return {regs_src}, {status}, 3, nil"  # extra values are ignored
    init = f"function polyplug_init(host, ctx)\n    {ret}\nend\n"
    if faulty("init"):
        expect = FAIL
        init = draw(st.sampled_from([
            f"function polyplug_init(host, ctx)\n    return {regs_src}\nend\n",  # one value
            'function polyplug_init() error("init boom") end\n',
            "function polyplug_init() error({}) end\n",
            "function polyplug_init() return polyplug_init() + 1 end\n",
            "polyplug_init = 42\n", "",
            init + "this is not lua (\n",
            'error("entry chunk fails")\n' + init,
            init.replace("function polyplug_init", "local function polyplug_init"),
        ]))
    source = 'local pg = require("polyplug_guest")\n' + init
    return InitShape(regs, source, expect)


INIT_BUNDLE = "initfz"
CANARY = "init-canary"


def slot_infos(rt: polyplug.Runtime, bid: int) -> list[Any]:
    n = bundle_slot_count(rt, bid)
    infos = ffi.new("pp_slot_info[]", max(n, 1))
    n = min(n, int(lib.pp_registry_bundle_slots(rt._ptr(), bid, infos, n)))
    return [infos[i] for i in range(n)]


def check_registered(rt: polyplug.Runtime, bid: int, reg: Registration) -> Any:
    """The entry's contract is findable under one of its majors, owned by ``bid``,
    and every counted function answers as generated.  Returns its handle."""
    assert reg.name is not None
    for major in reg.majors:
        try:
            handle = rt.find_guest_contract(polyplug.guest_contract_id(reg.name, major), major)
        except PluginNotFound:
            continue
        break
    else:
        held = [(ffi.string(i.contract_name).decode(errors="replace")[:60], hex(i.contract_id))
                for i in slot_infos(rt, bid)]
        raise AssertionError(
            f"contract {reg.name!r} ({len(reg.name.encode())} bytes) was loaded but is not "
            f"findable by guest_contract_id(name, major) for majors {reg.majors}; the "
            f"registry holds {held}")
    info = rt.registry().info(handle)
    assert info["bundle_id"] == bid
    if reg.plugin is not None:
        assert info["plugin"] == reg.plugin
    iface = rt.resolve_guest_contract(handle)
    if reg.fns is not None:
        assert lib.pp_function_count(iface) == len(reg.fns)
        contract = rt.contract(reg.name, major, {
            f"f{i}": signature(f"f{i}", i, (), "u32") for i in range(len(reg.fns) + 1)})
        for i, value in enumerate(reg.fns):
            if value is None:
                with pytest.raises(polyplug.GuestError, match="guest fn boom"):
                    getattr(contract, f"f{i}")()
            else:
                assert getattr(contract, f"f{i}")() == value
        with pytest.raises(polyplug.FunctionNotAvailable):
            getattr(contract, f"f{len(reg.fns)}")()
    return handle


@pytest.fixture(scope="module")
def init_dir(workdir: Path) -> Path:
    return write_bundle(workdir / INIT_BUNDLE, INIT_BUNDLE, "")


@pytest.fixture(scope="module")
def canary_dir(workdir: Path) -> Path:
    return write_bundle(workdir / CANARY, CANARY, FUZZ_ENTRY)


@settings(FUZZ, max_examples=300)
@given(shape=init_shapes())
def test_polyplug_init_return_shapes_load_fully_or_not_at_all(
        rt: polyplug.Runtime, init_dir: Path, canary_dir: Path, shape: InitShape) -> None:
    note(shape.source)
    (init_dir / "bundle.lua").write_text(shape.source, encoding="utf-8")
    bid = polyplug.bundle_id(INIT_BUNDLE)
    before = rt.list_bundles()
    candidates = [(r.name, m) for r in shape.regs if r.name is not None for m in r.majors]
    err = typed_outcome(rt.load_bundle, init_dir)
    try:
        event(f"expected {('OK', 'EITHER', 'FAIL')[shape.expect]}, "
              f"{'loaded' if err is None else 'refused: ' + type(err).__name__}")
        if any(r.name and len(r.name.encode()) >= 200 for r in shape.regs):
            event("a contract name of 200+ bytes")
        if err is not None:
            note(f"refused: {type(err).__name__}: {err}")
            assert shape.expect != OK, f"a valid init result was refused: {err!r}"
            assert isinstance(err, polyplug.LoaderError), repr(err)
            assert_not_registered(rt, bid, candidates)
        else:
            assert shape.expect != FAIL, "an invalid init result was accepted"
            assert bid in rt.list_bundles()
            assert len(slot_infos(rt, bid)) == len(shape.regs)
            handles = [check_registered(rt, bid, r) for r in shape.regs if r.name is not None]
            rt.unload_bundle(bid)
            assert_not_registered(rt, bid, candidates)
            for handle in handles:
                with pytest.raises(StaleHandle):
                    rt.resolve_guest_contract(handle)
    finally:  # a failed check must not leave the bundle behind for the next example
        if bid in rt.list_bundles():
            rt.unload_bundle(bid)
    assert_runtime_intact(rt, before)
    # and a good bundle still loads, answers and unloads
    rt.load_bundle(canary_dir)
    assert rt.contract("fuzz.c", 1, U32_SIG).get() == GUEST_VALUE
    rt.unload_bundle(polyplug.bundle_id(CANARY))
    assert_runtime_intact(rt, before)


# ── minimal repros of bugs the properties found ──────────────────────────────


def test_long_contract_names_load_up_to_the_limit_and_are_refused_past_it(
        rt: polyplug.Runtime, workdir: Path) -> None:
    """Contract names are limited to 256 bytes.

    Found by fuzzing: a 495+ byte name used to load but hash a truncated (or, past
    511 bytes, out-of-bounds) id, so it could never be found.  Now a name at the limit
    loads and is found by ``guest_contract_id``; a longer one is a typed InitFailed.
    """
    for length, loads in ((256, True), (257, False), (495, False), (5000, False)):
        name = "n" * length
        d = write_bundle(workdir / f"longname{length}", "longname", f"""
            function polyplug_init()
                return {{ ["{name}"] = {{ factory = function() return {{}} end,
                                          functions = {{ [0] = function() end }} }} }}, {{ code = 0 }}
            end
        """)
        try:
            if loads:
                rt.load_bundle(d)
                rt.find_guest_contract(polyplug.guest_contract_id(name, 1), 1)
            else:
                with pytest.raises(polyplug.InitFailed, match="too long"):
                    rt.load_bundle(d)
                assert polyplug.bundle_id("longname") not in rt.list_bundles()
        finally:
            if polyplug.bundle_id("longname") in rt.list_bundles():
                rt.unload_bundle(polyplug.bundle_id("longname"))


PANIC_SHAPES = {
    # an __index metamethod that raises, on a registration value ...
    "registration-__index-raises":
        '{ ["m.c"] = setmetatable({}, { __index = function() error("boom from __index") end }) },'
        " { code = 0 }",
    # ... and on the status table
    "status-__index-raises":
        '{ ["m.c"] = { factory = function() return {} end, functions = {} } },'
        ' setmetatable({}, { __index = function() error("boom from status") end })',
}

_PANIC_CHILD = """
import sys, polyplug
try:
    polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build().load_bundle(sys.argv[1])
    print("LOADED")
except polyplug.PolyplugError as exc:
    print("TYPED", type(exc).__name__)
"""


@pytest.mark.parametrize("regs", list(PANIC_SHAPES.values()), ids=list(PANIC_SHAPES))
def test_init_result_metamethod_error_is_a_typed_error_not_a_panic(tmp_path: Path,
                                                                   regs: str) -> None:
    """A raising ``__index`` on the init result must not kill the host.

    Found by fuzzing: the loader used to read the returned tables with
    ``lua_getfield`` outside any protected call, so an erroring ``__index`` made
    LuaJIT print "PANIC: unprotected error in call to Lua API" and exit.  It now reads
    them raw (metamethods never run) inside a protected call: the bundle either loads
    (the raw fields are valid) or fails with a typed error.  Runs in a child process so
    a panic could not take the test session down.
    """
    d = write_bundle(tmp_path / "m", "m", f"function polyplug_init() return {regs} end\n")
    proc = subprocess.run([sys.executable, "-c", _PANIC_CHILD, str(d)], check=False,
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert proc.returncode == 0 and proc.stdout.startswith(("TYPED", "LOADED")), (
        f"loading a bundle whose init result has a raising __index ended the process "
        f"(exit {proc.returncode}): stdout={proc.stdout!r} stderr={proc.stderr.strip()!r}")
