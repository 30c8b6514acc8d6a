# Issue 11.8: unloading an idle bundle, or discarding a failed load, waited for every
# checked call in the runtime: a 3 s call elsewhere made them take 3 s.
from common import *
import tempfile, time
tmp = tempfile.mkdtemp()
SLOW = """
local function slow() local t = os.clock() + 3 while os.clock() < t do end end
function polyplug_init()
    return { ["t.slow"] = { factory = function() return {} end, functions = { [0] = slow } } }, { code = 0 }
end
"""
rt = runtime()
rt.load_bundle(make_bundle(tmp, "slow", SLOW))
rt.load_bundle(make_bundle(tmp, "idle", GOOD_LUA))
h = handle(rt, "t.slow")
th = threading.Thread(target=lambda: checked_call(rt, h, 0), daemon=True); th.start()
time.sleep(0.2)
t0 = time.monotonic(); rt.unload_bundle(polyplug.bundle_id("idle")); unload_s = time.monotonic() - t0
t0 = time.monotonic()
try:
    rt.load_bundle(make_bundle(tmp, "bad", "function polyplug_init() error('boom') end"))
except polyplug.InitFailed:
    pass
failed_s = time.monotonic() - t0
print("unload fast:", unload_s < 0.5, "failed load fast:", failed_s < 0.5)
th.join(10)
print("finished" if not th.is_alive() else "HUNG")
