# Issue 12.1: recursion through C (a new coroutine at every level; gsub inside a gsub
# callback; sort, print, xpcall) overflowed the C stack: SIGSEGV.  Now "C stack
# overflow" on every thread stack size, and the VM answers the next call.
from common import *
import sys, tempfile
from polyplug.signature import signature
tmp = tempfile.mkdtemp()
LUA = """
local function co(n) return coroutine.wrap(function() return co(n + 1) end)() end
local function gs(s) return (s:gsub('.', function(c) return gs(c .. 'x') end)) end
local function so(n) local t = {3, 1, 2}; table.sort(t, function(a, b) so(n + 1) return a < b end) end
local mt = {}
mt.__tostring = function() print(setmetatable({}, mt)) return 'x' end
local function pr() print(setmetatable({}, mt)) end
local function h(e) return xpcall(function() error('again') end, h) end
local function xp() xpcall(function() error('x') end, h) end
local function ok(_, _, out) require("ffi").cast("uint32_t *", require("ffi").cast("uintptr_t", out))[0] = 7 end
function polyplug_init()
    return { ["t.deep"] = { factory = function() return {} end,
        functions = { [0] = function() co(0) end, function() gs('a') end,
                      function() so(0) end, pr, xp, ok } } }, { code = 0 }
end
"""
rt = runtime()
rt.load_bundle(make_bundle(tmp, "deep", LUA))
sig = {n: signature(n, i, [], "u32" if n == "ok" else None)
       for i, n in enumerate(["co", "gs", "so", "pr", "xp", "ok"])}
c = rt.contract("t.deep", 1, signatures=sig)
def run(label):
    for name in ("co", "gs", "so", "pr"):
        try:
            getattr(c, name)()
            print(label, name, "returned")
        except polyplug.GuestError as exc:
            print(label, name, "stack overflow" if "stack overflow" in str(exc) else repr(exc))
    try:
        c.xp(); print(label, "xp returned")
    except polyplug.GuestError as exc:
        print(label, "xp", repr(exc))
    print(label, "next call:", c.ok())
run("main")
for size in (32768, 65536, 0):
    threading.stack_size(size)
    t = threading.Thread(target=run, args=(f"thread{size}",)); t.start(); t.join()
print("process survived")
