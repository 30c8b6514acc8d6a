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
CALLER = """
local ffi = require("ffi")
require("abi")
local target
local function set(_, args) target = ffi.cast("const GuestContractInterface *", ffi.cast("uint64_t *", ffi.cast("uintptr_t", args))[0]) end
local function call(_, _, out)
    local err = ffi.new("AbiError[1]")
    target.dispatch.vm.call(target.dispatch.vm.loader_data, ffi.new("GuestContractInstance"), 0, nil, nil, nil, err)
    ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = err[0].code
end
function polyplug_init()
    return { ["t.caller"] = { factory = function() return {} end, functions = { [0] = set, [1] = call } } }, { code = 0 }
end
"""
rt = runtime()
rt.load_bundle(make_bundle(tmp, "sleeper", SLEEPER))
rt.load_bundle(make_bundle(tmp, "caller", CALLER))
sleeper = rt.resolve_guest_contract(handle(rt, "t.sleeper"))
caller = rt.resolve_guest_contract(handle(rt, "t.caller"))
raw_call(caller, 0, ffi.new("uint64_t[1]", [int(ffi.cast("uintptr_t", sleeper))]))
th = threading.Thread(target=lambda: raw_call(sleeper, 0), daemon=True); th.start()
time.sleep(0.1)
cpu0, t0 = time.process_time(), time.monotonic()
code = raw_call(caller, 1, ret="uint32_t")
cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
print("nested call waited:", wall > 1.0, "code:", code[0], "inner:", code[1])
print("slept while waiting:", cpu < 0.5 * wall, f"({cpu:.2f} s CPU over {wall:.2f} s)")
th.join(5)
