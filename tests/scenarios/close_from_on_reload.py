# Lifecycle review finding: Runtime.close() from the runtime's own on_reload callback (rt->ops held).
# Retired VMs are deferred until the thread releases its last flow lock, but close
# waits for them: it runs out its whole timeout and raises RuntimeBusy, though no
# call is running anywhere.  Expected: close returns promptly.
import sys, os, time
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scenarios"))
from common import *
import tempfile
tmp = tempfile.mkdtemp()
g = make_bundle(tmp, "g", GOOD_LUA)
out = []
holder = {}
def on_reload(phase):
    if phase.type != polyplug.ReloadPhaseType.Preparing:
        return
    t0 = time.monotonic()
    try:
        holder["rt"].close(timeout=3)
        out.append("close ok in %.2f s" % (time.monotonic() - t0))
    except Exception as e:
        out.append("close raised after %.2f s: %s: %s" % (time.monotonic() - t0, type(e).__name__, e))
rt = polyplug.RuntimeBuilder().config(polyplug.RuntimeConfig(hot_reload_enabled=True)).loader(
    polyplug.LuaLoader()).on_reload(on_reload).build()
holder["rt"] = rt
rt.load_bundle(g)
def reload():
    try:
        rt.reload_bundle(g); out.append("reload ok")
    except Exception as e:
        out.append("reload raised: %s: %s" % (type(e).__name__, e))
run_with_timeout(reload, secs=30)
print("\n".join(out))
os._exit(0)
