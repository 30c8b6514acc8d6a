"""Per-call timeouts, cancellation, per-VM memory limits and the restricted profile.

Times here are limits that must be hit, never speed assertions: a test only checks
that a runaway call is stopped (well before the test's own generous bound) and that
the VM answers the next call.
"""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import pytest

import polyplug

RUNAWAY = """
local ffi = require("ffi")
local function spin() while true do end end                         -- JIT-compiled loop
local function swallow()                                             -- tries to eat the abort
    while true do pcall(function() while true do end end) end
end
local function hog()                                                 -- allocates without bound
    local t, i = {}, 0
    while true do i = i + 1; t[i] = string.rep("x", 1024) .. i end
end
local function answer(_, _, out)
    ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = 42
end
function polyplug_init()
    return { ["limits.runaway"] = { factory = function() return {} end,
        functions = { [0] = spin, swallow, hog, answer } } }, { code = 0 }
end
"""

SIGNATURES = """
[contracts."limits.runaway@1".functions]
spin = { id = 0 }
swallow = { id = 1 }
hog = { id = 2 }
answer = { id = 3, returns = "u32" }
"""


def bundle(root: Path, name: str = "runaway", lua: str = RUNAWAY, extra: str = SIGNATURES) -> Path:
    d = root / name
    d.mkdir()
    (d / "manifest.toml").write_text(
        f'name = "{name}"\nid = {polyplug.bundle_id(name)}\nloader = "lua"\n'
        f'file = "bundle.lua"\n{extra}')
    (d / "bundle.lua").write_text(textwrap.dedent(lua))
    return d


def runtime(config: polyplug.LuaConfig) -> polyplug.Runtime:
    # a logger keeps the expected call failures off stderr
    return polyplug.RuntimeBuilder().loader(polyplug.LuaLoader(config)).logger(
        lambda *_: None).build()


@pytest.mark.parametrize("fn", ["spin", "swallow"])
def test_default_timeout_stops_a_runaway_call_and_the_vm_stays_usable(tmp_path: Path, fn: str) -> None:
    with runtime(polyplug.LuaConfig(call_timeout=0.1)) as rt:
        rt.load_bundle(bundle(tmp_path))
        c = rt.contract("limits.runaway", 1)
        start = time.monotonic()
        with pytest.raises(polyplug.CallTimeout, match="timed out after 0.100 s") as info:
            getattr(c, fn)()
        assert time.monotonic() - start < 30
        assert info.value.code == 200 and isinstance(info.value, TimeoutError)
        assert c.answer() == 42


def test_per_call_timeout_overrides_no_default(tmp_path: Path) -> None:
    with runtime(polyplug.LuaConfig()) as rt:
        rt.load_bundle(bundle(tmp_path))
        c = rt.contract("limits.runaway", 1, timeout=0.05)
        with pytest.raises(polyplug.CallTimeout):
            c.spin()
        assert c.answer() == 42
        # the raw call path honours the same limit
        with pytest.raises(polyplug.CallTimeout):
            c.call(0)


def test_cancel_from_another_thread(tmp_path: Path) -> None:
    with runtime(polyplug.LuaConfig()) as rt:
        rt.load_bundle(bundle(tmp_path))
        token = polyplug.CancelToken()
        c = rt.contract("limits.runaway", 1).with_limits(cancel=token)
        timer = threading.Timer(0.1, token.cancel)
        timer.start()
        try:
            with pytest.raises(polyplug.Cancelled, match="cancelled"):
                c.swallow()
        finally:
            timer.cancel()
        assert token.cancelled
        with pytest.raises(polyplug.Cancelled):  # a set token stops new calls too
            c.spin()
        token.reset()
        assert c.answer() == 42


