"""Compatibility with upstream polyplug 0.1.3 where a migrating bundle or host would notice
(issue 13): the global `ffi`, re-entry per contract, the init status `code` coercion.

The deliberate differences are listed in docs/guest-authoring.md; everything here must
behave as upstream does.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

import polyplug
from polyplug import ffi, lib

# Every contract's fn 0 is `hop`: args = {n, iface_1, fn_1, ..., iface_n, fn_n} (u64s).
# With n = 0 it writes its own TAG to *out (a u64); otherwise it calls fn_1 of iface_1
# with the remaining hops and writes inner * 10 + TAG, or 1000000 + the AbiError code
# of the first call that failed.  fn 1 creates an instance of the contract at args[0]
# from inside the call, calls it with no hops and destroys it: out = its answer (2000000:
# no instance; 3000000: the destroyed instance still answered).
HOP = """
local ffi = require("ffi")
require("abi")
local function hop(tag)
    return function(_, args_ptr, out_ptr)
        local a = ffi.cast("const uint64_t *", ffi.cast("uintptr_t", args_ptr))
        local out = ffi.cast("uint64_t *", ffi.cast("uintptr_t", out_ptr))
        local n = tonumber(a[0])
        if n == 0 then out[0] = tag return end
        local iface = ffi.cast("const GuestContractInterface *", a[1])
        local rest = ffi.new("uint64_t[?]", 2 * n + 1)
        rest[0] = n - 1
        for i = 1, 2 * (n - 1) do rest[i] = a[i + 2] end
        local res, err = ffi.new("uint64_t[1]"), ffi.new("AbiError[1]")
        iface.dispatch.vm.call(iface.dispatch.vm.loader_data, ffi.new("GuestContractInstance"),
                               tonumber(a[2]), rest, res, nil, err)
        if err[0].code ~= 0 then out[0] = 1000000 + err[0].code
        elseif res[0] >= 1000000 then out[0] = res[0]
        else out[0] = res[0] * 10 + tag end
    end
end
local function with_instance(_, args_ptr, out_ptr)
    local a = ffi.cast("const uint64_t *", ffi.cast("uintptr_t", args_ptr))
    local out = ffi.cast("uint64_t *", ffi.cast("uintptr_t", out_ptr))
    local iface = ffi.cast("const GuestContractInterface *", a[0])
    local inst = ffi.new("GuestContractInstance[1]")
    iface.create_instance(iface.dispatch.vm.loader_data, HOST, nil, inst)
    local none, res, err = ffi.new("uint64_t[1]"), ffi.new("uint64_t[1]"), ffi.new("AbiError[1]")
    iface.dispatch.vm.call(iface.dispatch.vm.loader_data, inst[0], 0, none, res, nil, err)
    iface.destroy_instance(iface.dispatch.vm.loader_data, HOST, inst[0])
    local after = ffi.new("AbiError[1]")  -- the destroyed instance is gone
    iface.dispatch.vm.call(iface.dispatch.vm.loader_data, inst[0], 0, none, res, nil, after)
    out[0] = inst[0].data == nil and 2000000 or err[0].code ~= 0 and 1000000 + err[0].code
             or after[0].code ~= 6 and 3000000 or res[0]
end
function polyplug_init(host_ptr)
    HOST = ffi.cast("const HostApi *", ffi.cast("uintptr_t", host_ptr))
    local regs = {}
    for name, tag in pairs(%s) do
        regs[name] = { factory = function() return { tag = tag } end,
                       functions = { [0] = hop(tag), [1] = with_instance } }
    end
    return regs, { code = 0 }
