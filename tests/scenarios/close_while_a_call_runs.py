# Issue 11.5: Runtime.close() while a call is in flight freed the runtime under it
# (heap-use-after-free).  close() now waits (bounded) and raises RuntimeBusy past it.
from common import *
import tempfile, time
tmp = tempfile.mkdtemp()
LUA = """
local function busy(_, args, out)
    local t = os.clock() + %s
    while os.clock() < t do end
end
function polyplug_init()
    return { ["t.busy"] = { factory = function() return {} end, functions = { [0] = busy } } }, { code = 0 }
end
"""
# 1: close waits for a 0.5 s call and then succeeds
rt = runtime()
rt.load_bundle(make_bundle(tmp, "busy", LUA % "0.5"))
h = handle(rt, "t.busy")
results = {}
th = threading.Thread(target=lambda: results.setdefault("call", checked_call(rt, h, 0)), daemon=True)
th.start(); time.sleep(0.1)
t0 = time.monotonic(); rt.close(timeout=5); waited = time.monotonic() - t0
th.join(5)
print("close waited for the call:", 0.2 < waited < 5, "call:", results.get("call"))
try:
    rt.load_bundle(make_bundle(tmp, "again", LUA % "0"))
except polyplug.RuntimeClosed:
    print("load after close: RuntimeClosed")
# 2: close with a short timeout while a 1.5 s call runs: RuntimeBusy, then the VM goes
rt2 = runtime()
rt2.load_bundle(make_bundle(tmp, "slow", LUA % "1.5"))
h2 = handle(rt2, "t.busy")
th = threading.Thread(target=lambda: results.setdefault("slow", checked_call(rt2, h2, 0)), daemon=True)
th.start(); time.sleep(0.1)
try:
    rt2.close(timeout=0.2)
except polyplug.RuntimeBusy as exc:
    print("short close: RuntimeBusy:", "still have calls running" in str(exc))
th.join(5)
print("slow call:", results.get("slow"))
print("second close:", rt2.close(timeout=1) is None)
err = ffi.new("AbiError *")
code = lib.pp_call_handle(rt2._rt, h2.index, h2.generation, ffi.NULL, 0, 0, ffi.NULL, ffi.NULL, ffi.NULL, err)
print("C call after close:", code, ffi.string(err.message.ptr, err.message.len).decode())
print("process survived")
