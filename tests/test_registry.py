"""The contract registry (abi-runtime.md §6, §9, §10): slots and generations, the major
floor, multi-provider lookups, attribution to bundles, hot reload keeping handles, reload
and unload phases, and dependency enforcement inside a bundle's init window.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_scenario

import polyplug
from polyplug import (
    GuestContractHandle,
    LogLevel,
    ReloadPhase,
    ReloadPhaseType,
    bundle_id,
    ffi,
    guest_contract_id,
    lib,
)

# ── helpers ──────────────────────────────────────────────────────────────────

_counter = itertools.count()


def contract(name: str, major: int = 1, value: int = 1, plugin: str = "p") -> str:
    """One registrations entry; fn 0 writes ``value`` into a uint32 out slot."""
    return (
        f'["{name}"] = {{ contract_version = {major}, plugin_name = "{plugin}", '
        "factory = function(h) return {} end, "
        "functions = { [0] = function(inst, args, out, arena, arena_alloc) "
        f'ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = {value} end }} }}'
    )


def lua_source(*entries: str, prelude: str = "", init_body: str = "") -> str:
    return (
        "local ffi = require('ffi')\n"
        f"{prelude}\n"
        "function polyplug_init(host, ctx)\n"
        f"{init_body}\n"
        f"    return {{ {', '.join(entries)} }}, {{ code = 0 }}\n"
        "end\n"
    )


def write_bundle(root: Path, name: str, source: str, manifest_extra: str = "") -> Path:
    d = root / f"{name}-{next(_counter)}"
    d.mkdir()
    (d / "manifest.toml").write_text(
        f'name = "{name}"\nid = {bundle_id(name)}\nloader = "lua"\nfile = "bundle.lua"\n'
        f"{manifest_extra}"
    )
    (d / "bundle.lua").write_text(source)
    return d


def rewrite(bundle: Path, source: str) -> None:
    (bundle / "bundle.lua").write_text(source)


def call_u32(iface: Any, fn_id: int = 0, n: int = 1) -> list[int]:
    out = ffi.new("uint32_t[]", n)
    err = ffi.new("AbiError *")
    lib.pp_call(iface, ffi.NULL, 0, fn_id, ffi.NULL, out, ffi.NULL, err)
    assert err.code == 0, err.code
    return list(out)


def cid(name: str, major: int = 1) -> int:
    return guest_contract_id(name, major)


@pytest.fixture
def phases() -> list[ReloadPhase]:
    return []


@pytest.fixture
def records() -> list[tuple[LogLevel, str, str]]:
    return []


@pytest.fixture
def rt(phases: list[ReloadPhase], records: list[Any]) -> Iterator[polyplug.Runtime]:
    cfg = polyplug.RuntimeConfig(hot_reload_enabled=True, on_reload=phases.append,
                                 log=lambda *r: records.append(r),
                                 log_max_level=LogLevel.Trace)
    with polyplug.RuntimeBuilder().config(cfg).loader(polyplug.LuaLoader()).build() as runtime:
        yield runtime


def c_resolve(rt: polyplug.Runtime, handle: GuestContractHandle) -> Any:
    host = rt.host_api
    return host.resolve_guest_contract(host, ffi.new("GuestContractHandle *", tuple(handle))[0])


# ── generations ──────────────────────────────────────────────────────────────


def test_unload_then_load_reuses_slot_0_with_generation_1(rt: polyplug.Runtime,
                                                         tmp_path: Path) -> None:
    a = rt.load_bundle(write_bundle(tmp_path, "gen_a", lua_source(
        contract("gen.one", value=1), contract("gen.two", value=2))))
    h1 = rt.find_guest_contract(cid("gen.one"), 1)
    h2 = rt.find_guest_contract(cid("gen.two"), 1)
    assert {h1, h2} == {GuestContractHandle(0, 0), GuestContractHandle(1, 0)}
    rt.unload_bundle(a.id)

    rt.load_bundle(write_bundle(tmp_path, "gen_b", lua_source(contract("gen.three", value=3))))
    h3 = rt.find_guest_contract(cid("gen.three"), 1)
    assert h3 == GuestContractHandle(0, 1)
    assert call_u32(rt.resolve_guest_contract(h3)) == [3]

    # the old handles are stale: slot 0 was recycled, slot 1 vacated
    for old in (h1, h2):
        with pytest.raises(polyplug.StaleHandle) as info:
            rt.resolve_guest_contract(old)
        assert f"index={old.index} refers to a vacated or recycled slot" in str(info.value)
        assert info.value.index == str(old.index)
        assert c_resolve(rt, old) == ffi.NULL


def test_generation_keeps_counting(rt: polyplug.Runtime, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, "gen_loop", lua_source(contract("gen.loop")))
    seen = []
    for _ in range(4):
        m = rt.load_bundle(bundle)
        seen.append(rt.find_guest_contract(cid("gen.loop")))
        rt.unload_bundle(m.id)
    assert seen == [GuestContractHandle(0, g) for g in range(4)]
    for h in seen:
        with pytest.raises(polyplug.StaleHandle):
            rt.resolve_guest_contract(h)


def test_stale_handle_error_fields(rt: polyplug.Runtime, tmp_path: Path) -> None:
    m = rt.load_bundle(write_bundle(tmp_path, "stale", lua_source(contract("st.x"))))
    h = rt.find_guest_contract(cid("st.x"))
    rt.unload_bundle(m.id)
    with pytest.raises(polyplug.StaleHandle) as info:
        rt.resolve_guest_contract(h)
    exc = info.value
    assert isinstance(exc, polyplug.RegistryError)
    assert exc.status == lib.PP_ERR_STALE_HANDLE
    assert str(exc).startswith("stale plugin handle: index=0 refers to a vacated or recycled slot")


def test_out_of_range_index_is_invalid_handle(rt: polyplug.Runtime, tmp_path: Path) -> None:
    rt.load_bundle(write_bundle(tmp_path, "oor", lua_source(contract("oor.x"))))
    for bad in (GuestContractHandle(1, 0), GuestContractHandle(999, 0),
                GuestContractHandle(0x7FFFFFFF, 5)):
        with pytest.raises(polyplug.InvalidHandle) as info:
            rt.resolve_guest_contract(bad)
        assert str(info.value) == f"invalid plugin handle: index={bad.index} is out of bounds"
        assert info.value.index == str(bad.index)
        assert c_resolve(rt, bad) == ffi.NULL


def test_null_handle_is_invalid_handle(rt: polyplug.Runtime, tmp_path: Path) -> None:
    with pytest.raises(polyplug.InvalidHandle):
        rt.resolve_guest_contract(GuestContractHandle.null())
    rt.load_bundle(write_bundle(tmp_path, "nul", lua_source(contract("nul.x"))))
    with pytest.raises(polyplug.InvalidHandle) as info:
        rt.resolve_guest_contract(GuestContractHandle.null())
    assert "index=4294967295 is out of bounds" in str(info.value)
    assert GuestContractHandle.null().is_null()
    assert c_resolve(rt, GuestContractHandle.null()) == ffi.NULL


def test_wrong_generation_on_live_slot_is_stale(rt: polyplug.Runtime, tmp_path: Path) -> None:
    rt.load_bundle(write_bundle(tmp_path, "wg", lua_source(contract("wg.x"))))
    h = rt.find_guest_contract(cid("wg.x"))
    with pytest.raises(polyplug.StaleHandle):
        rt.resolve_guest_contract(GuestContractHandle(h.index, h.generation + 1))


# ── the major floor ──────────────────────────────────────────────────────────


def test_find_uses_a_major_floor(rt: polyplug.Runtime, tmp_path: Path) -> None:
    rt.load_bundle(write_bundle(tmp_path, "major2", lua_source(contract("mj.x", major=2, value=2))))
    id2 = cid("mj.x", 2)
    found = {rt.find_guest_contract(id2, m) for m in (0, 1, 2)}
    assert len(found) == 1
    iface = rt.resolve_guest_contract(found.pop())
    assert iface.contract_version.major == 2
    assert (iface.contract_version.minor, iface.contract_version.patch) == (0, 0)
    with pytest.raises(polyplug.PluginNotFound) as info:
        rt.find_guest_contract(id2, 3)
    assert str(info.value) == (f"no plugin found for contract_id=0x{id2:016X} with "
                               "min_version=3: `mj.x@2` is loaded, but min_version=3 asks for a "
                               "major of at least 3")
    # only the major enters the id: major-1 id is a different contract
    with pytest.raises(polyplug.PluginNotFound):
        rt.find_guest_contract(cid("mj.x", 1), 0)
    host = rt.host_api
    assert host.find_guest_contract(host, id2, 3).index == 0xFFFFFFFF
    assert host.find_guest_contract(host, id2, 2).index != 0xFFFFFFFF
    assert host.find_all_guest_contracts(host, id2, 3).len == 0


# ── multi-provider ───────────────────────────────────────────────────────────


def test_multi_provider_first_loaded_wins_until_unloaded(rt: polyplug.Runtime,
                                                         tmp_path: Path) -> None:
    first = rt.load_bundle(write_bundle(tmp_path, "mp_zzz", lua_source(contract("mp.x", value=1))))
    second = rt.load_bundle(write_bundle(tmp_path, "mp_aaa", lua_source(contract("mp.x", value=2))))
    h = rt.find_guest_contract(cid("mp.x"))
    assert call_u32(rt.resolve_guest_contract(h)) == [1]
    assert [call_u32(rt.resolve_guest_contract(x)) for x in rt.find_all_by_contract(cid("mp.x"))] == [[1], [2]]
    assert rt.find_guest_contract_by_bundle(second.id, cid("mp.x")) != h

    rt.unload_bundle(first.id)
    h2 = rt.find_guest_contract(cid("mp.x"))
    assert h2 != h
    assert call_u32(rt.resolve_guest_contract(h2)) == [2]
    assert rt.find_all_by_contract(cid("mp.x")) == [h2]
    with pytest.raises(polyplug.StaleHandle):
        rt.resolve_guest_contract(h)


def test_multi_provider_find_by_bundle(rt: polyplug.Runtime, tmp_path: Path) -> None:
    a = rt.load_bundle(write_bundle(tmp_path, "mpb_a", lua_source(contract("mpb.x", value=10))))
    b = rt.load_bundle(write_bundle(tmp_path, "mpb_b", lua_source(contract("mpb.x", value=20))))
    assert call_u32(rt.resolve_guest_contract(rt.find_guest_contract_by_bundle(a.id, cid("mpb.x")))) == [10]
    assert call_u32(rt.resolve_guest_contract(rt.find_guest_contract_by_bundle(b.id, cid("mpb.x")))) == [20]


def test_loading_the_same_bundle_twice_raises_and_keeps_the_first(
    rt: polyplug.Runtime, tmp_path: Path, phases: list[ReloadPhase],
) -> None:
    bundle = write_bundle(tmp_path, "twice", lua_source(contract("tw.x", value=42)))
    m = rt.load_bundle(bundle)
    h = rt.find_guest_contract(cid("tw.x"))
    iface = rt.resolve_guest_contract(h)
    revision = rt.revision()
    with pytest.raises(polyplug.BundleAlreadyLoaded) as info:
        rt.load_bundle(bundle)
    exc = info.value
    assert isinstance(exc, polyplug.LoaderError)
    assert exc.bundle == "twice"
    assert "already loaded" in str(exc) and "twice" in str(exc)
    # the first load is intact: same handle, same interface, still callable
    assert rt.find_guest_contract(cid("tw.x")) == h
    assert rt.resolve_guest_contract(h) == iface
    assert call_u32(iface) == [42]
    assert rt.find_all_by_contract(cid("tw.x")) == [h]
    assert rt.list_bundles() == [m.id]
    assert rt.revision() == revision
    assert phases == []


def test_same_contract_twice_within_a_bundle_is_impossible_from_lua(
    rt: polyplug.Runtime, tmp_path: Path,
) -> None:
    """A Lua table cannot hold the same key twice: the later entry simply wins."""
    src = lua_source(contract("dup.x", value=1), contract("dup.x", value=2))
    rt.load_bundle(write_bundle(tmp_path, "dup_in_one", src))
    hs = rt.find_all_by_contract(cid("dup.x"))
    assert len(hs) == 1
    assert call_u32(rt.resolve_guest_contract(hs[0])) == [2]


# ── attribution ──────────────────────────────────────────────────────────────


def test_init_registrations_belong_to_the_bundle_never_to_0(rt: polyplug.Runtime,
                                                            tmp_path: Path) -> None:
    m = rt.load_bundle(write_bundle(tmp_path, "attr", lua_source(
        contract("at.one", plugin="alpha"), contract("at.two", major=3, plugin="beta"))))
    for name, major in (("at.one", 1), ("at.two", 3)):
        h = rt.find_guest_contract_by_bundle(m.id, cid(name, major), major)
        assert h == rt.find_guest_contract(cid(name, major))
        with pytest.raises(polyplug.PluginNotFound):
            rt.find_guest_contract_by_bundle(0, cid(name, major))
    infos = ffi.new("pp_slot_info[]", 4)
    n = lib.pp_registry_bundle_slots(rt._ptr(), m.id, infos, 4)
    got = sorted((ffi.string(i.contract_name).decode(), ffi.string(i.plugin_name).decode(),
                  int(i.bundle_id), int(i.contract_id), i.version.major) for i in infos[0:n])
    assert got == [("at.one@1", "alpha", m.id, cid("at.one", 1), 1),
                   ("at.two@3", "beta", m.id, cid("at.two", 3), 3)]
    assert lib.pp_registry_bundle_slots(rt._ptr(), 0, infos, 4) == 0


def test_default_plugin_name_is_the_bundle_name(rt: polyplug.Runtime, tmp_path: Path) -> None:
    """Not the entry file name (upstream trap, lua-loader.md §8.18)."""
    src = lua_source('["np.x"] = { factory = function(h) return {} end, functions = {} }')
    m = rt.load_bundle(write_bundle(tmp_path, "noname", src))
    info = ffi.new("pp_slot_info[]", 1)
    assert lib.pp_registry_bundle_slots(rt._ptr(), m.id, info, 1) == 1
    assert ffi.string(info[0].plugin_name).decode() == "noname"
    assert ffi.string(info[0].contract_name).decode() == "np.x@1"  # contract_version defaults to 1


def test_invalidate_bundle_removes_its_contracts(rt: polyplug.Runtime, tmp_path: Path) -> None:
    keep = rt.load_bundle(write_bundle(tmp_path, "inv_keep", lua_source(contract("inv.k"))))
    gone = rt.load_bundle(write_bundle(tmp_path, "inv_gone", lua_source(
        contract("inv.a"), contract("inv.b"))))
    ha = rt.find_guest_contract(cid("inv.a"))
    hk = rt.find_guest_contract(cid("inv.k"))
    before = rt.revision()
    assert rt.registry().invalidate_bundle(gone.id) == 2
    assert rt.revision() != before
    with pytest.raises(polyplug.StaleHandle):
        rt.resolve_guest_contract(ha)
    for name in ("inv.a", "inv.b"):
        with pytest.raises(polyplug.PluginNotFound):
            rt.find_guest_contract(cid(name))
        with pytest.raises(polyplug.PluginNotFound):
            rt.find_guest_contract_by_bundle(gone.id, cid(name))
    assert call_u32(rt.resolve_guest_contract(hk)) == [1]
    assert rt.registry().invalidate_bundle(gone.id) == 0
    assert rt.registry().invalidate_bundle(0xABCDEF) == 0
    # the bundle itself can still be unloaded afterwards
    rt.unload_bundle(gone.id)
    assert rt.list_bundles() == [keep.id]


# ── hot reload ───────────────────────────────────────────────────────────────


def test_reload_keeps_handles_and_pointer_and_runs_new_code(
    rt: polyplug.Runtime, tmp_path: Path, phases: list[ReloadPhase],
) -> None:
    bundle = write_bundle(tmp_path, "hot", lua_source(contract("hot.x", value=1)))
    m = rt.load_bundle(bundle)
    h = rt.find_guest_contract(cid("hot.x"))
    iface = rt.resolve_guest_contract(h)
    assert call_u32(iface) == [1]
    ptr_before = int(ffi.cast("uintptr_t", iface))
    revision = rt.revision()

    rewrite(bundle, lua_source(contract("hot.x", value=2)))
    rt.reload_bundle(bundle)
    assert rt.revision() != revision
    assert rt.find_guest_contract(cid("hot.x")) == h  # same slot, same generation
    again = rt.resolve_guest_contract(h)
    assert int(ffi.cast("uintptr_t", again)) == ptr_before
    assert int(ffi.cast("uintptr_t", c_resolve(rt, h))) == ptr_before
    assert call_u32(iface) == [2]  # the pointer resolved before the reload runs the new code
    assert [(p.type, p.bundle_id, p.bundle_name, p.reason) for p in phases] == [
        (ReloadPhaseType.Preparing, m.id, "hot", None),
        (ReloadPhaseType.Reloaded, m.id, "hot", None),
    ]
    assert phases[0].type is ReloadPhaseType.Preparing

    rewrite(bundle, lua_source(contract("hot.x", value=3)))
    rt.reload_bundle(bundle)
    assert call_u32(iface) == [3]
    assert rt.find_guest_contract(cid("hot.x")) == h


def test_reload_retires_removed_and_publishes_added_contracts(
    rt: polyplug.Runtime, tmp_path: Path,
) -> None:
    bundle = write_bundle(tmp_path, "shape", lua_source(
        contract("sh.keep", value=1), contract("sh.drop", value=2)))
    m = rt.load_bundle(bundle)
    keep = rt.find_guest_contract(cid("sh.keep"))
    drop = rt.find_guest_contract(cid("sh.drop"))
    rewrite(bundle, lua_source(contract("sh.keep", value=10), contract("sh.new", value=30)))
    rt.reload_bundle(bundle)

    with pytest.raises(polyplug.StaleHandle):
        rt.resolve_guest_contract(drop)
    with pytest.raises(polyplug.PluginNotFound):
        rt.find_guest_contract(cid("sh.drop"))
    assert rt.find_guest_contract(cid("sh.keep")) == keep
    assert call_u32(rt.resolve_guest_contract(keep)) == [10]
    new = rt.find_guest_contract_by_bundle(m.id, cid("sh.new"))
    assert new == rt.find_guest_contract(cid("sh.new"))
    assert call_u32(rt.resolve_guest_contract(new)) == [30]
    # the added contract belongs to the bundle and goes away with it
    rt.unload_bundle(m.id)
    for h in (keep, new):
        with pytest.raises(polyplug.StaleHandle):
            rt.resolve_guest_contract(h)


def test_failed_reload_keeps_old_code_and_reports_failed_phase(
    rt: polyplug.Runtime, tmp_path: Path, phases: list[ReloadPhase],
) -> None:
    bundle = write_bundle(tmp_path, "broken", lua_source(contract("br.x", value=5)))
    m = rt.load_bundle(bundle)
    h = rt.find_guest_contract(cid("br.x"))
    iface = rt.resolve_guest_contract(h)
    rewrite(bundle, "function polyplug_init(host, ctx)\n    return {{{ oops\nend\n")
    with pytest.raises(polyplug.InitFailed) as info:
        rt.reload_bundle(bundle)
    assert "Lua script load failed" in str(info.value)
    assert [p.type for p in phases] == [ReloadPhaseType.Preparing, ReloadPhaseType.Failed]
    failed = phases[1]
    assert failed.bundle_id == m.id and failed.bundle_name == "broken"
    assert failed.reason is not None
    assert "'}' expected" in failed.reason  # the Lua parser's own message
    assert "bundle.lua:3:" in failed.reason
    assert failed.reason == str(info.value)
    # old version still serving, same handle
    assert rt.find_guest_contract(cid("br.x")) == h
    assert call_u32(iface) == [5]
    assert rt.list_bundles() == [m.id]


def test_failed_reload_runtime_error_in_init(
    rt: polyplug.Runtime, tmp_path: Path, phases: list[ReloadPhase],
) -> None:
    bundle = write_bundle(tmp_path, "raises", lua_source(contract("ri.x", value=6)))
    rt.load_bundle(bundle)
    rewrite(bundle, lua_source(contract("ri.x", value=7),
                               init_body='    error("reload boom 1234")'))
    with pytest.raises(polyplug.InitFailed) as info:
        rt.reload_bundle(bundle)
    assert "reload boom 1234" in str(info.value)
    assert "reload boom 1234" in info.value.error
    assert [p.type for p in phases] == [ReloadPhaseType.Preparing, ReloadPhaseType.Failed]
    assert "reload boom 1234" in phases[1].reason
    assert call_u32(rt.resolve_guest_contract(rt.find_guest_contract(cid("ri.x")))) == [6]
    # and a later good reload works
    rewrite(bundle, lua_source(contract("ri.x", value=8)))
    rt.reload_bundle(bundle)
    assert call_u32(rt.resolve_guest_contract(rt.find_guest_contract(cid("ri.x")))) == [8]


def test_reload_with_live_instances_warns(rt: polyplug.Runtime, tmp_path: Path,
                                          records: list[Any]) -> None:
    bundle = write_bundle(tmp_path, "live", lua_source(contract("lv.x", value=1)))
    rt.load_bundle(bundle)
    iface = rt.resolve_guest_contract(rt.find_guest_contract(cid("lv.x")))
    host = rt.host_api
    inst = ffi.new("GuestContractInstance *")
    host.create_guest_instance(host, iface, ffi.NULL, inst)
    assert inst.data != ffi.NULL
    records.clear()
    rt.reload_bundle(bundle)
    warns = [r for r in records if r[0] == LogLevel.Warn and r[1] == "reload"]
    assert len(warns) == 1
    assert "bundle 'live' still has 1 live guest instance(s)" in warns[0][2]


def test_reload_requires_hot_reload_enabled(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, "cold", lua_source(contract("cold.x")))
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as runtime:
        runtime.load_bundle(bundle)
        with pytest.raises(polyplug.HotReloadDisabled) as info:
            runtime.reload_bundle(tmp_path / "does-not-exist")  # checked before the path
        assert str(info.value) == "hot-reload is disabled in runtime config"


def test_reload_of_a_bundle_that_is_not_loaded(rt: polyplug.Runtime, tmp_path: Path,
                                               phases: list[ReloadPhase]) -> None:
    bundle = write_bundle(tmp_path, "never", lua_source(contract("nv.x")))
    with pytest.raises(polyplug.BundleNotFound):
        rt.reload_bundle(bundle)
    with pytest.raises(polyplug.PluginNotFound):
        rt.find_guest_contract(cid("nv.x"))
    rt.load_bundle(bundle)  # and it can still be loaded normally afterwards
    assert call_u32(rt.resolve_guest_contract(rt.find_guest_contract(cid("nv.x")))) == [1]


# ── phases ───────────────────────────────────────────────────────────────────


def test_load_fires_no_phase_and_unload_fires_unloading(
    rt: polyplug.Runtime, tmp_path: Path, phases: list[ReloadPhase],
) -> None:
    m = rt.load_bundle(write_bundle(tmp_path, "phased", lua_source(contract("ph.x"))))
    assert phases == []
    rt.unload_bundle(m.id)
    assert phases == [ReloadPhase(ReloadPhaseType.Unloading, m.id, "phased", None)]


def test_unloading_fires_without_hot_reload(tmp_path: Path) -> None:
    phases: list[ReloadPhase] = []
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).on_reload(phases.append).build() as runtime:
        m = runtime.load_bundle(write_bundle(tmp_path, "cold_unload", lua_source(contract("cu.x"))))
        runtime.unload_bundle(m.id)
    assert [(p.type, p.bundle_id, p.bundle_name) for p in phases] == [
        (ReloadPhaseType.Unloading, m.id, "cold_unload")]


def test_failed_unload_fires_nothing(rt: polyplug.Runtime, phases: list[ReloadPhase]) -> None:
    with pytest.raises(polyplug.BundleNotFound):
        rt.unload_bundle(0x1234)
    assert phases == []


# ── dependency enforcement in the init window ────────────────────────────────

PROVIDER = "dep.provider"


def dependent_source(target: int) -> str:
    """fn 0: the handle + find_all count seen during init; fn 1: a lookup at call time.

    fn 2: the dependencies get_dependencies returned during the latest init.
    """
    prelude = f"""