end
"""

REENTRANT = 1000000 + polyplug.AbiErrorCode.ReentrantCall


def make_bundle(root: Path, name: str, lua: str) -> Path:
    d = root / name
    d.mkdir()
    (d / "manifest.toml").write_text(
        f'name = "{name}"\nid = {polyplug.bundle_id(name)}\nloader = "lua"\nfile = "bundle.lua"\n')
    (d / "bundle.lua").write_text(textwrap.dedent(lua))
    return d


@pytest.fixture
def rt(tmp_path: Path) -> Any:
    runtime = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).logger(
        lambda *_: None).build()
    runtime.load_bundle(make_bundle(tmp_path, "x", HOP % '{ ["t.a"] = 1, ["t.b"] = 2 }'))
    runtime.load_bundle(make_bundle(tmp_path, "y", HOP % '{ ["t.c"] = 3 }'))
    yield runtime
    runtime.close()


def iface(rt: Any, contract: str) -> Any:
    return rt.resolve_guest_contract(
        rt.find_guest_contract(polyplug.guest_contract_id(contract, 1), 1))


def hops(rt: Any, path: str, instance: Any = None) -> int:
    """Call the first contract of `path` ("a>b>c") with the rest as hops."""
    names = [f"t.{p}" for p in path.split(">")]
    ifaces = [iface(rt, n) for n in names]
    args = ffi.new("uint64_t[]", 1 + 2 * (len(names) - 1))
    args[0] = len(names) - 1
    for i, target in enumerate(ifaces[1:]):
        args[1 + 2 * i] = int(ffi.cast("uintptr_t", target))
        args[2 + 2 * i] = 0
    out = ffi.new("uint64_t *")
    err = ffi.new("AbiError *")
    data = ffi.NULL if instance is None else instance.data
    cid = 0 if instance is None else instance.contract_id
    lib.pp_call(ifaces[0], data, cid, 0, args, out, ffi.NULL, err)
    assert err.code == 0, ffi.string(err.message.ptr, err.message.len)
    return int(out[0])


@pytest.mark.parametrize("path, expected", [
    ("a", 1),
    ("a>a", REENTRANT),          # the same contract, directly
    ("a>b", 21),                 # another contract of the same bundle: allowed (upstream)
    ("a>c", 31),                 # another bundle
    ("a>c>a", REENTRANT),        # back into a running contract through another bundle
    ("a>b>a", REENTRANT),        # ... or through a sibling contract
    ("a>c>b", 231),              # the same bundle again, but another contract
    ("a>b>c", 321),
    ("a>b>c>a", REENTRANT),
    ("c>a>b", 213),
])
def test_reentry_is_refused_per_contract_like_upstream(rt: Any, path: str,
                                                       expected: int) -> None:
    assert hops(rt, path) == expected
    assert hops(rt, "a>b") == 21  # and the VM is fine afterwards


def test_nested_calls_with_instances(rt: Any) -> None:
    a = iface(rt, "t.a")
    inst = ffi.new("GuestContractInstance *")
    host = rt.host_api
    a.create_instance(a.dispatch.vm.loader_data, host, ffi.NULL, inst)
    assert inst.data != ffi.NULL
    assert hops(rt, "a>b", instance=inst) == 21
    assert hops(rt, "a>a", instance=inst) == REENTRANT
    # a guest creates, calls and destroys an instance of a sibling contract mid-call
    out = ffi.new("uint64_t *")
    err = ffi.new("AbiError *")
    for target, expected in (("t.b", 2), ("t.c", 3), ("t.a", 2000000)):
        args = ffi.new("uint64_t[1]", [int(ffi.cast("uintptr_t", iface(rt, target)))])
        lib.pp_call(a, ffi.NULL, 0, 1, args, out, ffi.NULL, err)
        assert (err.code, int(out[0])) == (0, expected), target
    a.destroy_instance(a.dispatch.vm.loader_data, host, inst[0])


def test_nested_calls_through_the_python_call_layer(rt: Any) -> None:
    # the Python layer packs (u64, u64, u64) as the guest reads it: {n, iface, fn}
    hop = rt.contract("t.a", 1).function(0, ["u64", "u64", "u64"], "u64")
    for target, expected in (("t.b", 21), ("t.c", 31), ("t.a", REENTRANT)):
        assert hop(1, int(ffi.cast("uintptr_t", iface(rt, target))), 0) == expected


LOOP = """
local ffi = require("ffi")
require("abi")
-- args = 3000 interface pointers: another bundle's, then a sibling contract's.  The loop
-- creates an instance of each through HostApi.create_guest_instance (pointer arguments
-- only, so LuaJIT compiles the call): it gets compiled while it calls the other bundle,
-- and then the same machine code calls the sibling
local function loop(_, args_ptr, out_ptr)
    local a = ffi.cast("const uint64_t *", ffi.cast("uintptr_t", args_ptr))
    local out = ffi.cast("uint32_t *", ffi.cast("uintptr_t", out_ptr))
    local inst = ffi.new("GuestContractInstance[1]")
    local made, refused = 0, 0
    for i = 1, 3000 do
        local iface = ffi.cast("const GuestContractInterface *", a[i - 1])
        HOST.create_guest_instance(HOST, iface, nil, inst)
        if inst[0].data ~= nil then
            made = made + 1  -- (destroy_guest_instance takes a struct by value: NYI)
        else
            refused = refused + 1
        end
    end
    out[0], out[1] = made, refused
