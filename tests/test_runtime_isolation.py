"""Runtime isolation (design rule 12: no process-global runtime state) and the runtime
lifecycle: close(), ``with``, RuntimeClosed, and the upstream C entry points
``polyplug_runtime_create`` / ``polyplug_runtime_destroy``.
"""

from __future__ import annotations

import gc
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_child

import polyplug
from polyplug import LogLevel, ffi, guest_contract_id, lib

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "test_plugin_lua"
ADD = guest_contract_id("test.add", 1)
FIXTURE_ID = polyplug.bundle_id("test_plugin_lua")

COUNTER_BUNDLE = """
local ffi = require("ffi")
COUNT = 0
function polyplug_init(host, ctx)
    return {
        ["test.counter"] = {
            contract_version = 1,
            factory = function(h) return {} end,
            functions = { [0] = function(inst, a, out)
                COUNT = COUNT + 1
                ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = COUNT
            end },
        },
    }, { code = 0 }
end
"""


def add(rt: polyplug.Runtime, a: int, b: int) -> int:
    iface = rt.resolve_guest_contract(rt.find_guest_contract(ADD, 1))
    args = ffi.new("uint32_t[2]", [a, b])
    out = ffi.new("uint32_t *")
    err = ffi.new("AbiError *")
    lib.pp_call(iface, ffi.NULL, 0, 0, args, out, ffi.NULL, err)
    assert err.code == 0
    return int(out[0])


def call_fn(rt: polyplug.Runtime, contract_id: int, fn_id: int) -> tuple[int, int]:
    iface = rt.resolve_guest_contract(rt.find_guest_contract(contract_id))
    out = ffi.new("uint32_t *")
    err = ffi.new("AbiError *")
    lib.pp_call(iface, ffi.NULL, 0, fn_id, ffi.NULL, out, ffi.NULL, err)
    return int(err.code), int(out[0])


class Logged:
    def __init__(self) -> None:
        self.records: list[tuple[LogLevel, str, str]] = []

    def __call__(self, level: LogLevel, scope: str, message: str) -> None:
        self.records.append((level, scope, message))


@pytest.fixture
def pair() -> Iterator[tuple[polyplug.Runtime, polyplug.Runtime, Logged, Logged]]:
    log1, log2 = Logged(), Logged()
    rt1 = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).logger(log1).build()
    rt2 = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).logger(log2).build()
    yield rt1, rt2, log1, log2
    rt1.close()
    rt2.close()


def counter_bundle(tmp_path: Path) -> Path:
    d = tmp_path / "counter"
    if not d.exists():
        d.mkdir()
        (d / "manifest.toml").write_text(
            f'name = "counter"\nid = {polyplug.bundle_id("counter")}\nloader = "lua"\n'
            'file = "bundle.lua"\n')
        (d / "bundle.lua").write_text(COUNTER_BUNDLE)
    return d


# ── isolation ────────────────────────────────────────────────────────────────


def test_two_runtimes_load_the_same_bundle_independently(pair: Any) -> None:
    rt1, rt2, _, _ = pair
    rt1.load_bundle(FIXTURE)
    rt2.load_bundle(FIXTURE)  # not "already loaded": the other runtime is another world
    assert add(rt1, 3, 4) == 7 and add(rt2, 10, 20) == 30
    assert rt1.host_api != rt2.host_api
    assert rt1.host_api.runtime != rt2.host_api.runtime
    i1 = rt1.resolve_guest_contract(rt1.find_guest_contract(ADD))
    i2 = rt2.resolve_guest_contract(rt2.find_guest_contract(ADD))
    assert i1 != i2
    assert i1.dispatch.vm.loader_data.data != i2.dispatch.vm.loader_data.data