local abi = require("abi")
local CID = {target}ULL
SEEN = {{ 0, 0, 0 }}
DEPS = {{}}
local function lookup(host)
    local h = host.find_guest_contract(host, CID, 1)
    local all = host.find_all_guest_contracts(host, CID, 1)
    local n = tonumber(all.len)
    if all.items ~= nil then
        host.free(host, ffi.cast("uint8_t *", all.items), all.len * 8, all.align)
    end
    return {{ h.index, h.generation, n }}
end
local function write(out, t)
    local o = ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))
    for i, v in ipairs(t) do o[i - 1] = v end
end
"""
    init_body = """
    local hostp = ffi.cast("HostApi *", ffi.cast("uintptr_t", host))
    HOST = hostp
    SEEN = lookup(hostp)
    local deps = hostp.get_dependencies(hostp)
    DEPS = { tonumber(deps.len) }
    for i = 0, tonumber(deps.len) - 1 do
        local d = deps.items[i]
        DEPS[#DEPS + 1] = tonumber(bit.band(d.contract_id, 0xFFFFFFFFULL))
        DEPS[#DEPS + 1] = tonumber(bit.rshift(d.contract_id, 32))
        DEPS[#DEPS + 1] = d.min_version
        DEPS[#DEPS + 1] = tonumber(d.bundle_id)
    end
    if deps.items ~= nil then
        hostp.free(hostp, ffi.cast("uint8_t *", deps.items), deps.len * ffi.sizeof("DependencyInfo"), deps.align)
    end
"""
    entry = (
        '["dep.user"] = { contract_version = 1, plugin_name = "user", '
        "factory = function(h) return {} end, functions = { "
        "[0] = function(inst, a, out) write(out, SEEN) end, "
        "[1] = function(inst, a, out) write(out, lookup(HOST)) end, "
        "[2] = function(inst, a, out) write(out, DEPS) end } }"
    )
    return lua_source(entry, prelude=prelude, init_body=init_body)


def dependency_toml(contract_id: bool = True, min_version: str = "1.0") -> str:
    line = f"contract_id = {cid(PROVIDER)}\n" if contract_id else ""
    return (f'\n[[dependency]]\nkind = "contract"\ncontract = "{PROVIDER}"\n'
            f'min_version = "{min_version}"\n{line}')


@pytest.fixture
def provider(rt: polyplug.Runtime, tmp_path: Path) -> GuestContractHandle:
    rt.load_bundle(write_bundle(tmp_path, "provider", lua_source(contract(PROVIDER, value=99))))
    return rt.find_guest_contract(cid(PROVIDER))


def user_iface(rt: polyplug.Runtime) -> Any:
    return rt.resolve_guest_contract(rt.find_guest_contract(cid("dep.user")))


def test_undeclared_lookup_during_init_is_denied(rt: polyplug.Runtime, tmp_path: Path,
                                                 provider: GuestContractHandle) -> None:
    rt.load_bundle(write_bundle(tmp_path, "undeclared", dependent_source(cid(PROVIDER))))
    iface = user_iface(rt)
    assert call_u32(iface, 0, 3) == [0xFFFFFFFF, 0, 0]  # null handle, empty find_all
    # outside the init window the same lookup is unrestricted
    assert call_u32(iface, 1, 3) == [provider.index, provider.generation, 1]


def test_declared_dependency_lookup_during_init_is_allowed(
    rt: polyplug.Runtime, tmp_path: Path, provider: GuestContractHandle,
) -> None:
    rt.load_bundle(write_bundle(tmp_path, "declared", dependent_source(cid(PROVIDER)),
                                dependency_toml()))
    seen = call_u32(user_iface(rt), 0, 3)
    assert seen == [provider.index, provider.generation, 1]
    resolved = rt.resolve_guest_contract(GuestContractHandle(seen[0], seen[1]))
    assert call_u32(resolved) == [99]


def test_dependency_without_contract_id_grants_nothing(
    rt: polyplug.Runtime, tmp_path: Path, provider: GuestContractHandle,
) -> None:
    rt.load_bundle(write_bundle(tmp_path, "no_cid", dependent_source(cid(PROVIDER)),
                                dependency_toml(contract_id=False)))
    assert call_u32(user_iface(rt), 0, 3) == [0xFFFFFFFF, 0, 0]


def test_declared_dependency_does_not_open_other_contracts(
    rt: polyplug.Runtime, tmp_path: Path, provider: GuestContractHandle,
) -> None:
    rt.load_bundle(write_bundle(tmp_path, "other", lua_source(contract("dep.other"))))
    rt.load_bundle(write_bundle(tmp_path, "narrow", dependent_source(cid("dep.other")),
                                dependency_toml()))
    assert call_u32(user_iface(rt), 0, 3) == [0xFFFFFFFF, 0, 0]


def test_dependency_blocks_unloading_the_provider(
    rt: polyplug.Runtime, tmp_path: Path, provider: GuestContractHandle,
    phases: list[ReloadPhase],
) -> None:
    user = rt.load_bundle(write_bundle(tmp_path, "blocker", dependent_source(cid(PROVIDER)),
                                       dependency_toml()))
    with pytest.raises(polyplug.DependencyInUse) as info:
        rt.unload_bundle(bundle_id("provider"))
    assert str(info.value) == (
        'cannot unload bundle `provider`: still-loaded bundles declared a dependency on it: '
        '["blocker"]')
    assert phases == []
    assert call_u32(rt.resolve_guest_contract(provider)) == [99]
    rt.unload_bundle(user.id)
    rt.unload_bundle(bundle_id("provider"))
    assert rt.list_bundles() == []


def depends_on(*contracts: str) -> str:
    return "".join(f'\n[[dependency]]\nkind = "contract"\ncontract = "{c}"\n'
                   f'min_version = "1.0"\ncontract_id = {cid(c)}\n' for c in contracts)


def test_unload_names_each_dependent_once_sorted(rt: polyplug.Runtime,
                                                 tmp_path: Path) -> None:
    """Dependents come from the registry's contract → declaring bundles index: a bundle
    declaring two of the provider's contracts is named once, the provider's own
    declaration and unrelated ones are not, and unloading a dependent releases it."""
    prov = rt.load_bundle(write_bundle(tmp_path, "prov2", lua_source(
        contract("dep.a"), contract("dep.b")), depends_on("dep.a")))
    zeta = rt.load_bundle(write_bundle(tmp_path, "zeta", lua_source(contract("z.x")),
                                       depends_on("dep.b", "dep.a")))
    alpha = rt.load_bundle(write_bundle(tmp_path, "alpha", lua_source(contract("a.x")),
                                        depends_on("dep.b")))
    mid = rt.load_bundle(write_bundle(tmp_path, "mid", lua_source(contract("m.x")),
                                      depends_on("dep.other")))

    def blocked_by() -> str:
        with pytest.raises(polyplug.DependencyInUse) as info:
            rt.unload_bundle(prov.id)
        return str(info.value).split("declared a dependency on it: ")[1]

    assert blocked_by() == '["alpha", "zeta"]'
    rt.unload_bundle(zeta.id)
    assert blocked_by() == '["alpha"]'
    rt.unload_bundle(alpha.id)
    rt.unload_bundle(prov.id)
    assert rt.list_bundles() == [mid.id]


def test_get_dependencies_during_reload_init(
    rt: polyplug.Runtime, tmp_path: Path, provider: GuestContractHandle,
) -> None:
    bundle = write_bundle(tmp_path, "deps_reload", dependent_source(cid(PROVIDER)),
                          dependency_toml(min_version="1.0"))
    rt.load_bundle(bundle)
    rt.reload_bundle(bundle)
    got = call_u32(user_iface(rt), 2, 5)
    target = cid(PROVIDER)
    # one DependencyInfo: contract_id as written, min_version "1.0" parsed as a bare u32
    # (so 0, upstream's rule), bundle_id 0 (none declared)
    assert got == [1, target & 0xFFFFFFFF, target >> 32, 0, 0]
    # and the reload's init window still enforces (and grants) the declared dependency
    assert call_u32(user_iface(rt), 0, 3) == [provider.index, provider.generation, 1]


# ── registrations a guest makes itself through HostApi during init ───────────

MANUAL_PRELUDE = """
local abi = require("abi")
CODES = {}
local function manual(hostp, name, cid, plugin)
    local desc = ffi.new("PluginDescriptor")
    desc.name.ptr = ffi.cast("const uint8_t *", plugin)
    desc.name.len = #plugin
    desc.contract_name.ptr = ffi.cast("const uint8_t *", name)
    desc.contract_name.len = #name
    desc.version.major = 1
    local iface = ffi.new("GuestContractInterface")
    iface.contract_id = cid
    iface.contract_version.major = 1
    iface.dispatch_type = abi.DispatchType.VirtualMachine
    -- never called by these tests: any non-null address passes validation
    iface.create_instance = ffi.cast("GuestCreateInstanceFn", 16)
    iface.destroy_instance = ffi.cast("GuestDestroyInstanceFn", 16)
    iface.dispatch.vm.call = ffi.cast("VmCallFn", 16)
    local err = ffi.new("AbiError[1]")
    err[0].code = 12345
    hostp.register_guest_contract(hostp, desc, iface, err)
    CODES[#CODES + 1] = err[0].code
end
"""


def manual_source(fail: bool, twice: bool = False) -> str:
    target = cid("manual.x")
    body = (
        '    local hostp = ffi.cast("HostApi *", ffi.cast("uintptr_t", host))\n'
        f'    manual(hostp, "manual.x@1", {target}ULL, "first")\n'
        + (f'    manual(hostp, "manual.x@1", {target}ULL, "second")\n' if twice else "")
        + ('    error("failing after a manual registration")\n' if fail else "")
    )
    entry = (
        '["manual.report"] = { factory = function(h) return {} end, functions = { '
        '[0] = function(inst, a, out) local o = ffi.cast("uint32_t *", '
        'ffi.cast("uintptr_t", out)); for i, c in ipairs(CODES) do o[i - 1] = c end end } }'
    )
    return lua_source(entry, prelude=MANUAL_PRELUDE, init_body=body)


def test_manual_registration_during_init_is_attributed_to_the_bundle(
    rt: polyplug.Runtime, tmp_path: Path,
) -> None:
    m = rt.load_bundle(write_bundle(tmp_path, "manual_ok", manual_source(fail=False)))
    assert call_u32(rt.resolve_guest_contract(rt.find_guest_contract(cid("manual.report"))), 0, 1) == [0]
    h = rt.find_guest_contract_by_bundle(m.id, cid("manual.x"))
    assert h == rt.find_guest_contract(cid("manual.x"))
    with pytest.raises(polyplug.PluginNotFound):
        rt.find_guest_contract_by_bundle(0, cid("manual.x"))
    iface = rt.resolve_guest_contract(h)
    assert int(ffi.cast("uintptr_t", iface.create_instance)) == 16  # a copy of the guest's struct
    rt.unload_bundle(m.id)
    with pytest.raises(polyplug.StaleHandle):
        rt.resolve_guest_contract(h)
    with pytest.raises(polyplug.PluginNotFound):
        rt.find_guest_contract(cid("manual.x"))


def test_duplicate_provider_within_one_bundle_load(rt: polyplug.Runtime, tmp_path: Path,
                                                   records: list[Any]) -> None:
    """Impossible through the Lua registrations table, possible through HostApi: code 7."""
    m = rt.load_bundle(write_bundle(tmp_path, "manual_dup", manual_source(fail=False, twice=True)))
    report = rt.resolve_guest_contract(rt.find_guest_contract(cid("manual.report")))
    assert call_u32(report, 0, 2) == [0, lib.AbiErrorCode_DuplicateProvider]
    assert len(rt.find_all_by_contract(cid("manual.x"))) == 1
    text = "duplicate provider for contract `manual.x@1`: `first` already registered"
    assert (LogLevel.Error, "registry", text) in records
    assert rt.find_guest_contract_by_bundle(m.id, cid("manual.x"))


def test_failed_load_rolls_back_manual_registrations(rt: polyplug.Runtime,
                                                     tmp_path: Path) -> None:
    revision = rt.revision()
    with pytest.raises(polyplug.InitFailed) as info:
        rt.load_bundle(write_bundle(tmp_path, "manual_fail", manual_source(fail=True)))
    assert "failing after a manual registration" in str(info.value)
    assert rt.revision() != revision  # it was registered, then retired
    with pytest.raises(polyplug.PluginNotFound):
        rt.find_guest_contract(cid("manual.x"))
    assert rt.find_all_by_contract(cid("manual.x")) == []
    assert rt.list_bundles() == []
    # the slot it used is free again for the next registration
    rt.load_bundle(write_bundle(tmp_path, "after_fail", lua_source(contract("af.x", value=4))))
    h = rt.find_guest_contract(cid("af.x"))
    assert h.index == 0 and h.generation == 1
    assert call_u32(rt.resolve_guest_contract(h)) == [4]


def test_reloading_the_first_provider_keeps_it_first(rt: polyplug.Runtime,
                                                     tmp_path: Path) -> None:
    first = write_bundle(tmp_path, "rp_first", lua_source(contract("rp.x", value=1)))
    rt.load_bundle(first)
    rt.load_bundle(write_bundle(tmp_path, "rp_second", lua_source(contract("rp.x", value=2))))
    h = rt.find_guest_contract(cid("rp.x"))
    rewrite(first, lua_source(contract("rp.x", value=11)))
    rt.reload_bundle(first)
    assert rt.find_guest_contract(cid("rp.x")) == h
    assert [call_u32(rt.resolve_guest_contract(x)) for x in rt.find_all_by_contract(cid("rp.x"))] == [[11], [2]]


def test_reload_refreshes_plugin_name(rt: polyplug.Runtime, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, "rename", lua_source(contract("rn.x", plugin="old-name")))
    m = rt.load_bundle(bundle)
    rewrite(bundle, lua_source(contract("rn.x", plugin="new-name")))
    rt.reload_bundle(bundle)
    info = ffi.new("pp_slot_info[]", 2)
    assert lib.pp_registry_bundle_slots(rt._ptr(), m.id, info, 2) == 1
    assert ffi.string(info[0].plugin_name) == b"new-name"


# ── PluginNotFound says which contract and what is loaded ────────────────────


def test_plugin_not_found_names_the_contract_and_other_majors(rt: polyplug.Runtime,
                                                               tmp_path: Path) -> None:
    rt.load_bundle(write_bundle(tmp_path, "calc", lua_source(contract("my.calc"))))
    wanted = guest_contract_id("my.calc", 2)
    with pytest.raises(polyplug.PluginNotFound) as info:
        rt.contract("my.calc", 2)
    assert str(info.value) == (
        f"no plugin found for contract_id=0x{wanted:016X} with min_version=2: no loaded "
        "bundle provides `my.calc@2`; loaded: `my.calc@1` (bundle `calc`) — ask for that "
        "major instead")
    assert info.value.contract_id == f"0x{wanted:016X}"
    # the raw lookup by id finds the name too (it is among the loaded names)
    with pytest.raises(polyplug.PluginNotFound, match=r"no loaded bundle provides `my\.calc@2`"):
        rt.find_guest_contract(wanted, 2)
    with pytest.raises(polyplug.PluginNotFound, match=r"no loaded bundle provides `my\.calc@2`"):
        rt.registry().find(wanted, 2)


def test_plugin_not_found_suggests_similar_names(rt: polyplug.Runtime, tmp_path: Path) -> None:
    rt.load_bundle(write_bundle(tmp_path, "calc", lua_source(contract("my.calc"),
                                                             contract("other.thing"))))
    with pytest.raises(polyplug.PluginNotFound) as info:
        rt.contract("my.calk", 1)
    assert str(info.value).endswith(": no loaded bundle provides `my.calk@1`; did you mean "
                                    "`my.calc@1`?")
    with pytest.raises(polyplug.PluginNotFound) as info:
        rt.contract("unrelated", 1)
    assert str(info.value).endswith(": no loaded bundle provides `unrelated@1` (loaded: "
                                    "my.calc@1, other.thing@1)")


def test_plugin_not_found_with_nothing_loaded(rt: polyplug.Runtime) -> None:
    with pytest.raises(polyplug.PluginNotFound) as info:
        rt.contract("my.calc", 1)
    assert str(info.value).endswith(": no loaded bundle provides `my.calc@1` (no bundle is "
                                    "loaded)")


# ── scale (issue 19) ─────────────────────────────────────────────────────────


def test_ten_thousand_bundles_load_look_up_and_unload() -> None:
    """10,000 bundles in one runtime (own process: about 650 MB and a few seconds):
    lookups find each bundle's own contract, a contract they all provide lists them in
    load order, unloading half makes their handles stale and hands the contract on,
    the freed slots are reused lowest first, and everything unloads."""
    run_scenario("ten_thousand_bundles", ["loaded 10000 bundles", "lookups ok",
                                          "unloaded half", "slots reused", "all unloaded"],
                 timeout=300)
