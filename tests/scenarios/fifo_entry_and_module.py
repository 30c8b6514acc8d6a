# Issue 12.9: a FIFO as the entry file or as a required module hung load_bundle in fopen.
from common import *
import os, tempfile
tmp = tempfile.mkdtemp()
d = make_bundle(tmp, "fifo", "")
os.remove(d / "bundle.lua")
os.mkfifo(d / "bundle.lua")
try:
    runtime().load_bundle(d)
except polyplug.InitFailed as exc:
    print("entry FIFO:", "not a regular file" in str(exc))
m = make_bundle(tmp, "modfifo", """
local ok, err = pcall(require, "helper")
function polyplug_init() error(tostring(err)) end
""")
os.mkfifo(m / "helper.lua")
for sandbox in ("none", "restricted"):
    try:
        runtime(polyplug.LuaConfig(sandbox=sandbox)).load_bundle(m)
    except polyplug.InitFailed as exc:
        print("module FIFO", sandbox + ":", "not a regular file" in str(exc))
c = make_bundle(tmp, "cfifo", """
local ok, err = pcall(require, "native_helper")
function polyplug_init() error(tostring(err)) end
""")
os.mkfifo(c / "native_helper.so")
try:
    runtime().load_bundle(c)
except polyplug.InitFailed as exc:
    print("C module FIFO:", "not a regular file" in str(exc))
print("finished")
