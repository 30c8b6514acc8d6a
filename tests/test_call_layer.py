"""The Pythonic call layer (polyplug/call.py): ``rt.contract(name, major)`` and friends.

Exercised through the examples (arith, text, counter) and temp bundles: a bundle that
echoes every signature type, bundles rewritten and hot-reloaded, bundles unloaded.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from conftest import C_TYPES, write_typed_bundle

import polyplug
from polyplug import (
    CallError,
    FunctionNotAvailable,
    GuestError,
    InvalidArgument,
    LogLevel,
    PluginNotFound,
    StaleHandle,
    bundle_id,
    ffi,
    lib,
)
from polyplug.signature import FunctionSig, signature

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# ── helpers ──────────────────────────────────────────────────────────────────


class Logs:
    """Collects the runtime's log records (so guest errors do not reach stderr)."""

    def __init__(self) -> None:
        self.records: list[tuple[LogLevel, str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, level: LogLevel, scope: str, message: str) -> None:
        with self.lock:
            self.records.append((level, scope, message))

    def scope(self, scope: str) -> list[tuple[LogLevel, str]]:
        return [(lvl, msg) for lvl, s, msg in self.records if s == scope]


def build_runtime(logs: Logs, hot_reload: bool = False,
                  on_reload: Optional[Any] = None) -> polyplug.Runtime:
    builder = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).logger(logs)
    if on_reload is not None:
        builder.on_reload(on_reload)
    return builder.hot_reload(hot_reload).build()


write_bundle = write_typed_bundle


# Every signature type, with its C type and values worth echoing.
TYPES = list(C_TYPES) + ["string"]
INT_RANGES = {t: ((0, 2 ** int(t[1:]) - 1) if t[0] == "u"
                  else (-(2 ** (int(t[1:]) - 1)), 2 ** (int(t[1:]) - 1) - 1))
              for t in C_TYPES if t[0] in "ui"}
MIX_ID = len(TYPES)  # mix(u8, f64, string, bool, i16, u64) -> string
SUM_ID = MIX_ID + 1  # sum(i8, u64, f32, i32) -> f64: odd sizes, padding between fields


def echo_lua() -> str:
    lines = ['local pg = require("polyplug_guest")', "local F = {}"]
    for i, t in enumerate(TYPES):
        if t == "string":
            lines.append(
                f"F[{i}] = function(_, a, o, ap, aa)\n"
                '    local s = pg.read_string(pg.ptr(a, "const StringView *")[0])\n'
                '    pg.ptr(o, "StringView *")[0] = pg.alloc_string_arena(aa, ap, s)\nend')
        else:
            c = C_TYPES[t]
            lines.append(f'F[{i}] = function(_, a, o) pg.ptr(o, "{c} *")[0] = '
                         f'pg.ptr(a, "const {c} *")[0] end')
    lines.append(f"""
F[{MIX_ID}] = function(_, a, o, ap, aa)
    local x = pg.ptr(a, "const struct {{ uint8_t a; double b; StringView s; bool c; "
                        .. "int16_t d; uint64_t e; }} *")[0]
    local r = string.format("%d|%.17g|%s|%s|%d|%s", x.a, x.b, pg.read_string(x.s),
                            tostring(x.c), x.d, (tostring(x.e):gsub("ULL$", "")))
    pg.ptr(o, "StringView *")[0] = pg.alloc_string_arena(aa, ap, r)
end
F[{SUM_ID}] = function(_, a, o)
    local x = pg.ptr(a, "const struct {{ int8_t a; uint64_t b; float c; int32_t d; }} *")[0]
    pg.ptr(o, "double *")[0] = x.a + tonumber(x.b) + x.c + x.d
end
function polyplug_init()
    return {{ ["test.echo"] = {{ contract_version = 1, factory = function() return {{}} end,
                                functions = F }} }}, {{ code = 0 }}
end
""")
    return "\n".join(lines)


def echo_functions() -> str:
    body = "".join(f'echo_{t} = {{ id = {i}, args = ["{t}"], returns = "{t}" }}\n'
                   for i, t in enumerate(TYPES))
    body += (f'mix = {{ id = {MIX_ID}, args = ["u8", "f64", "string", "bool", "i16", "u64"], '
             'returns = "string" }\n')
    body += f'sum = {{ id = {SUM_ID}, args = ["i8", "u64", "f32", "i32"], returns = "f64" }}\n'
    return body


# ── fixtures ─────────────────────────────────────────────────────────────────


@pytest.fixture
def logs() -> Logs:
    return Logs()


