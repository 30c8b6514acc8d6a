"""Host contracts provided from Python: types, strings, errors, instances, threads,
lifecycle and hostile calls, with real Lua guests calling them through the SDK
(``pg.host_contract``), a polyplugc-style generated caller, and raw native calls.
"""

from __future__ import annotations

import gc
import logging
import math
import shutil
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import write_typed_bundle

import polyplug
from polyplug import (
    AbiErrorCode,
    FunctionSig,
    HostContract,
    LuaLoader,
    RuntimeBuilder,
    ffi,
    host_contract_id,
    lib,
)

ROOT = Path(__file__).resolve().parent.parent

SCALARS = {
    "u8": [0, 255], "u16": [0, 65535], "u32": [0, 7, 2**32 - 1], "u64": [0, 2**64 - 1],
    "i8": [-128, 127], "i16": [-32768, 32767], "i32": [-2**31, 2**31 - 1],
    "i64": [-2**63, 2**63 - 1], "f32": [1.5, -0.25], "f64": [math.pi, -1e300],
    "bool": [True, False],
}
C_TYPES = {"u8": "uint8_t", "u16": "uint16_t", "u32": "uint32_t", "u64": "uint64_t",
           "i8": "int8_t", "i16": "int16_t", "i32": "int32_t", "i64": "int64_t",
           "f32": "float", "f64": "double", "bool": "bool"}
ALL_TYPES = [*SCALARS, "string", "bytes"]


@pytest.fixture
def rt() -> Iterator[polyplug.Runtime]:
    runtime = RuntimeBuilder().loader(LuaLoader()).hot_reload().build()
    yield runtime
    runtime.close()


# ── a guest that relays to host functions ────────────────────────────────────

RELAY = """
local ffi = require("ffi")
local pg = require("polyplug_guest")
local SIGS = {SIGS}
local TYPES = {TYPES}
local CTYPES = {CTYPES}

local function factory(host)
    return {{ h = pg.host_contract(host, "t.echo", 1, SIGS) }}
end

local functions = {{}}
for i, t in ipairs(TYPES) do
    local name = "echo_" .. t
    if t == "string" or t == "bytes" then
        functions[i - 1] = function(self, a, out, arena, alloc)
            local s = pg.read_string(pg.ptr(a, "const StringView *")[0])
            local r = self.h[name](self.h, s)
            pg.ptr(out, "StringView *")[0] = pg.alloc_string_arena(alloc, arena, r)
        end
    else
        local cty = CTYPES[t]
        functions[i - 1] = function(self, a, out)
            local v = pg.ptr(a, "const " .. cty .. " *")[0]
            pg.ptr(out, cty .. " *")[0] = self.h[name](self.h, v)
        end
    end
end

function polyplug_init()
    return {{ ["t.relay"] = {{ factory = factory, functions = functions }} }}, {{ code = 0 }}
end
"""


def lua_table(d: dict[str, Any]) -> str:
    def val(v: Any) -> str:
        if isinstance(v, dict):
            return lua_table(v)
        if isinstance(v, (list, tuple)):
            return "{ " + ", ".join(val(x) for x in v) + " }"
        if isinstance(v, str):
            return f'"{v}"'
        return str(v)
    return "{ " + ", ".join(f"[{val(k)}] = {val(v)}" for k, v in d.items()) + " }"


def echo_contract(seen: list[Any]) -> HostContract:
    contract = HostContract("t.echo", 1)
    for t in ALL_TYPES:
        def echo(x: Any, t: str = t) -> Any:
            seen.append((t, x))
            return x
        contract.add(f"echo_{t}", echo, [t], t)
    return contract


@pytest.fixture
def relay(rt: polyplug.Runtime, tmp_path: Path) -> tuple[polyplug.Contract, list[Any]]:
    seen: list[Any] = []
    rt.provide_host_contract(echo_contract(seen))
    sigs = {f"echo_{t}": {"id": i, "args": [t], "returns": t} for i, t in enumerate(ALL_TYPES)}
    lua = RELAY.format(SIGS=lua_table(sigs), TYPES=lua_table({i + 1: t for i, t in
                                                              enumerate(ALL_TYPES)}),
                       CTYPES=lua_table(C_TYPES))
    rt.load_bundle(write_typed_bundle(tmp_path, "relay", lua))
    signatures = {t: FunctionSig(t, i, (t,), t) for i, t in enumerate(ALL_TYPES)}
    return rt.contract("t.relay", 1, signatures), seen


@pytest.mark.parametrize("type_name", list(SCALARS))
def test_scalar_types_round_trip(relay: tuple[polyplug.Contract, list[Any]],
                                 type_name: str) -> None:
    contract, seen = relay
    for value in SCALARS[type_name]:
        seen.clear()
        got = getattr(contract, type_name)(value)
        assert got == value and type(got) is type(value)
        # the host function saw the Python value of the declared type
        assert seen == [(type_name, value)] and type(seen[0][1]) is type(value)


def test_strings_both_ways(relay: tuple[polyplug.Contract, list[Any]]) -> None:
    contract, seen = relay
    for text in ["hello", "", "héllo wörld ✓", "a\x00b", "x" * 100_000]:
        seen.clear()
        assert contract.string(text) == text
        assert seen == [("string", text)]
    for data in [b"\x00\xff\xfe", b"", bytes(range(256))]:
        seen.clear()
        assert contract.bytes(data) == data
        assert seen == [("bytes", data)] and type(seen[0][1]) is bytes


def test_huge_strings_both_ways(relay: tuple[polyplug.Contract, list[Any]]) -> None:
    contract, seen = relay
    big = ("0123456789abcdef" * (1 << 19))  # 8 MiB
    assert contract.string(big) == big
    assert contract.bytes(big.encode()) == big.encode()
    assert contract.string("small again") == "small again"  # the big buffer was given back


