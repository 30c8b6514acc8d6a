# Issue 12.5 / 17: a limit of 0.1 s or more reads no clock when the call starts; its
# deadline counts from the watchdog's first look at the call (or from the moment the
# calling thread needs the value).  It must still stop a runaway call, never before the
# limit, and still reach into nested calls and waits for a busy bundle.
from common import *
import tempfile, time
from polyplug.signature import signature
tmp = tempfile.mkdtemp()
B = """
local ffi = require("ffi")
local function spin() while true do end end
local function hold() local t = os.clock() + 1.5 while os.clock() < t do end end
local function answer(_, _, out) ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = 42 end
function polyplug_init()
    return { ["t.b"] = { factory = function() return {} end,
                         functions = { [0] = spin, hold, answer } } }, { code = 0 }
end
"""
A = RELAY_LUA
SIGS = {"spin": signature("spin", 0), "hold": signature("hold", 1),
        "answer": signature("answer", 2, [], "u32")}
rt = runtime(polyplug.LuaConfig(call_timeout=1.0))   # every call: a 1 s limit
rt.load_bundle(make_bundle(tmp, "b", B))
rt.load_bundle(make_bundle(tmp, "a", A))
b = rt.contract("t.b", 1, signatures=SIGS)

# many short calls, each publishing a pending deadline the watchdog may fix
print("short calls:", all(b.answer() == 42 for _ in range(20000)))

t0 = time.monotonic()
try:
    b.spin(); print("runaway call returned")
except polyplug.CallTimeout as exc:
    took = time.monotonic() - t0
    print("runaway call stopped:", "after 1.000 s" in str(exc), "not early:", took >= 1.0,
          "bounded:", took < 10)
print("next call:", b.answer())

# short limits (read from the clock at the call) and the shortest pending ones are never
# early either, over many tries
early = []
for limit in (0.02, 0.05, 0.1, 0.15) * 5:
    t0 = time.monotonic()
    try:
        b.with_limits(timeout=limit).spin()
    except polyplug.CallTimeout:
        if time.monotonic() - t0 < limit:
            early.append(limit)
print("short limits never early:", early == [])

# a nested call inherits what is left of the outer call's pending deadline
b_iface = rt.resolve_guest_contract(handle(rt, "t.b"))
a = rt.contract("t.a", 1, signatures={"set": signature("set", 0, ["u64"]),
                                      "call_b": signature("call_b", 1, [], "u32")})
a.set(int(ffi.cast("uintptr_t", b_iface)))
t0 = time.monotonic()
try:
    code = a.with_limits(timeout=1.2).call_b()
    print("nested call stopped:", code == 200)
except polyplug.CallTimeout:
    print("nested call stopped:", True)
took = time.monotonic() - t0
print("nested: not early:", took >= 1.2, "bounded:", took < 10)

# waiting for a busy bundle counts against a pending deadline
th = threading.Thread(target=b.with_limits(timeout=30).hold); th.start(); time.sleep(0.1)
t0 = time.monotonic()
try:
    b.answer(); print("queued call ran")
except polyplug.CallTimeout as exc:
    took = time.monotonic() - t0
    print("queued call: CallTimeout", "waiting for bundle" in str(exc), "not early:",
          took >= 1.0, "bounded:", took < 10)
th.join()

# a cancel token next to a long limit still stops the call
token = polyplug.CancelToken()
timer = threading.Timer(0.2, token.cancel); timer.start()
try:
    b.with_limits(timeout=60, cancel=token).spin(); print("cancelled call returned")
except polyplug.Cancelled:
    print("cancelled under a long limit:", True)
timer.join()
print("after all:", b.answer())
