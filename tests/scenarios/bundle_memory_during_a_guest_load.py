# bundle_memory(X) holds the Lua loader's ld->lock while waiting for X's bundle lock;
# a call running in X calls host.load_bundle(Y) -> loader_load takes ld->lock: ABBA.
from common import *
import tempfile, time
tmp = tempfile.mkdtemp()
good = make_bundle(tmp, "good", """
function polyplug_init() return { ["t.good"] = { factory = function() return {} end, functions = { [0] = function() end } } }, { code = 0 } end
""")
LUA = """
local ffi = require("ffi")
local abi = require("abi")
local host
local path = %r
local function f(_, _, out)
    local t = os.clock() + 0.5
    while os.clock() < t do end          -- bundle lock held; main thread calls bundle_memory now
    local err = ffi.new("AbiError[1]")
    host.load_bundle(host, path, #path, err)
end
function polyplug_init(h)
    host = ffi.cast("HostApi *", ffi.cast("uintptr_t", h))
    return { ["t.x"] = { factory = function() return {} end, functions = { [0] = f } } }, { code = 0 }
end
"""
d = make_bundle(tmp, "x", LUA % str(good))
rt = runtime()
rt.load_bundle(d)
iface = rt.resolve_guest_contract(handle(rt, "t.x"))
def call():
    err = ffi.new("AbiError *")
    lib.pp_call(iface, ffi.NULL, 0, 0, ffi.NULL, ffi.NULL, ffi.NULL, err); print("call done", err.code)
t = threading.Thread(target=call, daemon=True); t.start()
time.sleep(0.1)
m = threading.Thread(target=lambda: print("memory", rt.bundle_memory(polyplug.bundle_id("x"))), daemon=True); m.start()
t.join(5); m.join(1)
print("HUNG" if t.is_alive() else "finished")
import os; os._exit(0)
