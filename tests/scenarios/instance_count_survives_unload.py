# Breaker (issue 11 item 9 regression): live-instance counts survive an unload.
# A create_instance whose factory is still running when its bundle is unloaded counts
# the instance *after* unload_locked reset the counts (host_create_guest_instance
# counts after iface->create_instance returned, pp_hostapi.c:502), so the contract id
# keeps one live instance that died with the VM.  Load the bundle again and unload
# it: the runtime warns about an instance that does not exist.
import sys, os, time, threading
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scenarios"))
from common import *
import tempfile
tmp = tempfile.mkdtemp()
LUA = """
function polyplug_init(h)
    return { ["t.inst"] = { factory = function()
        local t = os.clock() + 0.3
        while os.clock() < t do end
        return {}
    end, functions = { [0] = function() end } } }, { code = 0 }
end
"""
d = make_bundle(tmp, "inst", LUA)
records = []
rt = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).logger(
    lambda level, scope, message: records.append(message)).build()
rt.load_bundle(d)
c = rt.contract("t.inst", 1)
res = []
def create():
    try:
        res.append(c.instance())
    except Exception as e:
        res.append(e)
t = threading.Thread(target=create); t.start()
time.sleep(0.1)
rt.unload_bundle(polyplug.bundle_id("inst"))
t.join()
print("create during unload:", res)
rt.load_bundle(d)            # a fresh VM: no instances exist
del records[:]
rt.unload_bundle(polyplug.bundle_id("inst"))
print("warnings at the second unload:", [r for r in records if "live guest instance" in r])
os._exit(0)
