# Fresh-eyes review of cperf2: the collection after an out-of-memory error lifts the
# memory limit to 64 KiB above what the VM holds *then*, so a __gc finalizer that runs
# in it, keeps what it allocates and re-arms itself (a new finalizable object, collected
# in the next such collection) gains 64 KiB per failed call: the heap crept past the
# limit without bound (20 MiB under a 2 MiB limit after 400 calls).  The headroom is
# above the configured limit, not above the current heap.
from common import *
import tempfile
from polyplug.signature import signature
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
HOARD = {}
local fin
fin = function()
    -- runs in the collection after the out-of-memory error: keep 16 KiB, re-arm
    pcall(function()
        HOARD[#HOARD + 1] = string.rep(string.format("%07d.", #HOARD), 2000)
        ffi.gc(ffi.new("int[1]"), fin)
    end)
end
local function creep()
    local keep = ffi.gc(ffi.new("int[1]"), fin)
    local t = {}
    for i = 1, 1e9 do t[i] = string.rep("x", 1000) .. i; if keep == nil then return end end
end
function polyplug_init()
    return { ["t.m"] = { factory = function() return {} end,
        functions = { [0] = creep } } }, { code = 0 }
end
"""
LIMIT = 2 << 20
rt = runtime(polyplug.LuaConfig(memory_limit=LIMIT, call_timeout=5),
             log=lambda *a: None)
rt.load_bundle(make_bundle(tmp, "m", LUA))
c = rt.contract("t.m", 1, signatures={"creep": signature("creep", 0)})
bid = polyplug.bundle_id("m")
base = rt.bundle_memory(bid)
outcomes = set()
for _ in range(300):
    try:
        c.creep()
        outcomes.add("returned")
    except polyplug.PolyplugError as exc:
        outcomes.add(type(exc).__name__)
grown = rt.bundle_memory(bid) - base
print("calls failed with:", sorted(outcomes))
print("heap grew by %.2f MiB under a %.0f MiB limit: cap held: %s"
      % (grown / 2**20, LIMIT / 2**20, grown <= LIMIT + (64 << 10)))
rt.close()
print("process survived")
