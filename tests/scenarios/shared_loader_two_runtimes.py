# Probe (held up): two runtimes sharing one LuaLoader, the same bundle loaded in both,
# threads calling, unloading/reloading in each, then one runtime closed and collected
# while the other keeps working; finally the other closes.  Expected: no crash, typed
# errors only, the surviving runtime unaffected.
import sys, os, time, threading, gc, random
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scenarios"))
from common import *
import tempfile
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
function polyplug_init(h)
    return { ["t.s"] = { factory = function() return {} end,
        functions = { [0] = function(_, _, out) ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = 7 end } } }, { code = 0 }
end
"""
d = make_bundle(tmp, "s", LUA)
ld = polyplug.LuaLoader()
cfg = polyplug.RuntimeConfig(hot_reload_enabled=True)
rts = [polyplug.RuntimeBuilder().config(cfg).loader(ld).build() for _ in range(2)]
for rt in rts:
    rt.load_bundle(d)
stop = time.monotonic() + 3
bad = []
def caller(rt):
    while time.monotonic() < stop:
        try:
            h = handle(rt, "t.s")
        except polyplug.PluginNotFound:
            continue
        out = ffi.new("uint32_t[1]")
        code, msg = checked_call(rt, h, 0, out)
        if code not in (0, 5) or (code == 0 and out[0] != 7):
            bad.append((code, msg, out[0]))
def churner(rt):
    r = random.Random(1)
    while time.monotonic() < stop:
        try:
            if r.random() < 0.5:
                rt.reload_bundle(d)
            else:
                rt.unload_bundle(polyplug.bundle_id("s")); rt.load_bundle(d)
        except polyplug.PolyplugError as e:
            if type(e).__name__ not in ("BundleNotFound", "AlreadyLoaded"):
                bad.append(repr(e))
calls = [0]
threads = [threading.Thread(target=f, args=(rt,)) for rt in rts for f in (caller, caller, churner)]
for t in threads: t.start()
for t in threads: t.join(30)
print("hung threads:", sum(t.is_alive() for t in threads))
rts[0].close(); del rts[0]; gc.collect()
h = handle(rts[0], "t.s"); out = ffi.new("uint32_t[1]")
print("survivor call:", checked_call(rts[0], h, 0, out), out[0])
rts[0].close()
print("unexpected results:", bad[:5], len(bad))
