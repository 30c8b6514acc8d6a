# After a call during which the memory limit refused an allocation, call_in_vm runs a
# full collection (ppi_lua_vm_collect) -- after ppi_lua_limits_end has unpublished the
# call from the watchdog, and with the memory limit lifted (m->limit = 0) "for the
# protected call itself".  The guest's __gc finalizers run inside that collection:
#   * a finalizer that loops hangs the caller: no deadline is watched any more, so the
#     call_timeout never fires (expected: CallTimeout, or the call returning within
#     its limit, as for every other finalizer: docs/limits.md "finalizers");
#   * a finalizer that allocates is not bounded by memory_limit at all (expected: the
#     cap holds; seen: the VM grows far past it).
from common import *
import os, tempfile, time
from polyplug.signature import signature
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
local function fill_then_drop(fin)
    pcall(function()                   -- reach the limit, catch the error
        local t = {}
        for i = 1, 1e9 do t[i] = string.rep("x", 1000) .. i end
    end)
    ffi.gc(ffi.new("int[1]"), fin)     -- garbage with a finalizer
end
local function loop_in_gc() fill_then_drop(function() while true do end end) end
HOARD = {}
local function grow_in_gc()
    fill_then_drop(function()
        for i = 1, 64 do HOARD[i] = string.rep(string.char(64 + i % 26), 1024 * 1024) end
    end)
end
local function ok(_, _, out) ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = 7 end
function polyplug_init()
    return { ["t.gc"] = { factory = function() return {} end,
        functions = { [0] = loop_in_gc, grow_in_gc, ok } } }, { code = 0 }
end
"""
LIMIT = 8 << 20
sig = {n: signature(n, i, [], "u32" if n == "ok" else None)
       for i, n in enumerate(["loop_in_gc", "grow_in_gc", "ok"])}

def fresh(name):
    rt = runtime(polyplug.LuaConfig(memory_limit=LIMIT, call_timeout=0.5))
    rt.load_bundle(make_bundle(tmp, name, LUA))
    return rt, rt.contract("t.gc", 1, signatures=sig)

def attempt(c, name):
    t0 = time.monotonic()
    try:
        getattr(c, name)()
        outcome = "returned"
    except polyplug.PolyplugError as exc:
        outcome = type(exc).__name__
    print(name, outcome, "in %.2f s" % (time.monotonic() - t0), flush=True)

rt, c = fresh("grow")
before = rt.bundle_memory(polyplug.bundle_id("grow"))
attempt(c, "grow_in_gc")
after = rt.bundle_memory(polyplug.bundle_id("grow"))
print("memory_limit %d MiB, heap grew by %d MiB: cap held: %s"
      % (LIMIT >> 20, (after - before) >> 20, after - before <= LIMIT), flush=True)

rt, c = fresh("loop")
t = threading.Thread(target=attempt, args=(c, "loop_in_gc"), daemon=True)
t.start(); t.join(10)
if t.is_alive():
    print("HUNG: loop_in_gc still running 10 s after its 0.5 s call_timeout", flush=True)
    os._exit(1)
print("next call:", c.ok())
print("process survived")
