# Issue 12.6: a nested call got a fresh full timeout (A -> B overran A's deadline), and a
# call queued behind another waited for the VM lock without its own bound.
from common import *
import tempfile, time
from polyplug.signature import signature
tmp = tempfile.mkdtemp()
B = """
local function spin() while true do end end
local function hold() local t = os.clock() + 0.9 while os.clock() < t do end end
function polyplug_init()
    return { ["t.b"] = { factory = function() return {} end, functions = { [0] = spin, hold } } }, { code = 0 }
end
"""
A = RELAY_LUA
rt = runtime(polyplug.LuaConfig(call_timeout=30))   # B's own limit: 30 s
rt.load_bundle(make_bundle(tmp, "b", B))
rt.load_bundle(make_bundle(tmp, "a", A))
b_iface = rt.resolve_guest_contract(handle(rt, "t.b"))
a = rt.contract("t.a", 1, signatures={"set": signature("set", 0, ["u64"]),
                                      "call_b": signature("call_b", 1, [], "u32")})
a.set(int(ffi.cast("uintptr_t", b_iface)))
limited = a.with_limits(timeout=0.3)
t0 = time.monotonic()
try:  # the nested call stops at the outer deadline; the outer one right after, or not
    print("nested call stopped:", limited.call_b() == 200)
except polyplug.CallTimeout:
    print("nested call stopped:", True)
print("nested call bounded by the outer deadline:", time.monotonic() - t0 < 5)
b = rt.contract("t.b", 1, signatures={"hold": signature("hold", 1)})
th = threading.Thread(target=b.hold); th.start(); time.sleep(0.1)
quick = rt.contract("t.b", 1, signatures={"hold": signature("hold", 1)}, timeout=0.05)
t0 = time.monotonic()
try:
    quick.hold(); print("queued call ran")
except polyplug.CallTimeout as exc:
    print("queued call: CallTimeout", "waiting for bundle" in str(exc))
print("waited at most its limit:", time.monotonic() - t0 < 0.5)
th.join()
