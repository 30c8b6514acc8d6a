# Issue 12.12: in the restricted profile a guest could reassign package.path and
# require files outside the bundle, and load/loadstring accepted bytecode.
from common import *
import os, tempfile
tmp = tempfile.mkdtemp()
outside = os.path.join(tmp, "outside")
os.makedirs(outside)
with open(os.path.join(outside, "secret.lua"), "w") as f:
    f.write("return 'outside code ran'")
LUA = """
package.path = %r .. "/?.lua;" .. package.path
local ok1, r1 = pcall(require, "secret")
local ok2, r2 = pcall(load, string.dump(function() return 1 end))
local f2 = ok2 and r2
local ok3, r3 = pcall(loadstring, string.dump(function() return 1 end))
local f3 = ok3 and r3
local ok4, r4 = pcall(load, "return 40 + 2")
RESULT = table.concat({tostring(ok1 and r1), tostring(f2), tostring(f3), tostring(ok4 and r4 and r4()),
                       tostring(package.searchpath), tostring(package.loadlib)}, "|")
function polyplug_init() error(RESULT) end
""" % outside
d = make_bundle(tmp, "restricted", LUA)
try:
    runtime(polyplug.LuaConfig(sandbox="restricted")).load_bundle(d)
except polyplug.InitFailed as exc:
    parts = str(exc).rsplit(": ", 1)[-1].split("|")
    print("outside module loaded:", parts[0] == "outside code ran")
    print("bytecode through load:", parts[1] not in ("nil", "false"))
    print("bytecode through loadstring:", parts[2] not in ("nil", "false"))
    print("text load:", parts[3])
    print("searchpath, loadlib:", parts[4], parts[5])
