# Issue 11.1b: a guest of bundle X loads a bundle whose init fails while another thread
# waits to call X.  The failed load used to drain calls with X's VM lock held.
from common import *
import tempfile, time
tmp = tempfile.mkdtemp()
bad = make_bundle(tmp, "bad", "function polyplug_init() error('boom') end")
x = make_bundle(tmp, "x", guest_loader_lua(str(bad), spin=0.3))
rt = runtime()
rt.load_bundle(x)
h = handle(rt, "t.outer")
results = {}
def a(): results["a"] = checked_call(rt, h, 0)
def b():
    time.sleep(0.1)
    results["b"] = checked_call(rt, h, 1)
finish([a, b], secs=20)
print("a:", results.get("a"))
print("b:", results.get("b"))
