# Issue 11.2: an unload on one thread while a checked call on another runs a guest that
# performs a failing load.  Draining held drain_lock for the whole wait: both hung.
from common import *
import tempfile, time
tmp = tempfile.mkdtemp()
bad = make_bundle(tmp, "bad", "function polyplug_init() error('boom') end")
x = make_bundle(tmp, "x", guest_loader_lua(str(bad), spin=0.4))
idle = make_bundle(tmp, "idle", GOOD_LUA)
rt = runtime()
rt.load_bundle(x)
rt.load_bundle(idle)
h = handle(rt, "t.outer")
results = {}
def a(): results["a"] = checked_call(rt, h, 0)
def b():
    time.sleep(0.1)
    t0 = time.monotonic()
    rt.unload_bundle(polyplug.bundle_id("idle"))
    results["b"] = time.monotonic() - t0
finish([a, b], secs=20)
print("a:", results.get("a"))
print("unload took < 0.3 s:", results.get("b", 99) < 0.3)
