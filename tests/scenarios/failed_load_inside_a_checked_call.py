# guest, inside a checked call (pp_call_handle), loads a bundle whose init fails:
# load_common's failure path calls ppi_calls_drain, which waits for this very call.
from common import *
import tempfile
tmp = tempfile.mkdtemp()
bad = make_bundle(tmp, "bad", "function polyplug_init() error('boom') end")
LUA = """
local ffi = require("ffi")
local abi = require("abi")
local host
local path = %r
local function f(_, _, out)
    local err = ffi.new("AbiError[1]")
    host.load_bundle(host, path, #path, err)
end
function polyplug_init(h)
    host = ffi.cast("HostApi *", ffi.cast("uintptr_t", h))
    return { ["t.outer"] = { factory = function() return {} end, functions = { [0] = f } } }, { code = 0 }
end
"""
d = make_bundle(tmp, "outer", LUA % str(bad))
rt = runtime()
rt.load_bundle(d)
h = handle(rt, "t.outer")
iface = rt.resolve_guest_contract(h)
err = ffi.new("AbiError *")
lib.pp_call(iface, ffi.NULL, 0, 0, ffi.NULL, ffi.NULL, ffi.NULL, err)
print("raw pp_call: code", err.code)
run_with_timeout(lambda: print("checked:", checked_call(rt, h, 0)))
import os; os._exit(0)
