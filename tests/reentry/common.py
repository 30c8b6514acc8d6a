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
