# Issue 11.1a: thread A is inside a checked call whose guest loads a bundle through
# HostApi.load_bundle; meanwhile thread B loads a bundle whose polyplug_init raises.  The
# failed load used to drain calls while holding the flow lock: both threads hung.
from common import *
import tempfile, time
tmp = tempfile.mkdtemp()
good = make_bundle(tmp, "good", GOOD_LUA)
bad = make_bundle(tmp, "bad", "function polyplug_init() error('boom') end")
outer = make_bundle(tmp, "outer", guest_loader_lua(str(good), spin=0.3))
rt = runtime()
rt.load_bundle(outer)
h = handle(rt, "t.outer")
results = {}
def a(): results["a"] = checked_call(rt, h, 0)
def b():
    time.sleep(0.1)
    try:
        rt.load_bundle(bad)
    except polyplug.InitFailed as exc:
        results["b"] = "InitFailed: " + str(exc)
finish([a, b], secs=20)
print("a:", results.get("a"))
print("b:", results.get("b"))
print("good loaded:", polyplug.bundle_id("good") in rt.list_bundles())