end
function polyplug_init(host_ptr)
    HOST = ffi.cast("const HostApi *", ffi.cast("uintptr_t", host_ptr))
    return { ["t.loop"] = { factory = function() return {} end, functions = {
                 [0] = function(...) jit.on(loop, true) return loop(...) end,
                 [1] = function(...) jit.off(loop, true) return loop(...) end } },
             ["t.sibling"] = { factory = function() return {} end, functions = {} } },
           { code = 0 }
end
"""


def test_reentry_from_compiled_code_is_refused_not_a_crash(tmp_path: Path) -> None:
    # LuaJIT cannot re-enter a state from a C function a trace called (its own FFI
    # callbacks abort the process there): compiled code that enters a sibling contract
    # is refused (ReentrantCall, naming the JIT); with the JIT off for the function,
    # every call runs.  (vm.call itself is never compiled: it takes structs by value.)
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).logger(
            lambda *_: None).build() as rt:
        rt.load_bundle(make_bundle(tmp_path, "loop", LOOP))
        rt.load_bundle(make_bundle(tmp_path, "other", """
            function polyplug_init()
                return { ["t.other"] = { factory = function() return {} end,
                                         functions = {} } }, { code = 0 }
            end
        """))
        other, sibling = (int(ffi.cast("uintptr_t", iface(rt, name)))
                          for name in ("t.other", "t.sibling"))
        args = ffi.new("uint64_t[3000]", [other] * 1500 + [sibling] * 1500)
        loop = iface(rt, "t.loop")
        out = ffi.new("uint32_t[2]")
        err = ffi.new("AbiError *")
        lib.pp_call(loop, ffi.NULL, 0, 0, args, out, ffi.NULL, err)
        made, refused = out
        assert err.code == 0 and made + refused == 3000 and made >= 1500, list(out)
        assert refused > 0  # the compiled call site
        text = ffi.new("uint8_t[512]")
        n = rt.host_api.get_last_error(rt.host_api, text, 512)
        assert b"JIT-compiled code" in ffi.buffer(text, n)[:]
        lib.pp_call(loop, ffi.NULL, 0, 1, args, out, ffi.NULL, err)
        assert (err.code, list(out)) == (0, [3000, 0])


@pytest.mark.parametrize("sandbox", ["none", "restricted"])
def test_ffi_is_a_global_as_upstream(tmp_path: Path, sandbox: str) -> None:
    # upstream opens the FFI library into _G: bundles use `ffi.cast` without a require
    lua = """
    function polyplug_init()
        assert(ffi == require("ffi"), "the global is the library")
        return { ["t.ffi"] = { factory = function() return {} end, functions = {
            [0] = function(_, _, out) ffi.cast("uint32_t *", out)[0] = 42 end } } }, { code = 0 }
    end
    """
    config = polyplug.LuaConfig(sandbox=sandbox)  # type: ignore[arg-type]
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader(config)).build() as rt:
        rt.load_bundle(make_bundle(tmp_path, "ffi", lua))
        assert rt.contract("t.ffi", 1).function(0, [], "u32")() == 42


STATUS = """
function polyplug_init()
    return { ["t.status"] = { factory = function() return {} end, functions = {} } }, %s
end
"""


@pytest.mark.parametrize("status, error", [
    ('{ code = 0 }', None),
    ('{}', None),
    ('{ code = "0" }', None),
    ('{ code = "7" }', "Lua polyplug_init returned error code 7"),     # coerced, as upstream
    ('{ code = " 0x10 " }', "Lua polyplug_init returned error code 16"),
    ('{ code = 300, message = "no licence" }', "no licence"),
    ('{ code = "300", message = 42 }', "42"),                          # a number message
    ('{ code = 5, message = {} }', "Lua polyplug_init returned error code 5"),
    ('{ code = "seven" }', 'status whose code is "seven"'),
    ('{ code = true }', "status whose code is a boolean value"),
    ('{ code = 7.5 }', "status whose code is 7.5"),
    ('{ code = -1 }', "status whose code is -1"),
    ('{ code = 2^32 }', "status whose code is 4294967296"),
])
def test_init_status_code_is_coerced_like_upstream(tmp_path: Path, status: str,
                                                   error: str | None) -> None:
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as rt:
        d = make_bundle(tmp_path, "status", STATUS % status)
        if error is None:
            rt.load_bundle(d)
            assert rt.list_bundles() == [polyplug.bundle_id("status")]
        else:
            with pytest.raises(polyplug.InitFailed) as info:
                rt.load_bundle(d)
            assert error in str(info.value)
            assert rt.list_bundles() == []
