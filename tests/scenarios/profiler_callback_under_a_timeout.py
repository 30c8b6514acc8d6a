# jit.profile (reachable in both profiles) runs its Lua callback through
# jit_profile_callback, which exit()s the process when the callback raises
# ("PANIC: unprotected error in call to Lua API").  During the callback LuaJIT sets
# hookmask = HOOK_VMEVENT only: the watchdog's lua_sethook adds the count mask, the
# interpreter's instruction hook checks HOOK_ACTIVE only, so the limit hook fires
# *inside* the sampler callback and its "call timed out" error kills the process.
# An honest guest that samples itself while a call times out (or is cancelled) takes
# the host down: expected CallTimeout every time and the process alive.
#
# Second case (now documented in docs/limits.md as an escape): a jit.attach handler runs with
# HOOK_VMEVENT set and, while a trace is being recorded, the vm_record dispatcher
# skips hooks entirely -- ppi_lua_unblock_hooks clears HOOK_ACTIVE only -- so a
# looping handler hangs a limited call for good (`attach` case: HUNG).
from common import *
import os, tempfile, time
from polyplug.signature import signature
tmp = tempfile.mkdtemp()
LUA = r"""
local ffi = require("ffi")
local function profiled_spin()
    local prof = require("jit.profile")
    prof.start("i1", function(th, n, vm)      -- an honest sampler that does some work
        local t = {} for i = 1, 50000 do t[i] = i end
    end)
    while true do end                         -- stopped by the call timeout
end
local function attached_loop()
    jit.on()
    jit.attach(function() while true do end end, "trace")
    local s = 0
    for i = 1, 1e6 do s = s + i end           -- a hot loop: a trace starts recording
end
function polyplug_init()
    return { ["t.prof"] = { factory = function() return {} end,
        functions = { [0] = profiled_spin, attached_loop } } }, { code = 0 }
end
"""
rt = runtime(polyplug.LuaConfig(call_timeout=0.1))
rt.load_bundle(make_bundle(tmp, "prof", LUA))
c = rt.contract("t.prof", 1, signatures={"spin": signature("spin", 0),
                                         "attached": signature("attached", 1)})

def timeouts():
    n = 0
    for i in range(30):
        try:
            c.spin()
        except polyplug.CallTimeout:
            n += 1
    print("profiled calls timed out:", n, flush=True)

t = threading.Thread(target=timeouts, daemon=True); t.start(); t.join(30)
if t.is_alive(): print("HUNG: profiled calls", flush=True); os._exit(1)

# The attach case cannot be bounded (LuaJIT skips every hook while a VM-event handler
# runs; documented in docs/limits.md as an escape, like native code): the restricted
# profile has neither jit.attach nor jit.profile.
rt2 = runtime(polyplug.LuaConfig(sandbox="restricted"))
try:
    rt2.load_bundle(make_bundle(tmp, "probe", """
REPORT = tostring(jit.attach) .. " " .. tostring((pcall(require, "jit.profile")))
function polyplug_init() error(REPORT) end
"""))
except polyplug.InitFailed as exc:
    print("restricted: jit.attach, jit.profile loads:", str(exc).rsplit(": ", 1)[-1], flush=True)
print("process survived")