def test_mixed_layout_matches_the_call_layer(rt: polyplug.Runtime, tmp_path: Path) -> None:
    got: list[Any] = []
    mixed = HostContract("t.mixed", 1)

    @mixed.function(args=["u8", "f64", "string", "i16", "bool", "bytes", "u32"],
                    returns="string")
    def mix(a: int, b: float, c: str, d: int, e: bool, f: bytes, g: int) -> str:
        got.append((a, b, c, d, e, f, g))
        return f"{a}|{b}|{c}|{d}|{e}|{f.hex()}|{g}"

    rt.provide_host_contract(mixed)
    lua = """
    local pg = require("polyplug_guest")
    local M = { mix = { id = 0, args = { "u8", "f64", "string", "i16", "bool", "bytes", "u32" },
                        returns = "string" } }
    function polyplug_init(host)
        local h = pg.host_contract(host, "t.mixed", 1, M)
        return { ["t.m"] = { factory = function() return {} end, functions = { [0] =
            function(_, _, out, arena, alloc)
                local r = h:mix(200, 2.5, "sv", -3, true, "\\0\\1", 4000000000)
                pg.ptr(out, "StringView *")[0] = pg.alloc_string_arena(alloc, arena, r)
            end } } }, { code = 0 }
    end
    """
    rt.load_bundle(write_typed_bundle(tmp_path, "mixed", lua))
    c = rt.contract("t.m", 1, {"run": FunctionSig("run", 0, (), "string")})
    assert c.run() == "200|2.5|sv|-3|True|0001|4000000000"
    assert got == [(200, 2.5, "sv", -3, True, b"\x00\x01", 4000000000)]


# ── errors ───────────────────────────────────────────────────────────────────

FAILING = """
local pg = require("polyplug_guest")
local S = { boom = { id = 0, args = { "string" } }, bad = { id = 1, returns = "u32" },
            none = { id = 2, returns = "string" }, text = { id = 3, args = { "string" } } }
local h
local function msg_of(f, ...)
    local ok, e = pcall(f, h, ...)
    return tostring(ok) .. "|" .. tostring(e)
end
function polyplug_init(host)
    h = pg.host_contract(host, "t.fail", 1, S)
    return { ["t.f"] = { factory = function() return {} end, functions = {
        [0] = function(_, a) h:boom(pg.read_string(pg.ptr(a, "const StringView *")[0])) end,
        [1] = function(_, _, out, arena, alloc)
            local r = table.concat({ msg_of(h.bad), msg_of(h.none), msg_of(h.text, "\\255") }, "\\n")
            pg.ptr(out, "StringView *")[0] = pg.alloc_string_arena(alloc, arena, r)
        end,
    } } }, { code = 0 }
end
"""


def failing_contract() -> HostContract:
    c = HostContract("t.fail", 1)

    @c.function(args=["string"])
    def boom(text: str) -> None:
        raise ValueError(text)

    @c.function(returns="u32")
    def bad() -> Any:
        return "not a number"

    @c.function(returns="string")
    def none() -> None:
        return None

    @c.function(args=["string"])
    def text(value: str) -> None:
        raise AssertionError("never called: the argument is not UTF-8")

    return c


