"""Helpers shared by the re-entry scenarios (each runs as its own process)."""
import sys, textwrap, threading, faulthandler
from pathlib import Path
import polyplug
from polyplug import ffi, lib

def make_bundle(root, name, lua):
    d = Path(root) / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.toml").write_text(
        f'name = "{name}"\nid = {polyplug.bundle_id(name)}\nloader = "lua"\nfile = "bundle.lua"\n')
    (d / "bundle.lua").write_text(textwrap.dedent(lua))
    return d

def runtime(lua_cfg=None, **config):
    ld = polyplug.LuaLoader(lua_cfg) if lua_cfg else polyplug.LuaLoader()
    return polyplug.RuntimeBuilder().config(polyplug.RuntimeConfig(**config)).loader(ld).build()

def handle(rt, contract, major=1):
    return rt.find_guest_contract(polyplug.guest_contract_id(contract, major), major)

def checked_call(rt, h, fn, out=ffi.NULL):
    err = ffi.new("AbiError *")
    code = lib.pp_call_handle(rt._ptr(), h.index, h.generation, ffi.NULL, 0, fn, ffi.NULL, out, ffi.NULL, err)
    msg = ffi.string(err.message.ptr, err.message.len).decode() if err.message.len else ""
    return code, msg

def run_with_timeout(fn, secs=5):
    t = threading.Thread(target=fn, daemon=True); t.start(); t.join(secs)
    print("HUNG" if t.is_alive() else "finished")

def raw_call(iface, fn, args=ffi.NULL, ret=None):
    """vm.call through an interface pointer: (code, msg), or (code, value, msg) with `ret`."""
    err = ffi.new("AbiError *")
    out = ffi.new(ret + "[1]") if ret else ffi.NULL
    lib.pp_call(iface, ffi.NULL, 0, fn, args, out, ffi.NULL, err)
    msg = ffi.string(err.message.ptr, err.message.len).decode() if err.message.len else ""
    return (err.code, out[0], msg) if ret else (err.code, msg)

def finish(fns, secs=20):
    """Run each function on its own thread; print HUNG if any is still running at `secs`."""
    import time
    threads = [threading.Thread(target=f, daemon=True) for f in fns]
    for t in threads: t.start()
    end = time.monotonic() + secs
    for t in threads: t.join(max(0.0, end - time.monotonic()))
    print("HUNG" if any(t.is_alive() for t in threads) else "finished")

# Bundle "t.a": set(args = a GuestContractInterface *) keeps a target; call_b(out) calls
# the target's function 0 through its raw vm.call and writes the AbiError code to out.
RELAY_LUA = """
local ffi = require("ffi")
require("abi")
local target
local function set(_, args) target = ffi.cast("const GuestContractInterface *", ffi.cast("uint64_t *", ffi.cast("uintptr_t", args))[0]) end
local function call_b(_, _, out)
    local err = ffi.new("AbiError[1]")
    target.dispatch.vm.call(target.dispatch.vm.loader_data, ffi.new("GuestContractInstance"), 0, nil, nil, nil, err)
    ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = err[0].code
end
function polyplug_init()
    return { ["t.a"] = { factory = function() return {} end, functions = { [0] = set, call_b } } }, { code = 0 }
end
"""

GOOD_LUA = """
function polyplug_init()
    return { ["t.good"] = { factory = function() return {} end, functions = { [0] = function() end } } }, { code = 0 }
end
"""

def guest_loader_lua(path, spin):
    """Bundle `t.outer`: fn 0 spins `spin` seconds, then loads the bundle at `path` through
    HostApi.load_bundle and stores the AbiError code in *out; fn 1 does nothing."""
    return """
local ffi = require("ffi")
require("abi")
local host
local path = %r
local function load(_, _, out)
    local t = os.clock() + %s
    while os.clock() < t do end
    local err = ffi.new("AbiError[1]")
    host.load_bundle(host, path, #path, err)
    if out ~= 0 then ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = err[0].code end
end
function polyplug_init(h)
    host = ffi.cast("HostApi *", ffi.cast("uintptr_t", h))
    return { ["t.outer"] = { factory = function() return {} end,
        functions = { [0] = load, [1] = function() end } } }, { code = 0 }
end
""" % (path, spin)