def test_unloading_in_one_runtime_leaves_the_other_callable(pair: Any) -> None:
    rt1, rt2, _, _ = pair
    rt1.load_bundle(FIXTURE)
    rt2.load_bundle(FIXTURE)
    h2 = rt2.find_guest_contract(ADD)
    iface2 = rt2.resolve_guest_contract(h2)
    rt1.unload_bundle(FIXTURE_ID)
    with pytest.raises(polyplug.PluginNotFound):
        rt1.find_guest_contract(ADD)
    assert rt1.list_bundles() == []
    assert rt2.list_bundles() == [FIXTURE_ID]
    assert rt2.find_guest_contract(ADD) == h2
    assert rt2.resolve_guest_contract(h2) == iface2
    assert add(rt2, 1, 2) == 3


def test_closing_one_runtime_leaves_the_other_callable(pair: Any) -> None:
    rt1, rt2, _, _ = pair
    rt1.load_bundle(FIXTURE)
    rt2.load_bundle(FIXTURE)
    rt1.close()
    gc.collect()
    assert add(rt2, 40, 2) == 42


def test_lua_state_is_per_runtime(pair: Any, tmp_path: Path) -> None:
    rt1, rt2, _, _ = pair
    bundle = counter_bundle(tmp_path)
    rt1.load_bundle(bundle)
    rt2.load_bundle(bundle)
    cid = guest_contract_id("test.counter", 1)
    assert [call_fn(rt1, cid, 0)[1] for _ in range(3)] == [1, 2, 3]
    assert call_fn(rt2, cid, 0) == (0, 1)


def test_last_error_is_per_runtime(pair: Any) -> None:
    rt1, rt2, _, _ = pair
    h1, h2 = rt1.host_api, rt2.host_api
    err = ffi.new("AbiError *")
    h1.unload_bundle(h1, 12345, err)
    assert err.code == 1
    n = h1.get_error_len(h1)
    assert n > 0
    assert h2.get_error_len(h2) == 0
    assert h2.get_last_error(h2, ffi.NULL, 0) == 0
    assert h1.get_error_len(h1) == n  # reading rt2 did not clear rt1
    h2.load_bundle(h2, ffi.NULL, 0, err)
    assert h2.get_error_len(h2) == len("null path pointer in load_bundle")
    assert h1.get_error_len(h1) == n
    assert h1.get_last_error(h1, ffi.NULL, 0) == n
    assert h1.get_error_len(h1) == 0
    assert h2.get_error_len(h2) > 0


def test_logs_go_to_each_runtimes_own_logger(pair: Any) -> None:
    rt1, rt2, log1, log2 = pair
    for rt, text in ((rt1, b"to one"), (rt2, b"to two")):
        host = rt.host_api
        keep = [ffi.new("uint8_t[]", b"iso"), ffi.new("uint8_t[]", text)]
        scope = ffi.new("StringView *", (keep[0], 3))
        msg = ffi.new("StringView *", (keep[1], len(text)))
        host.log(host, 2, scope[0], msg[0])
    assert log1.records == [(LogLevel.Warn, "iso", "to one")]
    assert log2.records == [(LogLevel.Warn, "iso", "to two")]


def test_guest_errors_are_logged_by_the_calling_runtime(pair: Any) -> None:
    rt1, rt2, log1, log2 = pair
    rt1.load_bundle(FIXTURE)
    rt2.load_bundle(FIXTURE)
    log1.records.clear()
    log2.records.clear()
    code, _ = call_fn(rt1, ADD, 2)  # fn 2 raises "test_plugin_lua: deliberate failure"
    assert code == lib.AbiErrorCode_Generic
    assert log2.records == []
    assert any(lvl == LogLevel.Error and scope == "loader.lua" and "deliberate failure" in msg
               for lvl, scope, msg in log1.records)
    log1.records.clear()
    call_fn(rt2, ADD, 2)
    assert log1.records == []
    assert any("deliberate failure" in msg for _, _, msg in log2.records)


def test_revision_counters_are_per_runtime(pair: Any) -> None:
    rt1, rt2, _, _ = pair
    p1 = rt1.host_api.revision_counter(rt1.host_api)
    p2 = rt2.host_api.revision_counter(rt2.host_api)
    assert p1 != p2
    rt1.load_bundle(FIXTURE)
    assert p1[0] > 0 and p2[0] == 0