@pytest.fixture
def rt(logs: Logs) -> Iterator[polyplug.Runtime]:
    """A runtime with the three examples loaded (tests make their contracts from it)."""
    with build_runtime(logs) as runtime:
        for name in ("arith", "text", "counter"):
            runtime.load_bundle(EXAMPLES / name)
        yield runtime


@pytest.fixture
def echo_rt(tmp_path: Path, logs: Logs) -> Iterator[polyplug.Runtime]:
    """A runtime with ``test.echo@1``: echo_<type>(T) -> T for every type, mix and sum."""
    d = write_bundle(tmp_path, "echo", echo_lua(), "test.echo", len(TYPES) + 2,
                     echo_functions())
    with build_runtime(logs) as runtime:
        runtime.load_bundle(d)
        yield runtime


# ── contracts and their functions ────────────────────────────────────────────


def test_typed_calls_on_the_arith_example(rt: polyplug.Runtime) -> None:
    arith = rt.contract("example.arith", 1)
    assert arith.add(7, 35) == 42
    assert arith.mul(6, 7) == 42
    assert arith.div(85, 2) == 42
    assert arith.add(2**32 - 1, 0) == 2**32 - 1


def test_contract_describes_its_functions(rt: polyplug.Runtime) -> None:
    arith = rt.contract("example.arith", 1)
    assert sorted(arith.functions) == ["add", "div", "mul"]
    assert arith.functions["add"] == FunctionSig("add", 0, ("u32", "u32"), "u32")
    assert arith.add.signature.describe() == "add(u32, u32) -> u32"
    assert arith.add.__qualname__ == "example.arith@1.add"
    assert "add(u32, u32) -> u32" in arith.add.__doc__
    assert {"add", "mul", "div"} <= set(dir(arith))
    assert "example.arith@1" in repr(arith)
    assert arith.name == "example.arith" and arith.major == 1
    assert arith.contract_id == polyplug.guest_contract_id("example.arith", 1)
    assert arith.interface != ffi.NULL


def test_the_same_function_object_is_reused(rt: polyplug.Runtime) -> None:
    arith = rt.contract("example.arith", 1)
    assert arith.add is arith.add
    assert arith.function("add") is arith.add


def test_unknown_function_name_is_an_attribute_error(rt: polyplug.Runtime) -> None:
    arith = rt.contract("example.arith", 1)
    with pytest.raises(AttributeError, match=r"declares no function 'sub'.*add.*div.*mul"):
        _ = arith.sub
    with pytest.raises(AttributeError):
        arith.function("sub")


def test_missing_contract_is_plugin_not_found(rt: polyplug.Runtime) -> None:
    with pytest.raises(PluginNotFound):
        rt.contract("example.nope", 1)
    with pytest.raises(PluginNotFound):
        rt.contract("example.arith", 2)


# ── every type ───────────────────────────────────────────────────────────────


