# A __gc finalizer that calls collectgarbage(): the full collection runs the next
# pending finalizer from inside this one (lj_gc_fullgc -> gc_finalize -> finalizer ->
# collectgarbage -> ...), so C frames pile up, one level per pending finalizer, and
# collectgarbage is not among the C-stack-guarded functions.  Expected: "C stack
# overflow" (or the finalizers' errors logged) and the VM answering the next call, on
# every thread stack size, as docs/limits.md promises ("This holds on any thread
# stack, down to Python's 32 KiB minimum").  Seen: SIGSEGV on 32 KiB .. 1 MiB threads.
#
# Held up in the same run: tostring() with a __tostring that calls tostring() again
# (LuaJIT calls the metamethod from the interpreter, not from C: the Lua stack
# overflows first, "stack overflow", on every stack size).
from common import *
import os, tempfile
from polyplug.signature import signature
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
local mt = {}
mt.__tostring = function() local s = tostring(setmetatable({}, mt)) return s end
local function ts() local s = tostring(setmetatable({}, mt)) return s end
local function gcr()
    for i = 1, 10000 do ffi.gc(ffi.new("int[1]"), function() collectgarbage() end) end
    collectgarbage()
end
local function ok(_, _, out) ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = 7 end
function polyplug_init()
    return { ["t.deep"] = { factory = function() return {} end,
        functions = { [0] = ts, gcr, ok } } }, { code = 0 }
end
"""
rt = runtime()
rt.load_bundle(make_bundle(tmp, "deep", LUA))
sig = {n: signature(n, i, [], "u32" if n == "ok" else None)
       for i, n in enumerate(["ts", "gcr", "ok"])}
c = rt.contract("t.deep", 1, signatures=sig)

def run(label):
    for name in ("ts", "gcr"):
        try:
            getattr(c, name)()
            print(label, name, "returned", flush=True)
        except polyplug.GuestError as exc:
            print(label, name, "stack overflow" if "stack overflow" in str(exc) else repr(exc),
                  flush=True)
    print(label, "next call:", c.ok(), flush=True)

run("main")
for size in (1 << 20, 262144, 32768):
    threading.stack_size(size)
    t = threading.Thread(target=run, args=(f"thread{size}",)); t.start(); t.join(60)
    if t.is_alive(): print("HUNG"); os._exit(1)
print("process survived")