def test_reload_phases_are_per_runtime(tmp_path: Path) -> None:
    bundle = tmp_path / "plugin"
    shutil.copytree(FIXTURE, bundle)
    seen1: list[Any] = []
    seen2: list[Any] = []
    cfg1 = polyplug.RuntimeConfig(hot_reload_enabled=True, on_reload=seen1.append)
    cfg2 = polyplug.RuntimeConfig(hot_reload_enabled=True, on_reload=seen2.append)
    with polyplug.Runtime(cfg1, [polyplug.LuaLoader()]) as rt1, \
            polyplug.Runtime(cfg2, [polyplug.LuaLoader()]) as rt2:
        rt1.load_bundle(bundle)
        rt2.load_bundle(bundle)
        rt1.reload_bundle(bundle)
        assert [p.type for p in seen1] == [polyplug.ReloadPhaseType.Preparing,
                                           polyplug.ReloadPhaseType.Reloaded]
        assert seen2 == []
        rt2.unload_bundle(FIXTURE_ID)
        assert [p.type for p in seen2] == [polyplug.ReloadPhaseType.Unloading]
        assert len(seen1) == 2


def test_one_loader_object_serves_two_runtimes(tmp_path: Path) -> None:
    loader = polyplug.LuaLoader()
    with polyplug.RuntimeBuilder().loader(loader).build() as rt1, \
            polyplug.RuntimeBuilder().loader(loader).build() as rt2:
        rt1.load_bundle(FIXTURE)
        rt2.load_bundle(FIXTURE)
        rt1.unload_bundle(FIXTURE_ID)
        assert add(rt2, 5, 6) == 11


