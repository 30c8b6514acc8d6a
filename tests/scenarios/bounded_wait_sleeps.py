# Issue 11.9: a bounded wait spun and yielded for its whole duration (2 s of waiting
# burned 2 s of CPU).  A nested call waiting for a busy bundle now sleeps.
from common import *
import tempfile, time
tmp = tempfile.mkdtemp()
SLEEPER = """
local ffi = require("ffi")
ffi.cdef("int usleep(unsigned int usec);")
local function nap() ffi.C.usleep(1500000) end
function polyplug_init()
    return { ["t.sleeper"] = { factory = function() return {} end, functions = { [0] = nap } } }, { code = 0 }
end
"""
CALLER = RELAY_LUA  # t.a: set(target), then call_b: the target's function 0
rt = runtime()
rt.load_bundle(make_bundle(tmp, "sleeper", SLEEPER))
rt.load_bundle(make_bundle(tmp, "caller", CALLER))
sleeper = rt.resolve_guest_contract(handle(rt, "t.sleeper"))
caller = rt.resolve_guest_contract(handle(rt, "t.a"))
raw_call(caller, 0, ffi.new("uint64_t[1]", [int(ffi.cast("uintptr_t", sleeper))]))
th = threading.Thread(target=lambda: raw_call(sleeper, 0), daemon=True); th.start()
time.sleep(0.1)
cpu0, t0 = time.process_time(), time.monotonic()
code = raw_call(caller, 1, ret="uint32_t")
cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
print("nested call waited:", wall > 1.0, "code:", code[0], "inner:", code[1])
print("slept while waiting:", cpu < 0.5 * wall, f"({cpu:.2f} s CPU over {wall:.2f} s)")
th.join(5)
