# Lifecycle review finding: Runtime.close(timeout=1) is documented to wait at most `timeout` for calls
# still running, then raise RuntimeBusy.  But pp_runtime_close first takes the flow
# lock with an unbounded pthread_mutex_lock (ppi_ops_lock, pp_runtime.c:185), so a
# load whose init is still running (here: an init that never ends, no call timeout
# configured — the same guest code in a *call* gets RuntimeBusy after 1 s) blocks
# close forever.  The same holds for a reload waiting for its VM lock or an on_reload
# callback that blocks.
import sys, os, time, threading
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scenarios"))
from common import *
import tempfile
tmp = tempfile.mkdtemp()
SLOW_INIT = """
function polyplug_init(h)
    while true do end
end
"""
SLOW_CALL = """
function polyplug_init(h)
    return { ["t.slow"] = { factory = function() return {} end,
        functions = { [0] = function() while true do end end } } }, { code = 0 }
end
"""
def attempt(label, start_work):
    rt = runtime()
    start_work(rt)
    time.sleep(0.3)
    out = []
    def close():
        t0 = time.monotonic()
        try:
            rt.close(timeout=1)
            out.append("ok")
        except Exception as e:
            out.append("%s after %.2f s" % (type(e).__name__, time.monotonic() - t0))
    t = threading.Thread(target=close, daemon=True); t.start(); t.join(5)
    print("%s: close(timeout=1) %s" % (label, out[0] if out else "still blocked after 5 s (HUNG)"))
# 1. a call that never ends: close gives up after 1 s, as documented
def call_forever(rt):
    rt.load_bundle(make_bundle(tmp, "slowcall", SLOW_CALL))
    h = handle(rt, "t.slow")
    threading.Thread(target=lambda: checked_call(rt, h, 0), daemon=True).start()
attempt("a call that never ends", call_forever)
# 2. an init that never ends
def init_forever(rt):
    d = make_bundle(tmp, "slowinit", SLOW_INIT)
    threading.Thread(target=lambda: rt.load_bundle(d), daemon=True).start()
attempt("an init that never ends", init_forever)
os._exit(0)