def test_runtimes_used_concurrently_from_threads(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as rt:
                for i in range(30):
                    rt.load_bundle(FIXTURE)
                    assert add(rt, i, 1) == i + 1
                    rt.unload_bundle(FIXTURE_ID)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# ── close ────────────────────────────────────────────────────────────────────


def test_close_then_use_raises_runtime_closed() -> None:
    rt = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build()
    rt.load_bundle(FIXTURE)
    registry = rt.registry()
    handle = rt.find_guest_contract(ADD)
    assert not rt.closed
    rt.close()
    assert rt.closed
    calls = [
        lambda: rt.host_api,
        lambda: rt.load_bundle(FIXTURE),
        lambda: rt.unload_bundle(FIXTURE_ID),
        lambda: rt.find_guest_contract(ADD),
        lambda: rt.find_guest_contract_by_bundle(FIXTURE_ID, ADD),
        lambda: rt.find_all_by_contract(ADD),
        lambda: rt.resolve_guest_contract(handle),
        lambda: rt.list_bundles(),
        lambda: rt.revision(),
        lambda: rt.log(LogLevel.Warn, "s", "m"),
        lambda: rt.register_loader(polyplug.LuaLoader()),
        lambda: registry.find(ADD),
        lambda: registry.invalidate_bundle(FIXTURE_ID),
    ]
    for call in calls:
        with pytest.raises(polyplug.RuntimeClosed) as info:
            call()
        assert isinstance(info.value, polyplug.RuntimeError)
        assert "closed" in str(info.value)


# Arguments for every public Runtime method, so the test below calls each one; a new
# method without an entry here fails the test (and so gets its closed check).
CLOSED_CALLS: dict[str, tuple[Any, ...]] = {
    "bundle_contracts": (FIXTURE_ID,), "bundle_memory": (FIXTURE_ID,), "contract": ("test.add",),
    "find_all_by_contract": (ADD,), "find_guest_contract": (ADD,),
    "find_guest_contract_by_bundle": (FIXTURE_ID, ADD), "list_bundles": (),
    "load_bundle": (FIXTURE,), "load_bundle_from_source": (None, None),
    "log": (LogLevel.Warn, "s", "m"), "manifest": (FIXTURE_ID,),
    "register_loader": (None,), "registry": (), "reload_bundle": (FIXTURE,),
    "resolve_guest_contract": (polyplug.GuestContractHandle(0, 0),), "revision": (),
    "unload_bundle": (FIXTURE_ID,), "__enter__": (),
    "provide_host_contract": (polyplug.HostContract("x.y", 1),),
    "withdraw_host_contract": ("x.y", 1),
}


def test_every_runtime_method_raises_runtime_closed_after_close() -> None:
    rt = polyplug.RuntimeBuilder().hot_reload().loader(polyplug.LuaLoader()).build()
    manifest = rt.load_bundle(FIXTURE)
    rt.close()
    methods = {name for name in dir(polyplug.Runtime) if not name.startswith("_")
               and callable(getattr(polyplug.Runtime, name))} | {"__enter__"}
    assert methods - {"close"} == set(CLOSED_CALLS)
    for name, args in CLOSED_CALLS.items():
        with pytest.raises(polyplug.RuntimeClosed, match="the runtime is closed"):
            getattr(rt, name)(*args)
    # also when the bundle is given by name or manifest, or a bad path is given
    for call in (lambda: rt.manifest("test_plugin_lua"), lambda: rt.unload_bundle(manifest),
                 lambda: rt.load_bundle("/nonexistent"), lambda: rt.contract("x@1"),
                 lambda: rt.load_bundle_from_source(manifest, polyplug.BundleSource.Code("")),
                 lambda: rt.host_api):
        with pytest.raises(polyplug.RuntimeClosed):
            call()
    rt.close()  # close itself stays safe
    assert rt.closed and rt.config.hot_reload_enabled


def test_reload_after_close_raises_runtime_closed(tmp_path: Path) -> None:
    rt = polyplug.Runtime(polyplug.RuntimeConfig(hot_reload_enabled=True), [polyplug.LuaLoader()])
    rt.close()
    with pytest.raises(polyplug.RuntimeClosed):
        rt.reload_bundle(FIXTURE)


def test_close_twice_is_fine() -> None:
    rt = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build()
    rt.load_bundle(FIXTURE)
    rt.close()
    rt.close()
    assert rt.closed


def test_with_block_closes() -> None:
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as rt:
        rt.load_bundle(FIXTURE)
        assert add(rt, 2, 2) == 4
    assert rt.closed
    with pytest.raises(polyplug.RuntimeClosed):
        rt.find_guest_contract(ADD)
    rt.close()  # and closing again after the block is fine


def test_with_block_closes_on_exception() -> None:
    rt = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build()
    with pytest.raises(ZeroDivisionError), rt:
        rt.load_bundle(FIXTURE)
        1 / 0  # noqa: B018
    assert rt.closed


def test_dropping_an_unclosed_runtime_frees_it() -> None:
    for _ in range(20):
        rt = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build()
        rt.load_bundle(FIXTURE)
        assert add(rt, 1, 1) == 2
        del rt
        gc.collect()


# ── the upstream C entry points ──────────────────────────────────────────────


def test_polyplug_runtime_create_with_null_config() -> None:
    host = lib.polyplug_runtime_create(ffi.NULL)
    assert host != ffi.NULL
    try:
        assert host.runtime != ffi.NULL
        rt = lib.pp_runtime_from_host(host)
        assert rt != ffi.NULL
        assert lib.pp_runtime_host(rt) == host
        assert not lib.pp_runtime_hot_reload_enabled(rt)
        assert lib.pp_runtime_compatibility(rt) == lib.Compatibility_Strict
        assert host.revision_counter(host)[0] == 0
        assert host.get_error_len(host) == 0
        arr = host.list_bundles(host)
        assert arr.items == ffi.NULL and arr.len == 0
        p = host.alloc(host, 64, 64)
        assert p != ffi.NULL and int(ffi.cast("uintptr_t", p)) % 64 == 0
        host.free(host, p, 64, 64)
        # a bare C runtime reads manifest.toml itself: no loader yet...
        path = str(FIXTURE).encode()
        err = ffi.new("AbiError *")
        host.load_bundle(host, path, len(path), err)
        assert err.code == 1
        n = host.get_error_len(host)
        buf = ffi.new("char[]", n)
        host.get_last_error(host, ffi.cast("uint8_t *", buf), n)
        assert 'declares loader "lua" but no loader is registered' in \
            ffi.buffer(buf, n)[:].decode()
        # ...then a loader registered through the table, and the load by path works
        host.register_loader(host, lib.pp_lua_loader_new(ffi.NULL), err)
        assert err.code == 0
        host.load_bundle(host, path, len(path), err)
        assert err.code == 0
        arr = host.list_bundles(host)
        assert arr.len == 1
        host.free(host, ffi.cast("uint8_t *", arr.items), 8, arr.align)
    finally:
        lib.polyplug_runtime_destroy(host)


def test_polyplug_runtime_create_copies_the_config() -> None:
    cfg = ffi.new("RuntimeConfig *")
    cfg.compatibility = lib.Compatibility_Relaxed
    cfg.hot_reload_enabled = True
    cfg.log_max_level = lib.LogLevel_Trace
    host = lib.polyplug_runtime_create(cfg)
    assert host != ffi.NULL
    try:
        ffi.memmove(cfg, b"\0" * ffi.sizeof("RuntimeConfig"), ffi.sizeof("RuntimeConfig"))
        rt = lib.pp_runtime_from_host(host)
        assert lib.pp_runtime_hot_reload_enabled(rt)
        assert lib.pp_runtime_compatibility(rt) == lib.Compatibility_Relaxed
    finally:
        lib.polyplug_runtime_destroy(host)


def test_two_c_runtimes_are_distinct() -> None:
    a = lib.polyplug_runtime_create(ffi.NULL)
    b = lib.polyplug_runtime_create(ffi.NULL)
    try:
        assert a != b and a.runtime != b.runtime
        err = ffi.new("AbiError *")
        a.unload_bundle(a, 99, err)
        assert a.get_error_len(a) > 0 and b.get_error_len(b) == 0
    finally:
        lib.polyplug_runtime_destroy(a)
        lib.polyplug_runtime_destroy(b)


def test_polyplug_runtime_create_rejects_an_invalid_config() -> None:
    cfg = ffi.new("RuntimeConfig *")
    cfg.compatibility = 7
    assert lib.polyplug_runtime_create(cfg) == ffi.NULL
    cfg.compatibility = 0
    cfg.signature_policy = 3
    assert lib.polyplug_runtime_create(cfg) == ffi.NULL
    cfg.signature_policy = 0
    cfg.trusted_keys.len = 2  # with a NULL items pointer
    assert lib.polyplug_runtime_create(cfg) == ffi.NULL


def test_pp_runtime_new_reports_why() -> None:
    cfg = ffi.new("RuntimeConfig *")
    cfg.compatibility = 9
    err = ffi.new("pp_error *")
    assert lib.pp_runtime_new(cfg, err) == ffi.NULL
    assert err.status == lib.PP_ERR_INVALID_ARGUMENT
    assert b"compatibility must be 0..2" in ffi.string(err.message)


def test_polyplug_runtime_destroy_null_is_a_noop() -> None:
    # in a child: a NULL dereference would kill the process, not just fail the test
    proc = run_child("""
        from polyplug import ffi, lib
        assert lib.polyplug_runtime_destroy(ffi.NULL) is None
        assert lib.pp_runtime_free(ffi.NULL) is None
        host = lib.polyplug_runtime_create(ffi.NULL)
        assert host != ffi.NULL
        lib.polyplug_runtime_destroy(host)
        print("survived")
    """)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "survived\n", "")