def test_memory_limit_fails_the_call_not_the_host(tmp_path: Path) -> None:
    limit = 4 << 20
    with runtime(polyplug.LuaConfig(memory_limit=limit, call_timeout=30)) as rt:
        rt.load_bundle(bundle(tmp_path))
        rt.load_bundle(bundle(tmp_path, "neighbour", RUNAWAY.replace("limits.runaway", "limits.other"),
                              SIGNATURES.replace("limits.runaway", "limits.other")))
        c = rt.contract("limits.runaway", 1)
        with pytest.raises(polyplug.GuestOutOfMemory, match="memory limit") as info:
            c.hog()
        assert isinstance(info.value, MemoryError)
        assert c.answer() == 42  # garbage was collected: the VM works again
        assert rt.contract("limits.other", 1).answer() == 42
        used = rt.bundle_memory(polyplug.bundle_id("runaway"))
        assert 0 < used < limit + (1 << 20)


def test_bundle_memory_is_reported_and_unknown_bundles_raise(tmp_path: Path) -> None:
    with runtime(polyplug.LuaConfig()) as rt:
        rt.load_bundle(bundle(tmp_path))
        assert rt.bundle_memory(polyplug.bundle_id("runaway")) > 10_000
        with pytest.raises(polyplug.BundleNotFound):
            rt.bundle_memory(12345)


PROBE = """
local ffi = require("ffi")
local names = { "io", "debug", "dofile", "loadfile", "module" }
local present = {}
for _, n in ipairs(names) do if _G[n] ~= nil then present[#present + 1] = n end end
if os.execute ~= nil then present[#present + 1] = "os.execute" end
if os.getenv ~= nil then present[#present + 1] = "os.getenv" end
if package.loadlib ~= nil then present[#present + 1] = "package.loadlib" end
if pcall(require, "io") then present[#present + 1] = "require io" end
REPORT = table.concat(present, ",")
local function report(_, _, out)
    local sv = ffi.cast("StringView *", ffi.cast("uintptr_t", out))
    sv.ptr, sv.len = REPORT, #REPORT   -- REPORT is a global: it outlives the call
end
function polyplug_init()
    require("polyplug_abi")
    assert(type(os.clock()) == "number" and ffi ~= nil)
    return { ["limits.probe"] = { factory = function() return {} end,
        functions = { [0] = report } } }, { code = 0 }
end
"""


@pytest.mark.parametrize("sandbox, expected", [
    ("none", "io,debug,dofile,loadfile,module,os.execute,os.getenv,package.loadlib,require io"),
    ("restricted", ""),
])
def test_restricted_profile(tmp_path: Path, sandbox: str, expected: str) -> None:
    sigs = '[contracts."limits.probe@1".functions]\nreport = { id = 0, returns = "string" }\n'
    with runtime(polyplug.LuaConfig(sandbox=sandbox)) as rt:  # type: ignore[arg-type]
        rt.load_bundle(bundle(tmp_path, "probe", PROBE, sigs))
        assert rt.contract("limits.probe", 1).report() == expected


@pytest.mark.parametrize("config", [
    polyplug.LuaConfig(call_timeout=0),
    polyplug.LuaConfig(call_timeout=-1),
    polyplug.LuaConfig(memory_limit=0),
    polyplug.LuaConfig(sandbox="everything"),  # type: ignore[arg-type]
])
def test_bad_limits_are_rejected(config: polyplug.LuaConfig) -> None:
    with pytest.raises(polyplug.InvalidArgument):
        polyplug.LuaLoader(config)


def test_timeout_must_be_positive(tmp_path: Path) -> None:
    with runtime(polyplug.LuaConfig()) as rt:
        rt.load_bundle(bundle(tmp_path))
        with pytest.raises(polyplug.InvalidArgument):
            rt.contract("limits.runaway", 1, timeout=0)


def test_the_call_timeout_also_bounds_initialisation(tmp_path: Path) -> None:
    lua = "while true do end\n"
    with runtime(polyplug.LuaConfig(call_timeout=0.1)) as rt:
        with pytest.raises(polyplug.InitFailed, match="timed out"):
            rt.load_bundle(bundle(tmp_path, "stuck", lua, ""))
        assert rt.list_bundles() == []
        rt.load_bundle(bundle(tmp_path))  # the runtime carries on
        assert rt.contract("limits.runaway", 1).answer() == 42


