# Issue 12.8: a functions table with 70,000 entries loaded, but ids >= 65,535 answered
# FunctionNotAvailable.  The whole table works now; beyond the limit the load fails.
from common import *
import tempfile
from polyplug.signature import signature
tmp = tempfile.mkdtemp()
def lua(n):
    return """
local ffi = require("ffi")
local fns = {}
for i = 0, %d - 1 do fns[i] = function(_, _, out) ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = i end end
function polyplug_init()
    return { ["t.many"] = { factory = function() return {} end, functions = fns } }, { code = 0 }
end
""" % n
rt = runtime()
rt.load_bundle(make_bundle(tmp, "many", lua(70000)))
c = rt.contract("t.many", 1)
print("fn 69999 ->", c.function(69999, [], "u32")())
print("fn 65535 ->", c.function(65535, [], "u32")())
try:
    rt.load_bundle(make_bundle(tmp, "toomany", lua((1 << 20) + 1)))
except polyplug.InitFailed as exc:
    print("too many:", "more than 1048576 functions" in str(exc))