def test_destroy_with_a_loaded_bundle() -> None:
    """A C-created runtime with a bundle loaded through pp_runtime_load is torn down whole."""
    host = lib.polyplug_runtime_create(ffi.NULL)
    rt = lib.pp_runtime_from_host(host)
    err = ffi.new("pp_error *")
    loader = lib.pp_lua_loader_new(ffi.NULL)
    assert lib.pp_runtime_add_loader(rt, loader, err) == 0
    lib.pp_loader_release(loader)
    m = ffi.new("pp_manifest *")
    keep = []

    def view(s: bytes) -> Any:
        buf = ffi.new("uint8_t[]", s)
        keep.append(buf)
        return ffi.new("StringView *", (buf, len(s)))[0]

    m.id = FIXTURE_ID
    m.name = view(b"test_plugin_lua")
    m.loader = view(b"lua")
    m.file = view(b"test_plugin.lua")
    m.path = view(str(FIXTURE).encode())
    src = ffi.new("pp_source *")
    src.kind = lib.PP_SOURCE_PATH
    src.data = view(str(FIXTURE).encode())
    assert lib.pp_runtime_load(rt, m, src, err) == 0, ffi.string(err.message)
    h = host.find_guest_contract(host, ADD, 1)
    assert h.index != 0xFFFFFFFF
    lib.polyplug_runtime_destroy(host)


