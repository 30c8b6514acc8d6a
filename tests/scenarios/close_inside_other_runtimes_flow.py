# Lifecycle review finding: close a runtime from inside another runtime's flow (here: rt1's log callback
# during a bundle init, rt1->ops held).  rt2's idle VMs are retired with their close
# deferred until this thread holds no flow lock (ppi_defer counts flow locks of *any*
# runtime), but pp_runtime_close(rt2) then waits for open_vms == 0 — which only this
# thread can bring about.  Expected: close returns at once (nothing is running).
# Observed: close waits its whole timeout and raises RuntimeBusy; with the default
# timeout (10 s) the callback stalls the load for 10 s; garbage collection of rt2
# (pp_runtime_free) then waits another 10 s and leaks the runtime.
import sys, os, time
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scenarios"))
from common import *
import tempfile
tmp = tempfile.mkdtemp()
LOGGING = """
local pg = require("polyplug_guest")
function polyplug_init(h)
    pg.log(h, pg.LogLevel.Warn, "guest", "init")
    return { ["t.a"] = { factory = function() return {} end, functions = { [0] = function() end } } }, { code = 0 }
end
"""
a = make_bundle(tmp, "a", LOGGING)
g = make_bundle(tmp, "g", GOOD_LUA)
out = []
def log(level, scope, message):
    if message != "init":
        return
    rt2 = runtime()
    rt2.load_bundle(g)
    t0 = time.monotonic()
    try:
        rt2.close(timeout=3)
        out.append("rt2.close ok in %.2f s" % (time.monotonic() - t0))
    except Exception as e:
        out.append("rt2.close raised after %.2f s: %s: %s" % (time.monotonic() - t0, type(e).__name__, e))
rt1 = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).logger(log).build()
run_with_timeout(lambda: rt1.load_bundle(a), secs=30)
print("\n".join(out))
# The same without an explicit close: a Runtime dropped (refcount / GC) inside the
# callback runs pp_runtime_free, which waits PPI_CLOSE_WAIT_NS (10 s) and then leaks.
del out[:]
def log2(level, scope, message):
    if message != "init":
        return
    rt2 = runtime()
    rt2.load_bundle(g)
    t0 = time.monotonic()
    del rt2                      # the last reference: ffi.gc -> pp_runtime_free
    out.append("dropping rt2 took %.2f s" % (time.monotonic() - t0))
rt3 = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).logger(log2).build()
run_with_timeout(lambda: rt3.load_bundle(a), secs=30)
print("\n".join(out))
os._exit(0)
