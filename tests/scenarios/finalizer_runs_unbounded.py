# Lifecycle review finding: a guest __gc finalizer that never ends.  Finalizers run when a retired VM is
# closed (lua_close in ppi_lua_vm_close), on whichever thread closes it, with no count
# hook and no deadline — the loader's call_timeout bounds calls, factories and init, but
# not this guest code.  So:
#   1. close(timeout=1) never returns (the idle VM is closed inside ppi_ops_unlock);
#   2. a call with a 1 s timeout that happens to be the last one in a bundle unloaded
#      meanwhile never returns either (its vm_leave reaps and runs the finalizer), and
#      if it was a nested call, it blocks forever while still holding the outer VM lock.
import sys, os, time, threading
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scenarios"))
from common import *
import tempfile
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long s, ns; } fr_ts; int clock_gettime(int clock, fr_ts *ts); ]]
local ts = ffi.new("fr_ts")
local function now()  -- wall-clock (CLOCK_MONOTONIC): a loaded machine stretches CPU time
    ffi.C.clock_gettime(1, ts)
    return tonumber(ts.s) + tonumber(ts.ns) / 1e9
end
keep = nil
function polyplug_init(h)
    keep = ffi.gc(ffi.new("int[1]"), function() while true do end end)
    return { ["t.fin"] = { factory = function() return {} end,
        functions = { [0] = function() local t = now() + 0.5 while now() < t do end end } } }, { code = 0 }
end
"""
d = make_bundle(tmp, "fin", LUA)
lua = polyplug.LuaConfig(call_timeout=1.0)
# 1. close with a timeout
rt = runtime(lua)
rt.load_bundle(d)
res = []
def close():
    t0 = time.monotonic()
    try:
        rt.close(timeout=1); res.append("ok after %.2f s" % (time.monotonic() - t0))
    except Exception as e:
        res.append("%s after %.2f s" % (type(e).__name__, time.monotonic() - t0))
t = threading.Thread(target=close, daemon=True); t.start(); t.join(5)
print("1. close(timeout=1):", res[0] if res else "still running after 5 s (HUNG)")
# 2. a call with a 1 s limit, its bundle unloaded while it runs
rt2 = runtime(lua)
rt2.load_bundle(d)
c = rt2.contract("t.fin", 1).with_limits(timeout=5.0)  # far above its 0.5 s of spinning
res2 = []
def call():
    t0 = time.monotonic()
    try:
        c.function(0)(); res2.append("returned after %.2f s" % (time.monotonic() - t0))
    except Exception as e:
        res2.append("%s after %.2f s" % (type(e).__name__, time.monotonic() - t0))
t = threading.Thread(target=call, daemon=True); t.start()
time.sleep(0.2)
u = threading.Thread(target=lambda: rt2.unload_bundle(polyplug.bundle_id("fin")), daemon=True)
u.start(); u.join(2)
print("   unload:", "returned" if not u.is_alive() else "blocked")
t.join(8)
print("2. call with timeout=5 s:", res2[0] if res2 else "still running after 8 s (HUNG)")
os._exit(0)
