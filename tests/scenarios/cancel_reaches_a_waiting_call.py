# Fresh-eyes review of cperf2: a call with a cancel token (and no time limit) that waited
# for a busy bundle waited without a bound: cancelling its token did nothing until the
# call holding the bundle ended (forever, for a holder without limits).  The token now
# ends the wait too (Cancelled), with or without a time limit next to it, while a
# waiter whose token stays unset still gets the bundle when it is free.
from common import *
import tempfile, time
from polyplug.signature import signature
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
local function spin() while true do end end
local function hold() local t = os.clock() + 0.5 while os.clock() < t do end end
local function answer(_, _, out) ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = 42 end
function polyplug_init()
    return { ["t.w"] = { factory = function() return {} end,
                         functions = { [0] = spin, hold, answer } } }, { code = 0 }
end
"""
rt = runtime(polyplug.LuaConfig())
rt.load_bundle(make_bundle(tmp, "w", LUA))
SIGS = {"spin": signature("spin", 0), "hold": signature("hold", 1),
        "answer": signature("answer", 2, [], "u32")}
holder_token = polyplug.CancelToken()
holder = rt.contract("t.w", 1, signatures=SIGS, cancel=holder_token)

def hold_bundle():
    try:
        holder.spin()
    except polyplug.Cancelled:
        pass

th = threading.Thread(target=hold_bundle, daemon=True)
th.start()
threading.Timer(6.0, holder_token.cancel).start()   # so a broken build fails, not hangs
time.sleep(0.2)
for label, limits in (("token", {}), ("token and a 60 s limit", {"timeout": 60})):
    token = polyplug.CancelToken()
    waiter = rt.contract("t.w", 1, signatures=SIGS).with_limits(cancel=token, **limits)
    timer = threading.Timer(0.3, token.cancel)
    timer.start()
    t0 = time.monotonic()
    try:
        outcome = "returned %r" % waiter.answer()
    except polyplug.PolyplugError as exc:
        outcome = type(exc).__name__ + (" (waited)" if "waited for bundle" in str(exc) else "")
    took = time.monotonic() - t0
    print("%s: %s, ended by the cancel: %s" % (label, outcome, 0.25 <= took < 2.5), flush=True)
    timer.join()
holder_token.cancel()
th.join(10)
print("holder stopped:", not th.is_alive())

# a waiter whose token is never cancelled waits for the holder, then runs
token = polyplug.CancelToken()
th = threading.Thread(target=rt.contract("t.w", 1, signatures=SIGS).hold, daemon=True)
th.start()
time.sleep(0.1)
print("uncancelled waiter:", rt.contract("t.w", 1, signatures=SIGS, cancel=token).answer())
th.join(10)
rt.close()
print("finished")
