# A nested call (another contract of the bundle whose VM the thread runs) works above
# the guest's frame: its traceback handler and arena_alloc come from the registry, and
# vm.call builds its frame there.  Every way out of it (success, a missing instance, an
# error, a time limit) must leave the guest's stack as it found it.
from common import *
import tempfile, time

tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
require("abi")
local function ptr(x) return ffi.cast("uintptr_t", x) end
local function nest(_, args_ptr, out_ptr, arena_ptr)
    -- args: the sibling's interface, its fn id, an instance id (0: default), rounds
    local a = ffi.cast("const uint64_t *", ptr(args_ptr))
    local out = ffi.cast("uint64_t *", ptr(out_ptr))
    local iface = ffi.cast("const GuestContractInterface *", a[0])
    local inst = ffi.new("GuestContractInstance")
    inst.data = ffi.cast("void *", a[2])
    local res, err = ffi.new("uint64_t[1]"), ffi.new("AbiError[1]")
    local arena = ffi.cast("CallArena *", ptr(arena_ptr or 0))
    for _ = 1, tonumber(a[3]) do
        res[0] = 0
        iface.dispatch.vm.call(iface.dispatch.vm.loader_data, inst, tonumber(a[1]), nil, res,
                               arena, err)
    end
    out[0], out[1] = err[0].code, res[0]
    local msg = err[0].message
    MSG = msg.ptr ~= nil and ffi.string(msg.ptr, msg.len) or ""
end
local function message(_, _, out_ptr)
    local out = ffi.cast("uint64_t *", ptr(out_ptr))
    out[0] = MSG:find("boom", 1, true) and 1 or 0
    out[1] = MSG:find("stack traceback", 1, true) and 1 or 0
end
local function uses_arena(_, _, out_ptr, arena_ptr, arena_alloc)
    local p = type(arena_alloc) == "function" and arena_alloc(24, arena_ptr) or 0
    if p ~= 0 then ffi.cast("uint64_t *", ptr(p))[2] = 7 end
    ffi.cast("uint64_t *", ptr(out_ptr))[0] = (p ~= 0 and arena_ptr ~= 0) and 42 or 1
end
function polyplug_init()
    return {
        ["t.outer"] = { factory = function() return {} end,
                        functions = { [0] = nest, [1] = message } },
        ["t.inner"] = { factory = function() return {} end, functions = {
            [0] = uses_arena,
            [1] = function() error("boom") end,
            [2] = function() while true do end end } },
    }, { code = 0 }
end
"""
rt = runtime(polyplug.LuaConfig(call_timeout=30))
rt.load_bundle(make_bundle(tmp, "n", LUA))
outer = rt.resolve_guest_contract(handle(rt, "t.outer"))
inner = rt.resolve_guest_contract(handle(rt, "t.inner"))
arena = lib.pp_arena_new(rt.host_api, 4096)


def nest(fn, rounds=1, instance=0, timeout=None):
    """t.outer fn 0 calling t.inner `fn` `rounds` times: (outer code, inner code, inner out)."""
    args = ffi.new("uint64_t[4]", [int(ffi.cast("uintptr_t", inner)), fn, instance, rounds])
    out = ffi.new("uint64_t[2]")
    err = ffi.new("AbiError *")
    if timeout:
        lib.pp_set_call_limits(int(timeout * 1e9), ffi.NULL)
    lib.pp_call(outer, ffi.NULL, 0, 0, args, out, arena, err)
    lib.pp_arena_reset(arena)
    return err.code, int(out[0]), int(out[1])


# many rounds: a frame that leaked a slot per call would overflow the guest's stack
print("arena through a nested call:", nest(0, rounds=100000) == (0, 0, 42))
print("missing instance:", nest(0, rounds=100000, instance=12345) ==
      (0, polyplug.AbiErrorCode.FunctionNotAvailable, 0))
print("nested error:", nest(1, rounds=3000)[:2] == (0, polyplug.AbiErrorCode.Generic))
out = ffi.new("uint64_t[2]")
err = ffi.new("AbiError *")
lib.pp_call(outer, ffi.NULL, 0, 1, ffi.NULL, out, ffi.NULL, err)
print("nested error text:", (int(out[0]), int(out[1])) == (1, 0))
t0 = time.monotonic()
code, inner_code, _ = nest(2, timeout=0.3)  # a pending deadline (0.1 s or more)
print("nested spin stopped:", inner_code == 200 or code == 200)
print("within the outer limit:", time.monotonic() - t0 < 5)
print("after:", nest(0, rounds=1000) == (0, 0, 42))
lib.pp_arena_free(arena)
rt.close()
print("finished")
