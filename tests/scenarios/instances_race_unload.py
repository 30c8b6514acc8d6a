# Issue 11.7: calls, instance creation and instance close on three threads while a fourth
# unloads and reloads the same bundle crashed within seconds (use-after-free).
from common import *
import tempfile, time, random
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
local function get(self, _, out) ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = self.n end
function polyplug_init()
    return { ["t.inst"] = { factory = function() return { n = 7 } end, functions = { [0] = get } } }, { code = 0 }
end
"""
d = make_bundle(tmp, "inst", LUA)
rt = runtime(hot_reload_enabled=True)
rt.load_bundle(d)
from polyplug.signature import signature
sig = {"get": signature("get", 0, [], "u32")}
stop = time.monotonic() + 3.0
bad = []
counts = {"ok": 0, "typed": 0}
def contract():
    while True:
        try:
            return rt.contract("t.inst", 1, signatures=sig)
        except polyplug.PluginNotFound:
            if time.monotonic() > stop: return None
def caller():
    while time.monotonic() < stop:
        c = contract()
        if c is None: return
        try:
            assert c.get() == 7; counts["ok"] += 1
        except (polyplug.StaleHandle, polyplug.PluginNotFound): counts["typed"] += 1
        except Exception as exc: bad.append(repr(exc))
def instances(close):
    held = []
    while time.monotonic() < stop:
        c = contract()
        if c is None: return
        try:
            i = c.instance()
            held.append(i)
            assert i.get() == 7
            if close and held: held.pop(random.randrange(len(held))).close()
            counts["ok"] += 1
        # an instance dies with the VM it was made in (a reload or unload since)
        except (polyplug.StaleHandle, polyplug.PluginNotFound,
                polyplug.FunctionNotAvailable): counts["typed"] += 1
        except Exception as exc: bad.append(repr(exc))
    for i in held: i.close()
def churn():
    bid = polyplug.bundle_id("inst")
    while time.monotonic() < stop:
        try:
            if random.random() < 0.5:
                rt.unload_bundle(bid); rt.load_bundle(d)
            else:
                rt.reload_bundle(d)
        except polyplug.PolyplugError as exc: bad.append("churn " + repr(exc))
finish([caller, lambda: instances(False), lambda: instances(True), churn], secs=60)
print("unexpected:", bad[:5])
print("calls ok:", counts["ok"] > 100)
rt.close()
print("process survived")