def test_a_set_cancel_token_stops_even_a_short_call(tmp_path: Path) -> None:
    with runtime(polyplug.LuaConfig()) as rt:
        rt.load_bundle(bundle(tmp_path))
        token = polyplug.CancelToken()
        token.cancel()
        c = rt.contract("limits.runaway", 1, cancel=token)
        with pytest.raises(polyplug.Cancelled, match="before it started"):
            c.answer()
        token.reset()
        assert c.answer() == 42


SLOW_FACTORY = """
function polyplug_init()
    local first = true
    return { ["limits.slow"] = {
        factory = function()
            if first then first = false; return {} end  -- the default instance is quick
            while true do end
        end,
        functions = { [0] = function() end } } }, { code = 0 }
end
"""


def test_instance_factories_are_bounded_by_the_call_timeout(tmp_path: Path) -> None:
    with runtime(polyplug.LuaConfig(call_timeout=0.1)) as rt:
        rt.load_bundle(bundle(tmp_path, "slow", SLOW_FACTORY, ""))
        c = rt.contract("limits.slow", 1, signatures={})
        start = time.monotonic()
        with pytest.raises(polyplug.CallTimeout,
                           match="limits.slow@1: Lua create_instance: factory call failed: "
                                 "timed out"):
            c.instance()
        assert time.monotonic() - start < 30
        c.call(0)  # the bundle still answers


CYCLE = """
local ffi = require("ffi")
local abi = require("abi")
local pg = require("polyplug_guest")
local host
-- fn 0: busy for a moment, then call fn 1 of the OTHER bundle through its vtable
local function ping(_, _, out)
    local t = os.clock() + 0.3
    while os.clock() < t do end
    local id = abi.guest_contract_id("cycle.OTHER", 1)
    local iface = host.resolve_guest_contract(host, host.find_guest_contract(host, id, 1))
    local err = ffi.new("AbiError[1]")
    iface.dispatch.vm.call(iface.dispatch.vm.loader_data, ffi.new("GuestContractInstance"),
                           1, nil, nil, nil, err)
    pg.ptr(out, "uint32_t *")[0] = err[0].code
end
function polyplug_init(host_ptr)
    host = pg.cast_host_interface(host_ptr)
    return { ["cycle.SELF"] = { factory = function() return {} end,
                               functions = { [0] = ping, function() end } } }, { code = 0 }
end
"""


def test_bundles_calling_each_other_from_two_threads_do_not_deadlock(tmp_path: Path) -> None:
    sig = '[contracts."cycle.SELF@1".functions]\nping = { id = 0, returns = "u32" }\n'
    with runtime(polyplug.LuaConfig(call_timeout=1.0)) as rt:
        for me, other in (("a", "b"), ("b", "a")):
            lua = CYCLE.replace("SELF", me).replace("OTHER", other)
            rt.load_bundle(bundle(tmp_path, f"cycle_{me}", lua, sig.replace("SELF", me)))
        codes: dict[str, int] = {}

        def run(name: str) -> None:
            try:
                codes[name] = rt.contract(f"cycle.{name}", 1).ping()
            except polyplug.CallTimeout:  # the outer call's own limit may trip after the wait
                codes[name] = 200

        threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "the two calls deadlocked"
        # each nested call either ran (0) or gave up waiting (200), never hung
        assert set(codes) == {"a", "b"} and set(codes.values()) <= {0, 200}
        assert 200 in codes.values()


def test_restricted_profile_loads_modules_from_the_bundle_only(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "cwd"
    outside.mkdir()
    (outside / "stray.lua").write_text("return 1\n")
    monkeypatch.chdir(outside)
    lua = """
    local ok_stray = pcall(require, "stray")       -- in the host's working directory
    local helper = require("helper")               -- in the bundle
    function polyplug_init()
        assert(not ok_stray and helper == 7, "module search escaped the bundle")
        return { ["limits.paths"] = { factory = function() return {} end,
                 functions = { [0] = function() end } } }, { code = 0 }
    end
    """
    d = bundle(tmp_path, "paths", lua, "")
    (d / "helper.lua").write_text("return 7\n")
    with runtime(polyplug.LuaConfig(sandbox="restricted")) as rt:
        rt.load_bundle(d)
