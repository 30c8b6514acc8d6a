# Lifecycle review finding: two runtimes whose log callbacks load into each other.
# Thread 1 loads bundle a1 into rt1 (rt1->ops held during init); a1's init logs; rt1's
# log callback loads a bundle into rt2.  Thread 2 does the mirror image.  Each thread
# holds one runtime's flow lock and waits for the other's with pthread_mutex_lock (no
# bound: neither thread holds a VM lock, so ppi_ops_lock takes the unbounded branch).
# Expected: both loads finish or fail with a typed error.  Observed: HUNG forever.
import sys, os, threading
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scenarios"))
from common import *
import tempfile
tmp = tempfile.mkdtemp()
LOGGING = """
local pg = require("polyplug_guest")
function polyplug_init(h)
    pg.log(h, pg.LogLevel.Warn, "guest", "init of %s")
    return { ["t.%s"] = { factory = function() return {} end, functions = { [0] = function() end } } }, { code = 0 }
end
"""
dirs = {n: make_bundle(tmp, n, LOGGING % (n, n)) for n in ("a1", "a2", "b1", "b2")}
barrier = threading.Barrier(2, timeout=5)
rts = {}
def logger_for(me, other, target):
    def log(level, scope, message):
        if message == f"init of a{me}":
            barrier.wait()             # both threads are now inside a flow
            rts[other].load_bundle(dirs[target])
    return log
for me, other, target in ((1, 2, "b2"), (2, 1, "b1")):
    rts[me] = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).logger(
        logger_for(me, other, target)).build()
results = {}
def go(me):
    try:
        rts[me].load_bundle(dirs[f"a{me}"]); results[me] = "ok"
    except Exception as e:
        results[me] = f"{type(e).__name__}: {e}"
finish([lambda: go(1), lambda: go(2)], secs=20)
print(results)
os._exit(0)