def test_an_exception_becomes_a_guest_error_with_its_cause(
        rt: polyplug.Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rt.provide_host_contract(failing_contract())
    rt.load_bundle(write_typed_bundle(tmp_path, "failing", FAILING))
    c = rt.contract("t.f", 1, {"boom": FunctionSig("boom", 0, ("string",)),
                               "probe": FunctionSig("probe", 1, (), "string")})
    with caplog.at_level(logging.ERROR, logger="polyplug.host"):
        with pytest.raises(polyplug.GuestError) as info:
            c.boom("kaput")
    text = str(info.value)
    assert "failing/bundle.lua:" in text  # where the guest called it
    assert text.endswith("host function t.fail@1.boom failed: ValueError: kaput")
    cause = info.value.__cause__
    assert isinstance(cause, ValueError) and str(cause) == "kaput"
    [record] = [r for r in caplog.records if r.name == "polyplug.host.t.fail"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "host function t.fail@1.boom failed: ValueError: kaput"
    assert record.python_traceback.startswith("Traceback (most recent call last):")
    assert "raise ValueError(text)" in record.python_traceback  # the source line
    assert record.stack_info == record.python_traceback and record.lua_traceback is None


def test_bad_results_and_arguments_are_typed_errors(rt: polyplug.Runtime,
                                                    tmp_path: Path) -> None:
    rt.provide_host_contract(failing_contract())
    rt.load_bundle(write_typed_bundle(tmp_path, "failing", FAILING))
    c = rt.contract("t.f", 1, {"probe": FunctionSig("probe", 1, (), "string")})
    bad, none, text = c.probe().split("\n")
    assert bad == ("false|host function t.fail@1.bad failed: bad() -> u32 returned "
                   "'not a number', which is not a u32")
    assert none == ("false|host function t.fail@1.none failed: none() -> string returned None, "
                    "which is not str or bytes")
    assert text.startswith("false|host function t.fail@1.text failed: cannot read the "
                           "arguments of text(string): argument 1 (string) is not valid UTF-8")
    assert text.endswith("; declare it as bytes to receive raw bytes")


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_base_exceptions_do_not_escape(rt: polyplug.Runtime, exc: type[BaseException]) -> None:
    provided = rt.provide_host_contract(
        "t.base", 1, {"f": lambda: (_ for _ in ()).throw(exc("stop"))})
    code, msg, _ = raw_call(rt, provided.interface, 0)
    assert code == AbiErrorCode.HostContractCallFailed
    assert msg == f"host function t.base@1.f failed: {exc.__name__}: stop"


def test_the_log_callback_gets_the_failure_with_its_traceback(tmp_path: Path) -> None:
    records: list[tuple[Any, str, str]] = []
    with RuntimeBuilder().loader(LuaLoader()).logger(
            lambda *r: records.append(r)).build() as rt:
        rt.provide_host_contract(failing_contract())
        rt.load_bundle(write_typed_bundle(tmp_path, "failing", FAILING))
        with pytest.raises(polyplug.GuestError):
            rt.contract("t.f", 1, {"boom": FunctionSig("boom", 0, ("string",))}).boom("x")
    [(level, scope, message)] = [r for r in records if r[1].startswith("host.")]
    assert (level, scope) == (polyplug.LogLevel.Error, "host.t.fail")
    first, _, rest = message.partition("\n")
    assert first == "host function t.fail@1.boom failed: ValueError: x"
    assert rest.startswith("Traceback (most recent call last):")


# ── raw native calls from Python (what guests do) ────────────────────────────


def raw_call(rt: polyplug.Runtime, iface: Any, fn: int, args: Any = ffi.NULL,
             out: Any = ffi.NULL, instance: Any = None) -> tuple[int, str, Any]:
    """Call slot ``fn`` of a host contract's native table as a guest does."""
    if instance is None:
        host = rt.host_api
        instance = host.get_host_contract(host, iface.contract_id, 0).data
    err = ffi.new("AbiError *")
    f = ffi.cast("NativeHostFn", iface.dispatch.native.functions[fn])
    f(instance, args, out, err)
    msg = ffi.string(err.message.ptr, err.message.len).decode() if err.message.len else ""
    return int(err.code), msg, out


def test_hostile_calls(rt: polyplug.Runtime) -> None:
    small = rt.provide_host_contract(
        "t.small", 1, {"add": lambda a, b: a + b, "echo": lambda s: s},
        signatures={"add": {"args": ["u32", "u32"], "returns": "u32"},
                    "echo": {"args": ["string"], "returns": "string"}})
    big = rt.provide_host_contract("t.big", 1, {f"f{i}": (lambda: None) for i in range(6)})
    iface = small.interface
    host = rt.host_api
    inst = host.get_host_contract(host, small.contract_id, 0).data
    args = ffi.new("uint32_t[2]", [2, 3])
    out = ffi.new("uint32_t *")
    assert raw_call(rt, iface, 0, args, out)[:2] == (0, "")
    assert out[0] == 5
    # a null instance, an instance that is not one
    code, msg, _ = raw_call(rt, iface, 0, args, out, instance=ffi.NULL)
    assert code == AbiErrorCode.InvalidPointer and "null instance" in msg
    junk = ffi.new("uint64_t[8]")
    code, msg, _ = raw_call(rt, iface, 0, args, out, instance=junk)
    assert code == AbiErrorCode.InvalidPointer and "not one of its contract's" in msg
    # an id past the functions: slot 5 of another contract's table, this instance
    f5 = ffi.cast("NativeHostFn", big.interface.dispatch.native.functions[5])
    err = ffi.new("AbiError *")
    f5(inst, args, out, err)
    assert err.code == AbiErrorCode.FunctionNotAvailable
    assert ffi.string(err.message.ptr, err.message.len) == (
        b"host contract t.small@1 has 2 function(s): fn 5 does not exist")
    # null argument block and result slot
    code, msg, _ = raw_call(rt, iface, 0, ffi.NULL, out)
    assert code == AbiErrorCode.InvalidPointer and "the args pointer is null" in msg
    code, msg, _ = raw_call(rt, iface, 0, args, ffi.NULL)
    assert code == AbiErrorCode.InvalidPointer and "the out pointer is null" in msg
    # StringViews that cannot be: a null pointer with a length, an absurd length
    sv = ffi.new("StringView *")
    sv.len = 5
    code, msg, _ = raw_call(rt, iface, 1, sv, ffi.new("StringView *"))
    assert code == AbiErrorCode.HostContractCallFailed and "null pointer and a non-zero" in msg
    sv.ptr, sv.len = ffi.cast("uint8_t *", args), 1 << 50
    code, msg, _ = raw_call(rt, iface, 1, sv, ffi.new("StringView *"))
    assert code == AbiErrorCode.HostContractCallFailed and f"claims {1 << 50} bytes" in msg
    # and the contract still works
    assert raw_call(rt, iface, 0, args, out)[0] == 0 and out[0] == 5


def test_every_one_of_the_256_slots_reaches_its_function(rt: polyplug.Runtime) -> None:
    n = polyplug.host.MAX_FUNCTIONS
    assert n == 256
    provided = rt.provide_host_contract(
        "t.wide", 1, {f"f{i}": (lambda i=i: i) for i in range(n)},
        signatures={f"f{i}": {"returns": "u32"} for i in range(n)})
    out = ffi.new("uint32_t *")
    for i in range(n):
        assert raw_call(rt, provided.interface, i, out=out)[0] == 0
        assert out[0] == i
    with pytest.raises(polyplug.InvalidArgument, match="id must be an integer 0..255"):
        HostContract("t.wider", 1).add("f", lambda: None, id=256)


def test_results_outlive_the_call_until_the_next_host_call(rt: polyplug.Runtime) -> None:
    provided = rt.provide_host_contract("t.s", 1, {"s": lambda x: x * 2},
                                        signatures={"s": {"args": ["string"],
                                                          "returns": "string"}})
    keep = ffi.new("char[]", b"ab")
    sv = ffi.new("StringView *", (ffi.cast("uint8_t *", keep), 2))
    out = ffi.new("StringView *")
    raw_call(rt, provided.interface, 0, sv, out)
    first = ffi.string(out.ptr, out.len)
    gc.collect()  # nothing Python owns backs the result
    assert first == ffi.string(out.ptr, out.len) == b"abab"


# ── declarations ─────────────────────────────────────────────────────────────


def test_declaration_errors() -> None:
    c = HostContract("t.decl@2")
    assert (c.name, c.major, c.contract_id) == ("t.decl", 2, host_contract_id("t.decl", 2))
    c.add("a", lambda: None)
    with pytest.raises(polyplug.InvalidArgument, match="declared twice"):
        c.add("a", lambda: None)
    with pytest.raises(polyplug.InvalidArgument, match="id 0 is already taken by 'a'"):
        c.add("b", lambda: None, id=0)
    with pytest.raises(polyplug.InvalidArgument, match="unknown type 'u128'"):
        c.add("c", lambda x: x, ["u128"])
    with pytest.raises(polyplug.InvalidArgument, match="identifiers"):
        c.add("not-a-name", lambda: None)
    with pytest.raises(TypeError, match="args is a list of type names"):
        c.add("d", lambda x: x, "u32")  # type: ignore[arg-type]
    with pytest.raises(polyplug.InvalidArgument, match="raw function"):
        c.add("e", lambda a, o: None, ["u32"], raw=True)
    with pytest.raises(TypeError, match="must be callable"):
        c.add("f", 42)  # type: ignore[arg-type]
    with pytest.raises(polyplug.InvalidArgument, match="name without spaces"):
        HostContract("a b", 1)
    with pytest.raises(polyplug.InvalidArgument, match="minor must be an integer"):
        HostContract("t.x", 1, minor=-1)
    with pytest.raises(polyplug.InvalidArgument, match="major after '@'|must be the major"):
        HostContract("t.x@one")
    assert c.add("g", lambda: 1, returns="uint32_t") == FunctionSig("g", 1, (), "u32")
    assert sorted(c.functions) == ["a", "g"]


def test_ids_follow_declaration_order_or_are_explicit(rt: polyplug.Runtime) -> None:
    c = HostContract.from_functions(
        "t.ids", 1, {"a": lambda: 1, "b": lambda: 2, "c": lambda: 3},
        signatures={"b": FunctionSig("b", 0, (), "u32"), "a": {"returns": "u32"},
                    "c": {"id": 5, "returns": "u32"}})
    assert {n: s.id for n, s in c.functions.items()} == {"b": 0, "c": 5, "a": 6}
    provided = rt.provide_host_contract(c)
    out = ffi.new("uint32_t *")
    assert raw_call(rt, provided.interface, 6, out=out)[0] == 0 and out[0] == 1
    code, msg, _ = raw_call(rt, provided.interface, 2, out=out)  # a gap
    assert code == AbiErrorCode.FunctionNotAvailable
    assert msg == "host function t.ids@1 fn 2 failed: host contract t.ids@1 declares no function with id 2"
    with pytest.raises(polyplug.InvalidArgument, match="not given: z"):
        HostContract.from_functions("t.x", 1, {}, signatures={"z": {}})
    with pytest.raises(TypeError, match="takes no major"):
        rt.provide_host_contract(c, 1)


def test_duplicate_replace_and_withdraw(rt: polyplug.Runtime) -> None:
    first = rt.provide_host_contract("t.dup", 1, {"v": lambda: 1},
                                     signatures={"v": {"returns": "u32"}})
    host = rt.host_api
    old_instance = host.get_host_contract(host, first.contract_id, 0).data  # a guest keeps it
    with pytest.raises(polyplug.DuplicateHostContract) as info:
        rt.provide_host_contract("t.dup", 1, {"v": lambda: 2})
    assert info.value.contract == "t.dup@1"
    assert "already provided" in str(info.value)
    assert not first.withdrawn
    second = rt.provide_host_contract("t.dup", 1, {"v": lambda: 2},
                                      signatures={"v": {"returns": "u32"}}, replace=True)
    assert first.withdrawn and not second.withdrawn
    out = ffi.new("uint32_t *")
    # what a guest cached of the old one answers HostContractNotFound
    code, msg, _ = raw_call(rt, first.interface, 0, out=out, instance=old_instance)
    assert code == AbiErrorCode.HostContractNotFound and "t.dup@1 was withdrawn" in msg
    assert raw_call(rt, second.interface, 0, out=out)[0] == 0 and out[0] == 2
    assert first.withdraw() is False  # replaced already: it does not withdraw the new one
    assert not second.withdrawn
    assert rt.withdraw_host_contract("t.dup@1") is True
    assert second.withdrawn
    assert rt.withdraw_host_contract("t.dup", 1) is False
    assert host.resolve_host_contract_interface(host, first.contract_id, 0) == ffi.NULL


def test_calls_through_a_withdrawn_interface_answer_not_found(rt: polyplug.Runtime) -> None:
    provided = rt.provide_host_contract("t.gone", 1, {"v": lambda: 7},
                                        signatures={"v": {"returns": "u32"}})
    host = rt.host_api
    inst = host.get_host_contract(host, provided.contract_id, 0).data
    out = ffi.new("uint32_t *")
    assert raw_call(rt, provided.interface, 0, out=out, instance=inst)[0] == 0
    with provided:
        pass  # leaving the block withdraws it
    code, msg, _ = raw_call(rt, provided.interface, 0, out=out, instance=inst)
    assert code == AbiErrorCode.HostContractNotFound
    assert msg == ("host contract t.gone@1 was withdrawn by the host; look it up again with "
                   "HostApi.get_host_contract")


# ── lifecycle: release, instances ────────────────────────────────────────────


class Tracked:
    """An object whose collection a test can observe."""

    closed: list[int] = []

    def __init__(self, n: int = 0) -> None:
        self.n = n

    def close(self) -> None:
        Tracked.closed.append(self.n)


def test_withdraw_releases_the_python_side(rt: polyplug.Runtime) -> None:
    target = Tracked()
    ref = weakref.ref(target)
    c = HostContract("t.rel", 1)
    c.add("f", lambda t=target: t.n, returns="u32")
    del target
    provided = rt.provide_host_contract(c)
    del c
    gc.collect()
    assert ref() is not None  # the runtime holds it while it is provided
    provided.withdraw()
    provided.contract._functions.clear()  # the user's own reference goes too
    gc.collect()
    assert ref() is None


def test_a_host_function_may_withdraw_its_own_contract(rt: polyplug.Runtime) -> None:
    holder: dict[str, Any] = {}

    def f() -> int:
        assert holder["p"].withdraw() is True
        return 11  # still running: the release waits for this call to return

    holder["p"] = provided = rt.provide_host_contract("t.self", 1, {"f": f},
                                                      signatures={"f": {"returns": "u32"}})
    out = ffi.new("uint32_t *")
    host = rt.host_api
    inst = host.get_host_contract(host, provided.contract_id, 0).data
    assert raw_call(rt, provided.interface, 0, out=out, instance=inst)[0] == 0 and out[0] == 11
    assert provided._state.released
    code = raw_call(rt, provided.interface, 0, out=out, instance=inst)[0]
    assert code == AbiErrorCode.HostContractNotFound


SESSION = """
local pg = require("polyplug_guest")
local S = { push = { id = 0, args = { "i64" } }, total = { id = 1, returns = "i64" } }
local function factory(host)
    return { s = pg.host_contract(host, "t.session", "1.0", S) }
end
function polyplug_init()
    return { ["t.user"] = { factory = factory, functions = {
        [0] = function(self, a) self.s:push(pg.ptr(a, "const int64_t *")[0]) end,
        [1] = function(self, _, out) pg.ptr(out, "int64_t *")[0] = self.s:total() end,
        [2] = function(self) self.s:close() end,
    } } }, { code = 0 }
end
"""
USER_SIGS = {"push": FunctionSig("push", 0, ("i64",)), "total": FunctionSig("total", 1, (), "i64"),
             "drop": FunctionSig("drop", 2)}


class Session:
    made: list[Session] = []

    def __init__(self) -> None:
        self.items: list[int] = []
        self.closed = False
        Session.made.append(self)

    def close(self) -> None:
        self.closed = True


def session_contract() -> HostContract:
    c = HostContract("t.session", 1, factory=Session)

    @c.function(args=["i64"])
    def push(session: Session, value: int) -> None:
        session.items.append(value)

    @c.function(returns="i64")
    def total(session: Session) -> int:
        return sum(session.items)

    return c


def test_per_instance_host_contracts(rt: polyplug.Runtime, tmp_path: Path) -> None:
    Session.made.clear()
    rt.provide_host_contract(session_contract())
    rt.load_bundle(write_typed_bundle(tmp_path, "user", SESSION))
    user = rt.contract("t.user", 1, USER_SIGS)
    user.push(5)
    with user.instance() as a, user.instance() as b:
        a.push(100)
        b.push(-1)
        b.push(-2)
        assert (user.total(), a.total(), b.total()) == (5, 100, -3)
        assert len(Session.made) == 3  # one host instance per guest instance
        a.drop()  # the guest destroys its host instance: close() runs
        assert Session.made[1].closed and not Session.made[2].closed
        with pytest.raises(polyplug.GuestError, match="t.session@1: this instance was destroyed"):
            a.total()
    rt.unload_bundle("user")
    gc.collect()  # the VM closed: its host-contract objects were collected and destroyed
    assert all(s.closed for s in Session.made)


def test_a_failing_factory(rt: polyplug.Runtime, tmp_path: Path,
                           caplog: pytest.LogCaptureFixture) -> None:
    def factory() -> None:
        raise RuntimeError("no session today")

    c = HostContract("t.session", 1, factory=factory)
    c.add("push", lambda s, v: None, ["i64"])
    c.add("total", lambda s: 0, [], "i64")
    rt.provide_host_contract(c)
    with caplog.at_level(logging.ERROR, logger="polyplug.host"):
        with pytest.raises(polyplug.InitFailed) as info:
            rt.load_bundle(write_typed_bundle(tmp_path, "user", SESSION))
    assert ("host contract `t.session@1`: the host created no instance: host contract "
            "t.session@1 create_instance failed: the factory raised RuntimeError: no session "
            "today") in str(info.value)
    assert any("no session today" in (r.python_traceback or "") for r in caplog.records)


def test_close_destroys_instances_and_releases(tmp_path: Path) -> None:
    Session.made.clear()
    rt = RuntimeBuilder().loader(LuaLoader()).host_contract(session_contract()).build()
    provided = ProvidedView(rt, "t.session", 1)
    rt.load_bundle(write_typed_bundle(tmp_path, "user", SESSION))
    rt.contract("t.user", 1, USER_SIGS).push(1)
    iface = provided.interface
    rt.close()
    assert all(s.closed for s in Session.made) and Session.made
    assert provided.state_released()
    # code that kept the interface gets no instance any more, not a crash
    inst = ffi.new("HostContractInstance *")
    iface.create_instance(iface, ffi.NULL, inst)
    assert inst.data == ffi.NULL
    with pytest.raises(polyplug.RuntimeClosed):
        rt.provide_host_contract(session_contract())


class ProvidedView:
    """The interface of a host contract a builder provided, found through the runtime."""

    def __init__(self, rt: polyplug.Runtime, name: str, major: int) -> None:
        self.cid = host_contract_id(name, major)
        self.interface = lib.pp_runtime_find_host_contract(rt._ptr(), self.cid)
        assert self.interface != ffi.NULL

    def state_released(self) -> bool:
        from polyplug.host import _LIVE

        return not any(s.label == "t.session@1" for _, s in _LIVE.values())


# ── guests: reload, unload, optional, versions, polyplugc ────────────────────


def test_reload_and_unload_of_the_guest_leave_the_host_contract(rt: polyplug.Runtime,
                                                                tmp_path: Path) -> None:
    seen: list[Any] = []
    provided = rt.provide_host_contract(echo_contract(seen))
    sigs = {f"echo_{t}": {"id": i, "args": [t], "returns": t} for i, t in enumerate(ALL_TYPES)}
    lua = RELAY.format(SIGS=lua_table(sigs), TYPES=lua_table({i + 1: t for i, t in
                                                              enumerate(ALL_TYPES)}),
                       CTYPES=lua_table(C_TYPES))
    bundle = write_typed_bundle(tmp_path, "relay", lua)
    rt.load_bundle(bundle)
    u32 = {"u32": FunctionSig("u32", 2, ("u32",), "u32")}
    assert rt.contract("t.relay", 1, u32).u32(9) == 9
    rt.reload_bundle(bundle)
    assert rt.contract("t.relay", 1, u32).u32(10) == 10
    rt.unload_bundle("relay")
    assert not provided.withdrawn
    rt.load_bundle(bundle)
    assert rt.contract("t.relay", 1, u32).u32(11) == 11
    assert [v for _, v in seen] == [9, 10, 11]


def test_optional_and_missing_host_contracts(rt: polyplug.Runtime, tmp_path: Path) -> None:
    lua = """
    local pg = require("polyplug_guest")
    function polyplug_init(host)
        local opt, why = pg.host_contract(host, "t.absent", 1, {}, { optional = true })
        assert(opt == nil)
        REASON = why
        return { ["t.o"] = { factory = function() return {} end, functions = {
            [0] = function(_, _, out, arena, alloc)
                pg.ptr(out, "StringView *")[0] = pg.alloc_string_arena(alloc, arena, REASON)
            end,
            [1] = function() pg.host_contract(host, "t.absent", 1, {}) end,
        } } }, { code = 0 }
    end
    """
    rt.load_bundle(write_typed_bundle(tmp_path, "opt", lua))
    c = rt.contract("t.o", 1, {"why": FunctionSig("why", 0, (), "string"),
                               "need": FunctionSig("need", 1)})
    assert c.why() == ("host contract `t.absent@1` is not provided by the host "
                       "(HostContractNotFound): the program that loads this bundle must provide it")
    with pytest.raises(polyplug.GuestError, match=r"opt/bundle.lua:\d+: host contract `t.absent@1` "
                                                  r"is not provided by the host"):
        c.need()


def test_minor_versions_are_negotiated(rt: polyplug.Runtime, tmp_path: Path) -> None:
    lua = """
    local pg = require("polyplug_guest")
    function polyplug_init(host)
        local h = pg.host_contract(host, "t.ver", "1.2", { v = { id = 0, returns = "u32" } })
        return { ["t.v"] = { factory = function() return {} end, functions = {
            [0] = function(_, _, out) pg.ptr(out, "uint32_t *")[0] = h:v() end } } }, { code = 0 }
    end
    """
    bundle = write_typed_bundle(tmp_path, "ver", lua)
    old = HostContract("t.ver", 1, minor=1)
    old.add("v", lambda: 1, returns="u32")
    rt.provide_host_contract(old)
    with pytest.raises(polyplug.InitFailed, match=r"host contract `t.ver@1` is provided at version "
                                                  r"1\.1\.0, but this bundle needs 1\.2 or later"):
        rt.load_bundle(bundle)
    new = HostContract("t.ver", 1, minor=3, patch=4)
    new.add("v", lambda: 3, returns="u32")
    rt.provide_host_contract(new, replace=True)
    rt.load_bundle(bundle)
    assert rt.contract("t.v", 1, {"v": FunctionSig("v", 0, (), "u32")}).v() == 3


def test_declared_host_contract_dependencies(rt: polyplug.Runtime, tmp_path: Path) -> None:
    bundle = write_typed_bundle(tmp_path, "needs", """
    function polyplug_init()
        return { ["t.n"] = { factory = function() return {} end, functions = {} } }, { code = 0 }
    end
    """)
    manifest = bundle / "manifest.toml"
    base = manifest.read_text()
    manifest.write_text(base + '\n[[dependency]]\nkind = "host_contract"\ncontract = "app.kv"\n'
                        f'min_version = "1.2"\ncontract_id = {host_contract_id("app.kv", 1)}\n')
    with pytest.raises(polyplug.HostContractNotFound) as info:
        rt.load_bundle(bundle)
    assert (info.value.bundle, info.value.contract) == ("needs", "app.kv@1")
    assert str(info.value) == ('bundle `needs` requires host contract `app.kv@1` ([[dependency]] '
                               'kind = "host_contract"), which this runtime does not provide; '
                               'provide it before loading the bundle')
    assert rt.list_bundles() == []
    kv = HostContract("app.kv", 1, minor=1)
    rt.provide_host_contract(kv)
    with pytest.raises(polyplug.HostContractNotFound, match=r"at version 1\.2 or later; this "
                                                            r"runtime provides 1\.1\.0"):
        rt.load_bundle(bundle)
    rt.provide_host_contract(HostContract("app.kv", 1, minor=2), replace=True)
    rt.load_bundle(bundle)
    assert polyplug.bundle_id("needs") in rt.list_bundles()
    # a contract_id that is not host_contract_id(name, major) is a manifest error
    manifest.write_text(base + '\n[[dependency]]\nkind = "host_contract"\ncontract = "app.kv"\n'
                        f'min_version = "1.0"\ncontract_id = {polyplug.guest_contract_id("app.kv", 1)}\n')
    with pytest.raises(polyplug.ManifestParse, match="declares contract_id"):
        polyplug.validate(polyplug.read_manifest(bundle))


def test_a_polyplugc_style_generated_caller(rt: polyplug.Runtime, tmp_path: Path) -> None:
    """The hand-written polyplugc-style caller of tests/parity/bundles/hostuser against a
    host contract provided from Python (fns 4 and 6 use it; 0 uses pg.host_contract)."""
    c = HostContract("parity.host", 1)
    c.add("add", lambda a, b: a + b, ["u32", "u32"], "u32")
    c.add("greet", lambda s: f"hi {s}", ["string"], "string")
    c.add("fail", lambda s: None, ["string"])
    c.add("count", lambda: 0, [], "u32")
    rt.provide_host_contract(c)
    bundle = tmp_path / "hostuser"
    shutil.copytree(ROOT / "tests" / "parity" / "bundles" / "hostuser", bundle)
    rt.load_bundle(bundle)
    user = rt.contract("parity.hostuser", 1, {
        "add": FunctionSig("add", 0, ("u32", "u32"), "u32"),
        "add_pc": FunctionSig("add_pc", 4, ("u32", "u32"), "u32"),
        "greet_pc": FunctionSig("greet_pc", 6, ("string",), "string")})
    assert user.add_pc(20, 22) == 42 == user.add(40, 2)
    assert user.greet_pc("polyplugc") == "hi polyplugc"
    rt.withdraw_host_contract("parity.host", 1)
    assert user.greet_pc("x") == "<nil>"  # generated callers fail silently: nil


# ── threads ──────────────────────────────────────────────────────────────────


THREADED = """
local pg = require("polyplug_guest")
local S = { add = { id = 0, args = { "u32", "u32" }, returns = "u32" } }
function polyplug_init(host)
    local h = pg.host_contract(host, "t.thr", 1, S)
    return { ["t.thr.{NAME}"] = { factory = function() return {} end, functions = {
        [0] = function(_, a, out)
            local p = pg.ptr(a, "const uint32_t *")
            pg.ptr(out, "uint32_t *")[0] = h:add(p[0], p[1])
        end } } }, { code = 0 }
end
"""


def threaded_runtime(rt: polyplug.Runtime, tmp_path: Path,
                     threads: set[int]) -> list[polyplug.Contract]:
    lock = threading.Lock()

    def add(a: int, b: int) -> int:
        with lock:
            threads.add(threading.get_ident())
        return (a + b) & 0xFFFFFFFF

    rt.provide_host_contract("t.thr", 1, {"add": add},
                             signatures={"add": {"args": ["u32", "u32"], "returns": "u32"}})
    out = []
    for name in ("a", "b"):
        rt.load_bundle(write_typed_bundle(tmp_path, f"thr{name}",
                                          THREADED.replace("{NAME}", name)))
        out.append(rt.contract(f"t.thr.{name}", 1,
                               {"add": FunctionSig("add", 0, ("u32", "u32"), "u32")}))
    return out


def test_python_threads(rt: polyplug.Runtime, tmp_path: Path) -> None:
    threads: set[int] = set()
    contracts = threaded_runtime(rt, tmp_path, threads)
    errors: list[BaseException] = []
    alive = threading.Barrier(4, timeout=30)  # all alive at once: no thread id is reused

    def work(k: int) -> None:
        try:
            alive.wait()
            c = contracts[k % 2]
            for i in range(2000):
                assert c.add(i, k) == i + k
            alive.wait()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors and not any(w.is_alive() for w in workers)
    assert len(threads) == 4


def build_foreign_threads(tmp_path: Path) -> Path:
    import cbuild

    out = tmp_path / "libforeign_threads.so"
    cmd = [*cbuild.compiler(), "-O1", "-g", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
           str(ROOT / "tests" / "c" / "foreign_threads.c"), "-o", str(out), "-pthread"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def test_threads_python_did_not_start(rt: polyplug.Runtime, tmp_path: Path) -> None:
    import cffi

    threads: set[int] = set()
    contracts = threaded_runtime(rt, tmp_path, threads)
    abi = cffi.FFI()
    abi.cdef("int pp_test_run_threads(uintptr_t invoke, const uintptr_t *frames, int n, "
             "int calls);")
    helper = abi.dlopen(str(build_foreign_threads(tmp_path)))
    keep = []
    frames = []
    for k in range(4):
        frame = ffi.new("pp_call_frame *")
        args = ffi.new("uint32_t[2]", [k, 1000])
        out = ffi.new("uint32_t *")
        contracts[k % 2]._fill_frame(frame, rt._ptr(), None, 0, args, out, ffi.NULL)
        keep += [frame, args, out]
        frames.append((frame, out))
    invoke = int(ffi.cast("uintptr_t", ffi.addressof(lib, "pp_call_frame_invoke")))
    addresses = [int(ffi.cast("uintptr_t", f)) for f, _ in frames]
    failures = helper.pp_test_run_threads(invoke, addresses, 4, 500)
    assert failures == 0, [ffi.string(f.err.message.ptr, f.err.message.len) for f, _ in frames]
    assert [int(out[0]) for _, out in frames] == [k + 1000 for k in range(4)]
    assert threading.get_ident() not in threads and len(threads) == 4


def test_a_host_function_may_call_other_bundles_but_not_its_caller(
        rt: polyplug.Runtime, tmp_path: Path) -> None:
    rt.load_bundle(ROOT / "examples" / "arith")
    arith = rt.contract("example.arith", 1)
    holder: dict[str, Any] = {}

    def via_arith(a: int, b: int) -> int:
        return arith.add(a, b)  # another bundle: fine

    def back_into_caller(a: int, b: int) -> int:
        return holder["me"].plus(a, b)  # the bundle that is calling: refused

    rt.provide_host_contract("t.nest", 1, {"plus": via_arith, "loop": back_into_caller},
                             signatures={"plus": {"args": ["u32", "u32"], "returns": "u32"},
                                         "loop": {"args": ["u32", "u32"], "returns": "u32"}})
    lua = """
    local pg = require("polyplug_guest")
    local S = { plus = { id = 0, args = { "u32", "u32" }, returns = "u32" },
                loop = { id = 1, args = { "u32", "u32" }, returns = "u32" } }
    function polyplug_init(host)
        local h = pg.host_contract(host, "t.nest", 1, S)
        local function f(name) return function(_, a, out)
            local p = pg.ptr(a, "const uint32_t *")
            pg.ptr(out, "uint32_t *")[0] = h[name](h, p[0], p[1])
        end end
        return { ["t.me"] = { factory = function() return {} end,
                              functions = { [0] = f("plus"), [1] = f("loop") } } }, { code = 0 }
    end
    """
    rt.load_bundle(write_typed_bundle(tmp_path, "me", lua))
    me = holder["me"] = rt.contract("t.me", 1, {
        "plus": FunctionSig("plus", 0, ("u32", "u32"), "u32"),
        "loop": FunctionSig("loop", 1, ("u32", "u32"), "u32")})
    assert me.plus(40, 2) == 42
    with pytest.raises(polyplug.GuestError, match="host function t.nest@1.loop failed: "
                                                  "ReentrantCall: .*reentrant call refused") as info:
        me.loop(1, 2)
    assert isinstance(info.value.__cause__, polyplug.ReentrantCall)


SPIN_LUA = """
local pg = require("polyplug_guest")
local S = { tick = { id = 0, args = { "u32" }, returns = "u32" } }
function polyplug_init(host)
    local h = pg.host_contract(host, "t.tick", 1, S)
    local function spin(self, a, out)
        local n, acc = pg.ptr(a, "const uint32_t *")[0], 0
        for i = 1, n do
            acc = h:tick(acc)
            if i % 64 == 0 then pg.log(self.host, pg.LogLevel.Warn, "spin", "tick") end
        end
        pg.ptr(out, "uint32_t *")[0] = acc
    end
    return { ["t.spin"] = { contract_version = 1,
                            factory = function(host) return { host = host } end,
                            functions = { [0] = spin } } }, { code = 0 }
end
"""

SPIN_MAIN = """
import sys, threading, time
from polyplug import FunctionSig, HostContract, LuaLoader, RuntimeBuilder
records = []
tick = HostContract("t.tick", 1)
tick.add("tick", lambda x: x + 1, ["u32"], "u32")
rt = RuntimeBuilder().loader(LuaLoader()).logger(lambda *r: records.append(r)).build()
rt.provide_host_contract(tick)
rt.load_bundle(sys.argv[1])
spin = rt.contract("t.spin", 1).spin
assert spin(640) == 640
for _ in range(4):  # Python host functions and log records, until the process ends
    threading.Thread(target=spin, args=(4_000_000_000,), daemon=True).start()
time.sleep(0.3)
print("exiting with records:", len(records) >= 10, flush=True)
"""


def test_daemon_threads_in_host_calls_do_not_abort_interpreter_exit(tmp_path: Path) -> None:
    """Daemon threads whose guests call a Python host function and log, over and over,
    while the interpreter exits.  Python ends a thread that takes the GIL once it
    finalizes; inside a guest that unwinding cannot pass LuaJIT's frames and the
    process aborted (SIGABRT in 9 of 10 runs).  From atexit on, C code no longer enters
    Python on such threads (fastcall.c, "Python entered from C code at interpreter
    exit"): their host calls fail, their records are dropped, and the exit is clean."""
    d = write_typed_bundle(tmp_path, "spin", SPIN_LUA, "t.spin", 1,
                           'spin = { id = 0, args = ["u32"], returns = "u32" }\n')
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", SPIN_MAIN, str(d)], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
        assert "exiting with records: True" in proc.stdout, proc.stdout


# ── the example and the CLI ──────────────────────────────────────────────────


def test_examples_notes(tmp_path: Path) -> None:
    store: dict[str, str] = {}
    events: list[str] = []
    kv = HostContract("app.kv", 1)
    kv.add("get", lambda k: store.get(k, ""), ["string"], "string")
    kv.add("put", store.__setitem__, ["string", "string"])
    sink = HostContract("app.events", 1)
    sink.add("emit", events.append, ["string"])
    with RuntimeBuilder().loader(LuaLoader()).host_contract(kv).build() as rt:
        rt.load_bundle(ROOT / "examples" / "notes")
        notes = rt.contract("example.notes", 1)
        notes.add("a", "first")
        assert notes.show("a") == "a: first" and notes.count() == 1
        assert events == []  # the sink is optional: not provided, nothing sent
    with RuntimeBuilder().loader(LuaLoader()).host_contract(kv).host_contract(sink).build() as rt:
        rt.load_bundle(ROOT / "examples" / "notes")
        rt.contract("example.notes", 1).add("b", "second")
    assert events == ["added b"] and store == {"note:a": "first", "note:b": "second"}


def test_cli_call_says_why_it_cannot_run_a_bundle_that_needs_a_host_contract() -> None:
    proc = subprocess.run([sys.executable, "-m", "polyplug", "call", str(ROOT / "examples"),
                           "example.notes@1", "count"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: HostContractNotFound: bundle `notes` requires host contract `app.kv@1`: host "
        "contracts come from the program that loads a bundle (Runtime.provide_host_contract), "
        "and the polyplug CLI provides none; `call` runs bundles whose host contracts are "
        "optional")


def test_cli_call_runs_a_bundle_whose_host_contract_is_optional(tmp_path: Path) -> None:
    write_typed_bundle(tmp_path, "opt", """
    local pg = require("polyplug_guest")
    local function factory(host)
        return { ev = pg.host_contract(host, "app.events", 1, { emit = { id = 0, args = { "string" } } },
                                       { optional = true }) }
    end
    function polyplug_init()
        return { ["t.opt"] = { factory = factory, functions = {
            [0] = function(self, _, out) pg.ptr(out, "uint32_t *")[0] = self.ev and 1 or 0 end } } },
            { code = 0 }
    end
    """, "t.opt", 1, 'has_sink = { id = 0, returns = "u32" }\n')
    proc = subprocess.run([sys.executable, "-m", "polyplug", "call", str(tmp_path / "opt"),
                           "t.opt@1", "has_sink"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert (proc.returncode, proc.stdout.strip()) == (0, "0"), proc.stderr


# ── the C side under stress (plain and ASan+UBSan) ───────────────────────────


@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "asan"])
def test_c_callers_race_replace_and_withdraw(sanitize: bool) -> None:
    """tests/c/hostfn_stress.c: 4 threads call through cached interfaces and instances
    (destroyed ones too) while the main thread replaces and withdraws the contract 300
    times; no callback may run after its release, every instance is destroyed once."""
    import cbuild
    from test_c_sanitizers import SAN_ENV, _run

    exe = cbuild.build_program("hostfn_stress", [ROOT / "tests" / "c" / "hostfn_stress.c"],
                               sanitize=sanitize, opt="-O1" if sanitize else "-O2")
    proc = _run([str(exe), "300"], env=SAN_ENV if sanitize else None, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.startswith("ok contracts=300 "), proc.stdout
    calls = int(proc.stdout.split("calls=")[1].split()[0])
    assert calls > 0
