# guest reloads its own bundle from inside a call: reload swap takes the bundle lock it already holds
from common import *
import tempfile
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
local abi = require("abi")
local host
local path = %r
local function f(_, _, out)
    local err = ffi.new("AbiError[1]")
    host.reload_bundle(host, path, #path, err)
end
function polyplug_init(h)
    host = ffi.cast("HostApi *", ffi.cast("uintptr_t", h))
    return { ["t.self"] = { factory = function() return {} end, functions = { [0] = f } } }, { code = 0 }
end
"""
d = Path(tmp) / "self"
make_bundle(tmp, "self", LUA % str(d))
rt = runtime(hot_reload_enabled=True)
rt.load_bundle(d)
h = handle(rt, "t.self")
run_with_timeout(lambda: print(checked_call(rt, h, 0)))
import os; os._exit(0)