# ── bundles by id, name or manifest ──────────────────────────────────────────


def test_bundles_are_named_by_id_name_or_manifest() -> None:
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as rt:
        manifest = rt.load_bundle(FIXTURE)
        assert rt.manifest("test_plugin_lua") is rt.manifest(FIXTURE_ID)
        assert rt.bundle_memory("test_plugin_lua") > 0
        [info] = rt.bundle_contracts(manifest)
        assert (info.contract, info.name, info.major, info.functions, info.bundle_id) == (
            "test.add@1", "test.add", 1, 3, FIXTURE_ID)
        with pytest.raises(polyplug.BundleNotFound) as info_err:
            rt.unload_bundle("test_plugin")
        assert str(info_err.value) == ("bundle not found: no loaded bundle is named "
                                       "`test_plugin` (loaded: test_plugin_lua); did you mean "
                                       "`test_plugin_lua`?")
        with pytest.raises(TypeError, match=r"a bundle is given by its id \(int\), its name "
                                            r"\(str\) or its ManifestData, not float"):
            rt.unload_bundle(1.0)  # type: ignore[arg-type]
        rt.unload_bundle("test_plugin_lua")
        assert rt.list_bundles() == []
        with pytest.raises(polyplug.BundleNotFound, match=r"\(loaded: none\)$"):
            rt.manifest("test_plugin_lua")
        rt.load_bundle(FIXTURE)
        rt.unload_bundle(manifest)
        assert rt.list_bundles() == []


def test_a_bundle_loaded_by_relative_path_survives_chdir(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "work" / "lazy"
    d.mkdir(parents=True)
    (d / "manifest.toml").write_text(
        f'name = "lazy"\nid = {polyplug.bundle_id("lazy")}\nloader = "lua"\nfile = "main.lua"\n')
    (d / "helper.lua").write_text("return { value = 41 }\n")
    (d / "main.lua").write_text(
        'local ffi = require("ffi")\n'
        "function polyplug_init()\n"
        '    return { ["lazy.c"] = { factory = function() return {} end, functions = {\n'
        "        [0] = function(_, _, out)  -- requires its helper only when called\n"
        '            ffi.cast("uint32_t *", out)[0] = require("helper").value + 1\n'
        "        end } } }, { code = 0 }\n"
        "end\n")
    monkeypatch.chdir(tmp_path / "work")
    with polyplug.RuntimeBuilder().hot_reload().loader(polyplug.LuaLoader()).build() as rt:
        manifest = rt.load_bundle("lazy")
        monkeypatch.chdir(tmp_path)
        assert call_fn(rt, guest_contract_id("lazy.c", 1), 0) == (0, 42)
        assert manifest.path == d and manifest.path.is_absolute()
        rt.reload_bundle(manifest.path)
        assert call_fn(rt, guest_contract_id("lazy.c", 1), 0) == (0, 42)