def _values(t: str) -> list[Any]:
    if t in INT_RANGES:
        lo, hi = INT_RANGES[t]
        return [lo, hi, 0, 1, hi // 3]
    if t == "f32":
        return [0.0, 1.5, -0.25, 3.0e38, -1.0e-30, math.inf, -math.inf]
    if t == "f64":
        return [0.0, 0.1, -1e300, 5e-324, math.inf, 2.0**53 + 2]
    if t == "bool":
        return [True, False]
    return ["", "x", "héllo wörld", "日本語 😀", "a\0b"]


@pytest.mark.parametrize("t", TYPES)
def test_echo_every_type(echo_rt: polyplug.Runtime, t: str) -> None:
    echo = echo_rt.contract("test.echo", 1)
    fn = getattr(echo, f"echo_{t}")
    for value in _values(t):
        result = fn(value)
        if t == "f32":  # a float32 round trip
            value = struct.unpack("f", struct.pack("f", value))[0]
        assert result == value and type(result) is type(value), (t, value, result)


def test_echo_nan(echo_rt: polyplug.Runtime) -> None:
    echo = echo_rt.contract("test.echo", 1)
    assert math.isnan(echo.echo_f64(math.nan))
    assert math.isnan(echo.echo_f32(math.nan))


def test_f32_rounds_to_single_precision(echo_rt: polyplug.Runtime) -> None:
    echo = echo_rt.contract("test.echo", 1)
    assert echo.echo_f32(0.1) == struct.unpack("f", struct.pack("f", 0.1))[0] != 0.1


def test_mixed_argument_layout_follows_c_struct_padding(echo_rt: polyplug.Runtime) -> None:
    echo = echo_rt.contract("test.echo", 1)
    assert echo.mix(7, 2.5, "xyz", True, -3, 2**64 - 1) == "7|2.5|xyz|true|-3|18446744073709551615"
    assert echo.mix(255, -0.125, "", False, 32767, 0) == "255|-0.125||false|32767|0"
    assert echo.sum(-5, 2**40, 0.5, -7) == -5 + 2**40 + 0.5 - 7


def test_echo_accepts_bytes_for_strings(echo_rt: polyplug.Runtime) -> None:
    echo = echo_rt.contract("test.echo", 1)
    assert echo.echo_string(b"raw bytes") == "raw bytes"
    assert echo.echo_string(bytearray(b"ba")) == "ba"


@pytest.mark.parametrize("t", sorted(INT_RANGES))
def test_out_of_range_integers_are_invalid_argument(echo_rt: polyplug.Runtime, t: str) -> None:
    echo = echo_rt.contract("test.echo", 1)
    lo, hi = INT_RANGES[t]
    fn = getattr(echo, f"echo_{t}")
    for bad in (lo - 1, hi + 1):
        with pytest.raises(InvalidArgument, match=rf"echo_{t}\({t}\) -> {t}"):
            fn(bad)
    assert fn(hi) == hi  # the frame is still usable afterwards


def test_non_numbers_are_invalid_argument(echo_rt: polyplug.Runtime) -> None:
    echo = echo_rt.contract("test.echo", 1)
    with pytest.raises(InvalidArgument):
        echo.echo_u32(1.5)
    with pytest.raises(InvalidArgument):
        echo.echo_u32("7")
    with pytest.raises(InvalidArgument):
        echo.echo_f64("1.5")
    assert isinstance(InvalidArgument("x"), ValueError)


def test_wrong_arity_is_type_error(rt: polyplug.Runtime, echo_rt: polyplug.Runtime) -> None:
    echo = echo_rt.contract("test.echo", 1)
    arith = rt.contract("example.arith", 1)
    with pytest.raises(TypeError):
        arith.add(1)
    with pytest.raises(TypeError):
        arith.add(1, 2, 3)
    with pytest.raises(TypeError):
        echo.echo_string()
    with pytest.raises(TypeError):
        echo.echo_string(None)
    assert arith.add(1, 2) == 3


def test_a_non_string_for_a_string_argument_is_type_error(echo_rt: polyplug.Runtime) -> None:
    echo = echo_rt.contract("test.echo", 1)
    for bad in (5, 1.5, ["a"], None):
        with pytest.raises(TypeError, match="must be str or bytes"):
            echo.echo_string(bad)
    assert echo.echo_string(memoryview(b"view")) == "view"


# ── strings ──────────────────────────────────────────────────────────────────


def test_text_example(rt: polyplug.Runtime) -> None:
    text = rt.contract("example.text", 1)
    assert text.upper("hello, World") == "HELLO, WORLD"
    assert text.upper("héllo wörld привет ß") == "HÉLLO WÖRLD ПРИВЕТ ß"
    assert text.count_words("  one two\tthree\nfour  ") == 4
    assert text.count_words("") == 0
    assert text.reverse("añb😀c") == "c😀bña"
    assert text.length("añb😀") == 4
    assert text.repeat("ab", 3) == "ababab"


def test_empty_strings(rt: polyplug.Runtime, echo_rt: polyplug.Runtime) -> None:
    text = rt.contract("example.text", 1)
    echo = echo_rt.contract("test.echo", 1)
    assert text.upper("") == ""
    assert text.reverse("") == ""
    assert text.repeat("abc", 0) == ""
    assert echo.echo_string("") == ""


@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, 10_000, 1_000_000])
def test_large_strings_overflow_the_arena(rt: polyplug.Runtime, echo_rt: polyplug.Runtime,
                                          size: int) -> None:
    echo = echo_rt.contract("test.echo", 1)
    text = rt.contract("example.text", 1)
    s = ("abcdéfg😀" * (size // 12 + 1)).encode()[:size].decode("utf-8", "ignore")
    assert echo.echo_string(s) == s
    assert text.reverse(s) == s[::-1]
    assert text.upper(s) == s.upper().replace("ẞ", "ß")
    assert text.length(s) == len(s)


def test_large_results_from_small_arguments(rt: polyplug.Runtime) -> None:
    text = rt.contract("example.text", 1)
    assert text.repeat("ab", 5000) == "ab" * 5000
    big = text.repeat("é", 100_000)
    assert big == "é" * 100_000
    assert text.repeat("x", 1) == "x"  # the arena is reset and reused afterwards


def test_string_results_stay_intact_across_alternating_sizes(rt: polyplug.Runtime) -> None:
    text = rt.contract("example.text", 1)
    for i in range(200):
        n = 50 if i % 2 else 9000 + i
        assert text.repeat("q", n) == "q" * n


def test_invalid_utf8_is_a_guest_error(rt: polyplug.Runtime) -> None:
    text = rt.contract("example.text", 1)
    with pytest.raises(GuestError, match="invalid UTF-8 at byte 1"):
        text.reverse(b"a\xffb")


def test_too_large_a_result_is_refused_by_the_guest(rt: polyplug.Runtime) -> None:
    text = rt.contract("example.text", 1)
    with pytest.raises(GuestError, match="exceeds the 16777216-byte limit"):
        text.repeat("abcd", 2**30)


# ── instances and logging ────────────────────────────────────────────────────


def test_instances_have_their_own_state(rt: polyplug.Runtime) -> None:
    counter = rt.contract("example.counter", 1)
    assert counter.get() == 0
    assert counter.increment(5) == 5
    with counter.instance() as a, counter.instance() as b:
        assert a.id != b.id
        assert a.increment(1) == 1
        assert a.increment(2) == 3
        assert b.increment(10) == 10
        assert (a.get(), b.get(), counter.get()) == (3, 10, 5)
        a.reset()
        assert (a.get(), b.get(), counter.get()) == (0, 10, 5)
        assert a.function("get")() == 0
        assert b.function(1, returns="u64")() == 10
    assert counter.get() == 5
    counter.reset()
    assert counter.get() == 0


def test_counter_is_64_bit(rt: polyplug.Runtime) -> None:
    counter = rt.contract("example.counter", 1)
    for _ in range(3):
        counter.increment(2**32 - 1)
    assert counter.get() == 3 * (2**32 - 1)


def test_counter_logs_through_the_host(rt: polyplug.Runtime, logs: Logs) -> None:
    counter = rt.contract("example.counter", 1)
    with counter.instance() as inst:
        inst.increment(4)
        inst.reset()
    records = logs.scope("guest.counter")
    assert (LogLevel.Info, f"counter #{2}: +4 -> 4") in records
    assert (LogLevel.Info, "counter #2: reset") in records
    assert (LogLevel.Debug, "counter #2 created") in records


def test_closed_instance_refuses_calls(rt: polyplug.Runtime) -> None:
    counter = rt.contract("example.counter", 1)
    inst = counter.instance()
    assert inst.increment(3) == 3
    inst.close()
    inst.close()  # twice is fine
    with pytest.raises(FunctionNotAvailable):
        inst.increment(1)
    assert counter.get() == 0


def test_closed_instance_refuses_a_function_it_never_called(rt: polyplug.Runtime) -> None:
    counter = rt.contract("example.counter", 1)
    inst = counter.instance()
    inst.close()
    with pytest.raises(FunctionNotAvailable, match="closed"):
        inst.get()
    with pytest.raises(FunctionNotAvailable, match="closed"):
        inst.function(1, returns="u64")


def test_instance_of_a_failing_factory(tmp_path: Path, logs: Logs) -> None:
    lua = """
    local made = 0
    function polyplug_init()
        return { ["test.fragile"] = { contract_version = 1,
            factory = function()
                made = made + 1
                if made > 1 then error("no more instances") end
                return {}
            end,
            functions = { [0] = function() end } } }, { code = 0 }
    end
    """
    d = write_bundle(tmp_path, "fragile", lua, "test.fragile", 1, "noop = { id = 0 }\n")
    with build_runtime(logs) as runtime:
        runtime.load_bundle(d)
        fragile = runtime.contract("test.fragile", 1)
        fragile.noop()  # the default instance was built at load
        with pytest.raises(GuestError) as info:
            fragile.instance()
        # the guest's own message, not "see the log"
        assert str(info.value) == ("test.fragile@1: Lua create_instance: factory call failed: "
                                   "fragile/bundle.lua:7: no more instances")
    assert any("no more instances" in m for _, _, m in logs.records)


# ── errors ───────────────────────────────────────────────────────────────────


def test_guest_error_carries_the_guest_message(rt: polyplug.Runtime) -> None:
    arith = rt.contract("example.arith", 1)
    with pytest.raises(GuestError) as info:
        arith.div(1, 0)
    assert "division by zero" in str(info.value)
    assert "arith.lua:" in str(info.value)  # Lua's position prefix
    assert isinstance(info.value, CallError)
    assert arith.div(4, 2) == 2  # the contract keeps working


def test_invalid_argument_on_an_instance(rt: polyplug.Runtime) -> None:
    counter = rt.contract("example.counter", 1)
    with counter.instance() as inst:
        with pytest.raises(InvalidArgument):
            inst.increment(-1)
        assert inst.increment(1) == 1


def test_undeclared_function_id_is_function_not_available(rt: polyplug.Runtime) -> None:
    arith = rt.contract("example.arith", 1)
    fn = arith.function(9, returns="u32")
    with pytest.raises(FunctionNotAvailable, match="9"):
        fn()
    with arith.instance() as inst:
        with pytest.raises(FunctionNotAvailable):
            inst.function(9, returns="u32")()
    assert isinstance(FunctionNotAvailable("x"), CallError)


def test_functions_by_id_with_explicit_types(rt: polyplug.Runtime) -> None:
    arith = rt.contract("example.arith", 1)
    text = rt.contract("example.text", 1)
    assert arith.function(0, ["u32", "u32"], "u32")(20, 22) == 42
    assert arith.function(1, ["uint32_t", "uint32_t"], "uint32_t")(6, 7) == 42
    assert text.function(1, ["str"], "u32")("a b c") == 3
    assert text.function(2, ["string"], "string")("abc") == "cba"
    with pytest.raises(ValueError, match="unknown type"):
        arith.function(0, ["u33"], "u32")


# ── explicit signatures ──────────────────────────────────────────────────────


def test_contract_with_explicit_signatures(rt: polyplug.Runtime) -> None:
    sigs = {"plus": signature("plus", 0, ["u32", "u32"], "u32"),
            "times": signature("times", 1, ["uint32_t", "uint32_t"], "uint32_t")}
    arith = rt.contract("example.arith", 1, signatures=sigs)
    assert arith.plus(40, 2) == 42
    assert arith.times(6, 7) == 42
    assert sorted(arith.functions) == ["plus", "times"]
    with pytest.raises(AttributeError):
        _ = arith.add  # the manifest's table is not consulted when signatures= is given
    empty = rt.contract("example.arith", 1, signatures={})
    assert empty.functions == {}
    assert empty.function(2, ["u32", "u32"], "u32")(9, 3) == 3


def test_bundle_without_a_signature_table(tmp_path: Path, logs: Logs) -> None:
    d = write_bundle(tmp_path, "bare", echo_lua().replace("test.echo", "test.bare"),
                     "test.bare", len(TYPES) + 2)
    with build_runtime(logs) as runtime:
        runtime.load_bundle(d)
        bare = runtime.contract("test.bare", 1)
        assert bare.functions == {}
        assert bare.function(TYPES.index("i16"), ["i16"], "i16")(-300) == -300
        typed = runtime.contract(
            "test.bare", 1, signatures={"echo": signature("echo", 11, ["string"], "string")})
        assert typed.echo("both ways") == "both ways"


# ── the raw call ─────────────────────────────────────────────────────────────


def test_raw_call_with_own_memory(rt: polyplug.Runtime) -> None:
    arith = rt.contract("example.arith", 1)
    args = ffi.new("uint32_t[2]", [6, 7])
    out = ffi.new("uint32_t *")
    assert arith.call(1, args, out) is None
    assert out[0] == 42
    with pytest.raises(GuestError, match="division by zero"):
        arith.call(2, ffi.new("uint32_t[2]", [1, 0]), out)
    with pytest.raises(FunctionNotAvailable):
        arith.call(9, args, out)


def test_raw_call_with_a_string_and_an_arena(rt: polyplug.Runtime) -> None:
    text = rt.contract("example.text", 1)
    data = ffi.new("char[]", "grüße".encode())
    arg = ffi.new("StringView *", (ffi.cast("const uint8_t *", data), len("grüße".encode())))
    out = ffi.new("StringView *")
    arena = ffi.gc(lib.pp_arena_new(lib.pp_detached_host(), 64), lib.pp_arena_free)
    text.call(0, arg, out, arena)
    assert ffi.string(out.ptr, out.len).decode() == "GRÜßE"
    text.call(2, arg, out, arena)
    assert ffi.string(out.ptr, out.len).decode() == "eßürg"


def test_raw_call_on_an_instance(rt: polyplug.Runtime) -> None:
    counter = rt.contract("example.counter", 1)
    by = ffi.new("uint32_t *", 9)
    out = ffi.new("uint64_t *")
    with counter.instance() as inst:
        counter.call(0, by, out, instance=inst)
        assert out[0] == 9
        counter.call(1, ffi.NULL, out, instance=inst)
        assert out[0] == 9 == inst.get()
    counter.call(1, ffi.NULL, out)
    assert out[0] == 0


# ── unload and reload ────────────────────────────────────────────────────────


def test_calls_after_unload_raise_stale_handle(rt: polyplug.Runtime) -> None:
    arith = rt.contract("example.arith", 1)
    inst = arith.instance()
    add, inst_add = arith.add, inst.add
    assert add(1, 2) == inst_add(1, 2) == 3
    inst.close()
    rt.unload_bundle(bundle_id("arith"))
    with pytest.raises(StaleHandle):
        add(1, 2)
    with pytest.raises(StaleHandle):
        arith.mul(1, 2)  # never called before the unload
    with pytest.raises(StaleHandle):
        arith.call(0, ffi.new("uint32_t[2]"), ffi.new("uint32_t *"))
    with pytest.raises(StaleHandle):
        arith.instance()
    with pytest.raises(PluginNotFound):
        rt.contract("example.arith", 1)
    rt.contract("example.text", 1).upper("others live on")


def test_instance_closed_after_unload_is_harmless(rt: polyplug.Runtime) -> None:
    text = rt.contract("example.text", 1)
    inst = text.instance()
    rt.unload_bundle(bundle_id("text"))
    with pytest.raises(StaleHandle):
        inst.upper("x")
    inst.close()


@pytest.fixture
def reloadable(tmp_path: Path, logs: Logs) -> Iterator[tuple[polyplug.Runtime, Path, list]]:
    d = tmp_path / "arith"
    shutil.copytree(EXAMPLES / "arith", d)
    phases: list[polyplug.ReloadPhase] = []
    with build_runtime(logs, hot_reload=True, on_reload=phases.append) as runtime:
        runtime.load_bundle(d)
        yield runtime, d, phases


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_reload_is_followed(reloadable: tuple[polyplug.Runtime, Path, list]) -> None:
    rt, d, phases = reloadable
    arith = rt.contract("example.arith", 1)
    add = arith.add
    with arith.instance() as inst:
        assert add(1, 2) == inst.add(1, 2) == 3
    _edit(d / "arith.lua", "result(out_ptr, a + b)", "result(out_ptr, a + b + 1000)")
    rt.reload_bundle(d)
    assert add(1, 2) == 1003
    assert arith.mul(2, 3) == 6
    with arith.instance() as inst:
        assert inst.add(1, 2) == 1003
    assert [p.type.name for p in phases] == ["Preparing", "Reloaded"]


def test_failed_reload_keeps_the_old_code(reloadable: tuple[polyplug.Runtime, Path, list]) -> None:
    rt, d, phases = reloadable
    arith = rt.contract("example.arith", 1)
    add = arith.add
    (d / "arith.lua").write_text("this is not lua(")
    with pytest.raises(polyplug.InitFailed):
        rt.reload_bundle(d)
    assert add(1, 2) == 3
    assert rt.contract("example.arith", 1).add(2, 2) == 4
    assert [p.type.name for p in phases] == ["Preparing", "Failed"]
    assert "arith.lua:1:" in (phases[-1].reason or "")


def test_reload_with_a_new_signature_table(reloadable: tuple[polyplug.Runtime, Path, list]) -> None:
    rt, d, _ = reloadable
    old = rt.contract("example.arith", 1)
    _edit(d / "arith.lua", "[2] = div }", "[2] = div, [3] = function(_, a, o)\n"
          "    local x = pg.ptr(a, 'const int32_t *')\n"
          "    pg.ptr(o, 'int32_t *')[0] = x[0] - x[1]\nend }")
    _edit(d / "manifest.toml", '"example.arith@1" = 3', '"example.arith@1" = 4')
    with (d / "manifest.toml").open("a") as f:
        f.write('sub = { id = 3, args = ["i32", "i32"], returns = "i32" }\n')
    rt.reload_bundle(d)
    assert rt.contract("example.arith", 1).sub(2, 5) == -3
    assert "sub" not in old.functions  # a Contract keeps the table it was made with
    assert old.function(3, ["i32", "i32"], "i32")(2, 5) == -3


def test_reload_that_drops_a_function(reloadable: tuple[polyplug.Runtime, Path, list]) -> None:
    rt, d, _ = reloadable
    arith = rt.contract("example.arith", 1)
    assert arith.div(8, 2) == 4
    _edit(d / "arith.lua", "[1] = mul, [2] = div }", "[1] = mul }")
    _edit(d / "manifest.toml", '"example.arith@1" = 3', '"example.arith@1" = 2')
    rt.reload_bundle(d)
    assert arith.mul(8, 2) == 16
    with pytest.raises(FunctionNotAvailable):
        arith.div(8, 2)


# ── threads ──────────────────────────────────────────────────────────────────


def test_four_threads_call_concurrently(rt: polyplug.Runtime) -> None:
    arith = rt.contract("example.arith", 1)
    text = rt.contract("example.text", 1)
    counter = rt.contract("example.counter", 1)
    failures: list[str] = []
    start = threading.Barrier(4)
    rounds = 1500

    def work(k: int) -> None:
        try:
            start.wait()
            with counter.instance() as mine:
                for i in range(rounds):
                    if arith.add(i, k) != i + k or arith.mul(i, k) != i * k:
                        raise AssertionError(f"arith wrong at {i}")
                    s = f"thread {k} call {i} ü😀" + "x" * (i % 7 * 1000)
                    if text.reverse(s) != s[::-1] or text.count_words(s) != 5:
                        raise AssertionError(f"text wrong at {i}")
                    counter.increment(1)
                    if mine.increment(k + 1) != (i + 1) * (k + 1):
                        raise AssertionError(f"instance wrong at {i}")
        except BaseException as exc:  # noqa: BLE001
            failures.append(f"thread {k}: {exc!r}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures
    assert counter.get() == 4 * rounds


def test_threads_share_one_function_object(echo_rt: polyplug.Runtime) -> None:
    echo = echo_rt.contract("test.echo", 1)
    fn = echo.echo_string
    results: dict[int, bool] = {}

    def work(k: int) -> None:
        s = str(k) * (3000 + k)
        results[k] = all(fn(s) == s for _ in range(500))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {0: True, 1: True, 2: True, 3: True}


# ── guards ───────────────────────────────────────────────────────────────────


def test_calls_after_the_runtime_closed(logs: Logs) -> None:
    runtime = build_runtime(logs)
    runtime.load_bundle(EXAMPLES / "arith")
    arith = runtime.contract("example.arith", 1)
    assert arith.add(1, 1) == 2
    runtime.close()
    with pytest.raises(polyplug.RuntimeClosed):
        arith.call(0, ffi.new("uint32_t[2]"), ffi.new("uint32_t *"))
    with pytest.raises(polyplug.RuntimeClosed):
        _ = arith.mul  # a function first looked up after the close


def test_cached_function_after_the_runtime_closed() -> None:
    code = ("import polyplug\n"
            "rt = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build()\n"
            f"rt.load_bundle({str(EXAMPLES / 'arith')!r})\n"
            "arith = rt.contract('example.arith', 1)\n"
            "inst = arith.instance()\n"
            "add, inst_add = arith.add, inst.add\n"
            "assert add(1, 1) == inst_add(1, 1) == 2\n"
            "rt.close()\n"
            "for fn in (add, inst_add):\n"
            "    try:\n"
            "        fn(1, 1)\n"
            "    except polyplug.RuntimeClosed:\n"
            "        print('RuntimeClosed')\n"
            "inst.close()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert (proc.returncode, proc.stdout.split()) == (0, ["RuntimeClosed"] * 2), proc.stderr


def test_contract_collected_after_the_runtime_closed() -> None:
    code = ("import gc, polyplug\n"
            "rt = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build()\n"
            f"rt.load_bundle({str(EXAMPLES / 'text')!r})\n"
            "text = rt.contract('example.text', 1)\n"
            "assert text.repeat('ab', 5000) == 'ab' * 5000  # the arena overflows\n"
            "rt.close()\n"
            "del text\n"
            "gc.collect()\n"
            "print('collected')\n")
    env = dict(os.environ, MALLOC_PERTURB_="165")  # freed memory is scribbled over
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env)
    assert (proc.returncode, proc.stdout.strip()) == (0, "collected"), proc.stderr


def test_signature_of_a_numeric_function(rt: polyplug.Runtime) -> None:
    arith = rt.contract("example.arith", 1)
    fn = arith.function(5)
    assert fn.signature == FunctionSig("fn5", 5)
    with pytest.raises(FunctionNotAvailable):
        fn()


# ── what a user reads when something is wrong ────────────────────────────────


def test_contract_accepts_name_at_major(rt: polyplug.Runtime) -> None:
    assert rt.contract("example.arith@1").add(7, 35) == 42
    assert rt.contract("example.arith@1", 1).mul(6, 7) == 42  # the same major twice is fine
    assert rt.contract("example.arith").add(1, 1) == 2        # the major defaults to 1
    with pytest.raises(InvalidArgument) as info:
        rt.contract("example.arith@1", 2)
    assert str(info.value) == ("contract 'example.arith@1' names major 1 but major=2 was "
                               "passed too; give the major once")
    for bad in ("example.arith@", "example.arith@one", "@1", "example.arith@-1"):
        with pytest.raises(InvalidArgument, match="the part after '@' must be the major"):
            rt.contract(bad)


@pytest.mark.parametrize("args, message", [
    ((1, "x"), "add(u32, u32) -> u32: argument 2 (u32): 'x' is not an integer"),
    ((-1, 2), "add(u32, u32) -> u32: argument 1 (u32): -1 is out of range for u32 "
              "(0..4294967295)"),
    ((1, 2**32), "add(u32, u32) -> u32: argument 2 (u32): 4294967296 is out of range for u32 "
                 "(0..4294967295)"),
    ((1.5, 2), "add(u32, u32) -> u32: argument 1 (u32): 1.5 is not an integer"),
])
def test_a_bad_argument_is_named(rt: polyplug.Runtime, args: tuple, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        rt.contract("example.arith", 1).add(*args)
    assert str(info.value) == message


def test_bad_float_and_string_arguments_are_named(echo_rt: polyplug.Runtime) -> None:
    echo = echo_rt.contract("test.echo", 1)
    with pytest.raises(InvalidArgument) as info:
        echo.echo_f64("1.5")
    assert str(info.value) == "echo_f64(f64) -> f64: argument 1 (f64): '1.5' is not a number"
    with pytest.raises(TypeError) as err:
        echo.echo_string(12)
    assert str(err.value) == ("echo_string(string) -> string: argument 1 (string): a string "
                              "argument must be str or bytes, not int")


def test_a_declared_id_past_the_registered_functions_is_explained(tmp_path: Path,
                                                                  logs: Logs) -> None:
    d = tmp_path / "arith"
    shutil.copytree(EXAMPLES / "arith", d)
    with (d / "manifest.toml").open("a") as f:
        f.write('square = { id = 9, args = ["u32"], returns = "u32" }\n')
    with build_runtime(logs) as runtime:
        runtime.load_bundle(d)
        arith = runtime.contract("example.arith", 1)
        expected = ('example.arith@1 function {} is not available: the bundle registered 3 '
                    'function(s) for this contract (ids 0..2); fix the id in its '
                    '[contracts."example.arith@1".functions] table or register the function '
                    'in polyplug_init')
        with pytest.raises(FunctionNotAvailable) as info:
            arith.square(3)
        assert str(info.value) == expected.format("square (id 9)")
        with pytest.raises(FunctionNotAvailable) as info:
            arith.function(9, ["u32"], "u32")(3)
        assert str(info.value) == expected.format("id 9")
        with pytest.raises(FunctionNotAvailable) as info:
            arith.call(9)
        assert str(info.value) == expected.format("id 9")


# ── type names: every C spelling ─────────────────────────────────────────────


@pytest.mark.parametrize("c_name, ours", [
    ("uint8_t", "u8"), ("uint16_t", "u16"), ("uint32_t", "u32"), ("uint64_t", "u64"),
    ("int8_t", "i8"), ("int16_t", "i16"), ("int32_t", "i32"), ("int64_t", "i64"),
    ("float", "f32"), ("double", "f64"), ("bool", "bool"), ("_Bool", "bool"),
    ("StringView", "string"),
])
def test_normalize_type_reads_every_c_spelling(c_name: str, ours: str) -> None:
    from polyplug.signature import TYPES, normalize_type

    assert normalize_type(c_name) == ours
    assert normalize_type(ours) == ours
    assert C_TYPES.get(ours, "StringView") == (c_name if c_name != "_Bool" else "bool")
    assert TYPES[ours][1] == C_TYPES.get(ours, "StringView")  # the library's table agrees
    assert signature("f", 0, [c_name], c_name) == signature("f", 0, [ours], ours)


def test_normalize_type_refuses_unknown_names() -> None:
    from polyplug.signature import normalize_type

    for bad in ("uint128_t", "int", "u33", "char *", ""):
        with pytest.raises(ValueError, match=r"unknown type .* \(known: u8, u16, u32, u64, i8, "
                                             r"i16, i32, i64, f32, f64, bool, string, bytes\)"):
            normalize_type(bad)
