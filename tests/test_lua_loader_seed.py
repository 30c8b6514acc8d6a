"""Port of the upstream seed ``lua_loader_tests.rs`` (polyplug_lua 0.1.1) to pytest.

Integration tests for LuaLoader and the Lua VM initialization / bundle loading
pipeline.  Every Rust ``#[test] fn <name>`` is ``def test_<name>`` here (pytest only
collects ``test*`` functions), with the same assertions, in the same order, under the
same section comments.

Registration shape: ``polyplug_init`` RETURNS ``(registrations, abi_error)``; each
``registrations[<contract>]`` entry carries a ``factory(host_ptr) -> impl`` (the loader
calls it to build the default impl and every per-instance impl) and a ``functions``
table whose entries have the signature ``(instance, args_ptr, out_ptr, arena_ptr,
arena_alloc)``.

Rust -> Python: ``Err(LoaderError::InitFailed{..})`` is ``pytest.raises(InitFailed)``,
a registry ``.is_err()`` is ``pytest.raises(PluginNotFound)``, and a raw
``(vtable.dispatch.vm.call)(...)`` is ``call_vm`` from ``conftest.py``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

import pytest
from conftest import call_vm, make_manifest, write_temp_bundle

import polyplug
from polyplug import (
    AbiErrorCode,
    BundleId,
    BundleSource,
    Compatibility,
    DispatchType,
    GuestContractId,
    LogLevel,
    LuaConfig,
    LuaLoader,
    ManifestData,
    Runtime,
    RuntimeBuilder,
    RuntimeConfig,
    ffi,
)

# The seed's test names, collected by the hook in conftest.py under exactly these names.
SEED_TESTS = (
    "lua_loader_loader_name_is_lua",
    "lua_state_initializes_on_first_load",
    "lua_state_init_is_idempotent",
    "load_valid_bundle_succeeds",
    "load_syntax_error_returns_script_load_failed",
    "load_runtime_error_in_init_returns_init_raised_error",
    "load_missing_polyplug_init_returns_typed_error",
    "load_nonexistent_path_returns_script_load_failed",
    "vtable_is_registered_after_load",
    "registrations_attributed_to_real_bundle_id",
    "vtable_function_count_matches_script",
    "vtable_contract_id_matches_computed_hash",
    "sequential_loads_both_succeed",
    "multi_contract_bundle_registers_all_contracts",
    "concurrent_loaders_do_not_race",
    "vtable_function_dispatch_returns_abi_ok",
    "lua_reload_disabled_returns_error",
    "code_source_loads_and_dispatches_like_path",
    "bytes_source_with_valid_utf8_loads_and_dispatches",
    "bytes_source_with_invalid_utf8_returns_structured_error",
    "lua_reload_reinitializes_contracts",
    "dispatch_failure_is_logged_through_host_logger",
    "guest_log_bridge_delivers_records_and_clamps_level",
    "load_init_returning_error_code_fails_load",
    "load_init_returning_ok_code_succeeds",
)

# ── Helpers ───────────────────────────────────────────────────────────────────


def seed_bundle_script(name: str) -> bytes:
    """A seed script, from the bundle the C-host parity scenarios load too (one copy)."""
    return (Path(__file__).parent / "parity" / "bundles" / name / "bundle.lua").read_bytes()


def make_runtime() -> Runtime:
    return RuntimeBuilder().loader(LuaLoader(LuaConfig())).build()


def valid_plugin_script() -> bytes:
    """A minimal valid Lua plugin implementing ``test.loader@1`` with one no-op function."""
    return seed_bundle_script("seed_valid")


def two_function_plugin_script() -> bytes:
    """A Lua plugin that defines two functions so we can verify function_count."""
    return seed_bundle_script("seed_two_fn")


def two_contract_plugin_script() -> bytes:
    """A Lua plugin registering TWO distinct contracts in one bundle.

    Regression fixture for the multi-contract bug: the old flat ``_polyplug_handlers``
    table with a first-wins guard silently dropped the second contract.
    """
    return seed_bundle_script("seed_multi")


def load_script(path: Path, name: str) -> None:
    """Load the Lua source at ``path`` via ``LuaLoader.load``; raises on failure."""
    loader = LuaLoader(LuaConfig())
    runtime = make_runtime()
    manifest = make_manifest(path, name)
    loader.load(manifest, BundleSource.Path(manifest.path), runtime)


# ── Tests ─────────────────────────────────────────────────────────────────────

# ── 1. Runtime name ──────────────────────────────────────────────────────────


def lua_loader_loader_name_is_lua() -> None:
    """The Lua loader's name is "lua"."""
    loader = LuaLoader(LuaConfig())
    assert loader.loader_name() == "lua"


# ── 2. Lua state initialization ──────────────────────────────────────────────


def lua_state_initializes_on_first_load(tmp_path: Path) -> None:
    """Loading a valid bundle succeeds, which implies the LuaJIT VM initialized."""
    _dir, path = write_temp_bundle(tmp_path, "lua_loader_init_test", valid_plugin_script())
    # Must not raise: the Lua VM must initialize and the bundle must load.
    load_script(path, "lua_loader_init_test")


def lua_state_init_is_idempotent(tmp_path: Path) -> None:
    """A second ``LuaLoader.load`` of the same file succeeds too (idempotent init)."""
    _dir, path = write_temp_bundle(tmp_path, "lua_loader_idempotent", valid_plugin_script())
    load_script(path, "lua_loader_idempotent")  # first load must succeed
    # Second load of the same file: VM is already initialized — must not fail.
    load_script(path, "lua_loader_idempotent")


# ── 3. Bundle loading — valid script ─────────────────────────────────────────


def load_valid_bundle_succeeds(tmp_path: Path) -> None:
    """A valid bundle loads."""
    _dir, path = write_temp_bundle(tmp_path, "lua_loader_valid", valid_plugin_script())
    load_script(path, "lua_loader_valid")


# ── 4. Bundle loading — syntax error ─────────────────────────────────────────


def load_syntax_error_returns_script_load_failed(tmp_path: Path) -> None:
    """A Lua syntax error fails the load with InitFailed."""
    _dir, path = write_temp_bundle(
        tmp_path,
        "lua_loader_syntax_error",
        b"function polyplug_init( -- SYNTAX ERROR: unclosed paren\n",
    )
    with pytest.raises(polyplug.InitFailed):
        load_script(path, "lua_loader_syntax_error")


# ── 5. Bundle loading — runtime error in polyplug_init ───────────────────────


def load_runtime_error_in_init_returns_init_raised_error(tmp_path: Path) -> None:
    """``polyplug_init`` raising a Lua error fails the load with InitFailed."""
    _dir, path = write_temp_bundle(
        tmp_path,
        "lua_loader_runtime_err",
        b"function polyplug_init(_reg, _ctx)\n  error('deliberate runtime error')\nend\n",
    )
    with pytest.raises(polyplug.InitFailed):
        load_script(path, "lua_loader_runtime_err")


# ── 6. Missing polyplug_init ─────────────────────────────────────────────────


def load_missing_polyplug_init_returns_typed_error(tmp_path: Path) -> None:
    """A script that defines no ``polyplug_init`` fails the load with InitFailed."""
    _dir, path = write_temp_bundle(
        tmp_path, "lua_loader_no_init", b"local x = 1  -- no polyplug_init\n"
    )
    with pytest.raises(polyplug.InitFailed):
        load_script(path, "lua_loader_no_init")


# ── 7. Non-existent file ──────────────────────────────────────────────────────


def load_nonexistent_path_returns_script_load_failed(tmp_path: Path) -> None:
    """A missing entry file fails the load with InitFailed."""
    path = tmp_path / "this_file_does_not_exist_42.lua"
    with pytest.raises(polyplug.InitFailed):
        load_script(path, "nonexistent")


# ── 8. VTable registration ────────────────────────────────────────────────────


def vtable_is_registered_after_load(tmp_path: Path) -> None:
    """After a load the registry holds the contract, with the right function count."""
    _dir, path = write_temp_bundle(tmp_path, "lua_loader_vtable", valid_plugin_script())
    loader = LuaLoader(LuaConfig())
    runtime = make_runtime()
    manifest = make_manifest(path, "lua_loader_vtable")
    loader.load(manifest, BundleSource.Path(manifest.path), runtime)

    contract_id = polyplug.guest_contract_id("test.loader", 1)
    # Raises PluginNotFound unless the registry contains test.loader@1 after load.
    handle = runtime.registry().find(GuestContractId.from_u64(contract_id), 0)
    # Raises unless the handle resolves to a vtable.
    vtable = runtime.registry().resolve_guest_contract(handle)
    assert vtable != ffi.NULL, "handle must resolve to a vtable"
    # valid_plugin_script has exactly one function: fn_id 0 must dispatch to Ok,
    # and fn_id 1 must report FunctionNotAvailable.
    assert_function_count(vtable, 1)


def registrations_attributed_to_real_bundle_id(tmp_path: Path) -> None:
    """Contracts are attributed to the bundle's REAL id (not bundle 0).

    Registration runs after ``polyplug_init`` returns, so the init-bundle window must
    stay open across the registration loop; invalidating by the real id removes them.
    """
    _dir, path = write_temp_bundle(tmp_path, "lua_loader_attribution", valid_plugin_script())
    loader = LuaLoader(LuaConfig())
    runtime = make_runtime()
    manifest = make_manifest(path, "lua_loader_attribution")
    bundle_id = manifest.id
    loader.load(manifest, BundleSource.Path(manifest.path), runtime)

    contract_id = polyplug.guest_contract_id("test.loader", 1)

    # The contract must be findable under the REAL bundle id (raises otherwise).
    runtime.find_guest_contract_by_bundle(bundle_id, contract_id, 0)

    # And it must NOT be attributed to bundle 0.
    with pytest.raises(polyplug.PluginNotFound):
        runtime.find_guest_contract_by_bundle(0, contract_id, 0)

    # Invalidating by the real bundle id must remove the contract from the registry.
    runtime.registry().invalidate_bundle(BundleId.from_u64(bundle_id))
    with pytest.raises(polyplug.PluginNotFound):
        runtime.registry().find(GuestContractId.from_u64(contract_id), 0)


def assert_function_count(vtable: Any, expected: int) -> None:
    """Probe fn_ids: ``0..expected`` dispatch Ok, ``expected`` is FunctionNotAvailable."""
    assert vtable.dispatch_type == DispatchType.VirtualMachine, "Lua loader must use VM dispatch"
    for fn_id in range(expected):
        # The noop functions ignore the null args/out pointers.
        result = call_vm(vtable, fn_id)
        assert result.code == AbiErrorCode.Ok, f"fn_id {fn_id} must dispatch to Ok"
    missing = call_vm(vtable, expected)
    assert (
        missing.code == AbiErrorCode.FunctionNotAvailable
    ), f"fn_id {expected} must report FunctionNotAvailable"


def vtable_function_count_matches_script(tmp_path: Path) -> None:
    """The two-function plugin exposes exactly 2 functions."""
    _dir, path = write_temp_bundle(tmp_path, "lua_loader_two_fn", two_function_plugin_script())
    loader = LuaLoader(LuaConfig())
    runtime = make_runtime()
    manifest = make_manifest(path, "lua_loader_two_fn")
    loader.load(manifest, BundleSource.Path(manifest.path), runtime)

    contract_id = polyplug.guest_contract_id("test.two", 1)
    handle = runtime.registry().find(GuestContractId.from_u64(contract_id), 0)
    vtable = runtime.registry().resolve_guest_contract(handle)
    # two_function_plugin_script must register exactly 2 functions.
    assert_function_count(vtable, 2)


def vtable_contract_id_matches_computed_hash(tmp_path: Path) -> None:
    """The vtable's contract_id is the FNV-1a id of the declared name and major."""
    _dir, path = write_temp_bundle(tmp_path, "lua_loader_cid", valid_plugin_script())
    loader = LuaLoader(LuaConfig())
    runtime = make_runtime()
    manifest = make_manifest(path, "lua_loader_cid")
    loader.load(manifest, BundleSource.Path(manifest.path), runtime)

    expected_cid = polyplug.guest_contract_id("test.loader", 1)
    handle = runtime.registry().find(GuestContractId.from_u64(expected_cid), 0)
    vtable = runtime.registry().resolve_guest_contract(handle)
    assert GuestContractId.from_u64(vtable.contract_id) == GuestContractId.from_u64(
        expected_cid
    ), "contract_id in vtable must match FNV-1a hash of 'test.loader@1'"


# ── 9. Stack management — sequential loads ────────────────────────────────────


def sequential_loads_both_succeed(tmp_path: Path) -> None:
    """Two different plugins loaded in sequence each register their own contract."""
    _dir1, path1 = write_temp_bundle(tmp_path, "lua_loader_seq1", valid_plugin_script())
    _dir2, path2 = write_temp_bundle(tmp_path, "lua_loader_seq2", two_function_plugin_script())

    loader = LuaLoader(LuaConfig())
    runtime = make_runtime()
    manifest1 = make_manifest(path1, "lua_loader_seq1")
    manifest2 = make_manifest(path2, "lua_loader_seq2")
    loader.load(manifest1, BundleSource.Path(manifest1.path), runtime)
    loader.load(manifest2, BundleSource.Path(manifest2.path), runtime)

    # Both contracts must be visible.
    cid1 = polyplug.guest_contract_id("test.loader", 1)
    cid2 = polyplug.guest_contract_id("test.two", 1)

    # test.loader must be registered (raises PluginNotFound otherwise).
    runtime.registry().find(GuestContractId.from_u64(cid1), 0)
    # test.two must be registered.
    runtime.registry().find(GuestContractId.from_u64(cid2), 0)


# ── 9b. Multi-contract bundle ─────────────────────────────────────────────────


def multi_contract_bundle_registers_all_contracts(tmp_path: Path) -> None:
    """Regression: one bundle declaring two contracts registers BOTH (no first-wins)."""
    _dir, path = write_temp_bundle(tmp_path, "lua_loader_multi", two_contract_plugin_script())
    loader = LuaLoader(LuaConfig())
    runtime = make_runtime()
    manifest = make_manifest(path, "lua_loader_multi")
    loader.load(manifest, BundleSource.Path(manifest.path), runtime)

    # Both contracts must be registered and resolvable.
    first_cid = polyplug.guest_contract_id("test.first", 1)
    second_cid = polyplug.guest_contract_id("test.second", 1)

    first_handle = runtime.registry().find(GuestContractId.from_u64(first_cid), 0)
    second_handle = runtime.registry().find(GuestContractId.from_u64(second_cid), 0)

    # Each contract must resolve to a vtable with the correct function count:
    # test.first has 1 function, test.second has 2.
    first_vtable = runtime.registry().resolve_guest_contract(first_handle)
    second_vtable = runtime.registry().resolve_guest_contract(second_handle)
    assert_function_count(first_vtable, 1)
    assert_function_count(second_vtable, 2)


# ── 10. Thread safety ─────────────────────────────────────────────────────────


def concurrent_loaders_do_not_race(tmp_path: Path) -> None:
    """Four threads load the same plugin at once, each with its own runtime and loader.

    No thread may crash; each load either succeeds or raises a recognized polyplug
    error.  Each bundle gets its own isolated Lua VM, so parallel loads are safe.
    """
    _dir, path = write_temp_bundle(tmp_path, "lua_loader_thread_safety", valid_plugin_script())

    n_threads = 4
    # outcome per thread: None until it finishes, then ("ok", None) or ("err", exc).
    outcomes: list[Optional[tuple[str, Optional[BaseException]]]] = [None] * n_threads
    start = threading.Barrier(n_threads)

    def worker(index: int) -> None:
        try:
            start.wait(timeout=30)
            loader = LuaLoader(LuaConfig())
            runtime = RuntimeBuilder().loader(LuaLoader(LuaConfig())).build()
            manifest = ManifestData(
                id=polyplug.bundle_id("lua_loader_thread_safety"),
                name="lua_loader_thread_safety",
                loader="lua",
                file=path.name,
                path=path.parent,
                version="",
                provides=[],
                function_count={},
                dependencies=[],
                needs_reinit_on_dep_reload=False,
                bundle_dependencies=[],
            )
            loader.load(manifest, BundleSource.Path(manifest.path), runtime)
            outcomes[index] = ("ok", None)
        except BaseException as exc:  # noqa: BLE001 - recorded and asserted on below
            outcomes[index] = ("err", exc)

    # Spawn 4 threads that all call LuaLoader.load on the same path.
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    for i, thread in enumerate(threads):
        # Each thread must finish (no hang / deadlock) ...
        assert not thread.is_alive(), f"thread {i} did not finish"
        outcome = outcomes[i]
        assert outcome is not None, f"thread {i} exited without recording an outcome"
        # ... and its load is either Ok or a recognized polyplug error (the Rust
        # "no panic" check): anything else is a crash.
        kind, exc = outcome
        assert kind == "ok" or isinstance(
            exc, polyplug.PolyplugError
        ), f"thread {i} raised a non-polyplug exception: {exc!r}"


# ── 11. Dispatch — calling a registered Lua function ─────────────────────────


def vtable_function_dispatch_returns_abi_ok(tmp_path: Path) -> None:
    """Calling the valid plugin's no-op function through the vtable returns Ok."""
    _dir, path = write_temp_bundle(tmp_path, "lua_loader_dispatch", valid_plugin_script())
    loader = LuaLoader(LuaConfig())
    runtime = make_runtime()
    manifest = make_manifest(path, "lua_loader_dispatch")
    loader.load(manifest, BundleSource.Path(manifest.path), runtime)

    contract_id = polyplug.guest_contract_id("test.loader", 1)
    handle = runtime.registry().find(GuestContractId.from_u64(contract_id), 0)
    vtable = runtime.registry().resolve_guest_contract(handle)

    # With VM dispatch, we call through the dispatch.vm.call function.
    assert vtable.dispatch_type == DispatchType.VirtualMachine, "Lua loader must use VM dispatch"

    # fn_id = 0 (first function); null args/out, which the noop function ignores.
    result = call_vm(vtable, 0)
    assert result.code == AbiErrorCode.Ok, f"noop function must return Ok, got code={result.code}"


# ── 12. Hot-reload ────────────────────────────────────────────────────────────


def make_runtime_with_hot_reload(enabled: bool) -> Runtime:
    """A runtime with the given hot-reload setting and a registered LuaLoader."""
    return (
        RuntimeBuilder()
        .config(
            RuntimeConfig(
                compatibility=Compatibility.Strict,
                hot_reload_enabled=enabled,
                on_reload=None,
            )
        )
        .loader(LuaLoader(LuaConfig()))
        .build()
    )


def lua_reload_disabled_returns_error(tmp_path: Path) -> None:
    """With hot reload off in the config, reload_bundle raises HotReloadDisabled.

    The loader itself supports hot reload, so the config flag (checked by the
    runtime gate, not the loader) is the sole reason the reload is refused.
    """
    _dir, path = write_temp_bundle(tmp_path, "lua_reload_disabled", valid_plugin_script())
    loader = LuaLoader(LuaConfig())
    assert (
        loader.supports_hot_reload()
    ), "the lua loader supports hot-reload; only the config flag must gate it here"
    runtime = make_runtime_with_hot_reload(False)

    with pytest.raises(polyplug.HotReloadDisabled):
        runtime.reload_bundle(path)


# ── 13. BundleSource::Code / Bytes — in-memory source loading ────────────────


def lua_fixture_dir() -> Path:
    """Absolute path to the on-disk Lua fixture bundle directory."""
    return Path(__file__).resolve().parent / "fixtures" / "test_plugin_lua"


def fixture_manifest(path: Path) -> ManifestData:
    """A ManifestData for the ``test.add@1`` fixture bundle at directory ``path``.

    ``provides`` is left empty so the function-count check is skipped; the loader
    registers test.add@1 from what ``polyplug_init`` returns regardless.
    """
    name = "test_plugin_lua"
    return ManifestData(
        id=polyplug.bundle_id(name),
        name=name,
        loader="lua",
        file="test_plugin.lua",
        path=path,
        version="1.0.0",
        provides=[],
        function_count={},
        dependencies=[],
        needs_reinit_on_dep_reload=False,
        bundle_dependencies=[],
    )


def dispatch_add(runtime: Runtime, a: int, b: int) -> int:
    """Call ``add(a, b) -> u32`` (fn_id 0) of ``test.add@1`` in ``runtime``; return the u32."""
    contract_id = polyplug.guest_contract_id("test.add", 1)
    handle = runtime.registry().find(GuestContractId.from_u64(contract_id), 0)
    vtable = runtime.registry().resolve_guest_contract(handle)

    # The fixture's add reads two u32 from args and writes one u32 to out.
    args = ffi.new("uint32_t[2]", [a, b])
    out = ffi.new("uint32_t *", 0)
    result = call_vm(vtable, 0, args, out)
    assert result.code == AbiErrorCode.Ok, f"add dispatch must return Ok, got code={result.code}"
    return int(out[0])


def code_source_loads_and_dispatches_like_path() -> None:
    """``BundleSource.Code`` registers and dispatches test.add@1 exactly like Path.

    The fixture only requires loader-provisioned SDK modules, so a Code-sourced load
    (no bundle directory) can satisfy every ``require``.
    """
    fixture_dir = lua_fixture_dir()
    entry = fixture_dir / "test_plugin.lua"
    source_text = entry.read_text(encoding="utf-8")

    # Path-loaded baseline in its own runtime.
    path_runtime = make_runtime()
    path_runtime.load_bundle_from_source(
        fixture_manifest(fixture_dir), BundleSource.Path(fixture_dir)
    )
    path_result = dispatch_add(path_runtime, 7, 35)

    # Code-loaded equivalent in a separate runtime: no bundle directory at all.
    code_runtime = make_runtime()
    code_runtime.load_bundle_from_source(
        fixture_manifest(fixture_dir), BundleSource.Code(source_text)
    )
    code_result = dispatch_add(code_runtime, 7, 35)

    assert code_result == 42, f"code-sourced add(7, 35) must compute 42, got {code_result}"
    assert code_result == path_result, "code-sourced dispatch must match path-sourced dispatch"


def bytes_source_with_valid_utf8_loads_and_dispatches() -> None:
    """``BundleSource.Bytes`` with valid UTF-8 loads like Code and dispatches identically."""
    fixture_dir = lua_fixture_dir()
    entry = fixture_dir / "test_plugin.lua"
    source_bytes = entry.read_bytes()

    runtime = make_runtime()
    runtime.load_bundle_from_source(fixture_manifest(fixture_dir), BundleSource.Bytes(source_bytes))

    result = dispatch_add(runtime, 20, 22)
    assert result == 42, "bytes-sourced add(20, 22) must compute 42"


def bytes_source_with_invalid_utf8_returns_structured_error() -> None:
    """Invalid UTF-8 ``Bytes`` fail with the structured InvalidSourceEncoding error."""
    fixture_dir = lua_fixture_dir()
    # 0xFF is never a valid UTF-8 byte.
    invalid = bytes([0x66, 0x6E, 0xFF, 0xFE, 0x00])

    runtime = make_runtime()
    with pytest.raises(polyplug.InvalidSourceEncoding) as excinfo:
        runtime.load_bundle_from_source(fixture_manifest(fixture_dir), BundleSource.Bytes(invalid))
    err = excinfo.value
    assert err.loader == "lua", "loader must be the Lua runtime name"
    assert err.source_kind == "bytes", "source_kind must be bytes"
    assert err.bundle == "test_plugin_lua", "bundle must be the manifest bundle name"


def lua_reload_reinitializes_contracts(tmp_path: Path) -> None:
    """With hot reload on, a reload succeeds and the contract stays resolvable."""
    bundle_dir, _path = write_temp_bundle(tmp_path, "lua_reload_reinit", valid_plugin_script())
    runtime = make_runtime_with_hot_reload(True)

    runtime.load_bundle(bundle_dir)  # initial bundle load must succeed

    contract_id = polyplug.guest_contract_id("test.loader", 1)
    # Contract must resolve after initial load (raises PluginNotFound otherwise).
    runtime.find_guest_contract(contract_id, 0)

    # Reload must succeed when hot-reload is enabled.
    runtime.reload_bundle(bundle_dir)

    # Contract must remain resolvable after reload.
    runtime.find_guest_contract(contract_id, 0)


# ── 16. Logger — dispatch failures route through the host logger ─────────────


def failing_plugin_script() -> bytes:
    """A Lua plugin whose single function always raises a Lua error."""
    return seed_bundle_script("seed_failing")


def dispatch_failure_is_logged_through_host_logger(tmp_path: Path) -> None:
    """A failed guest dispatch logs (Error, "loader.lua", ...) through the host logger.

    The per-VM loader data keeps its own copy of the runtime handle taken at load
    time, and the error is logged after the per-VM dispatch lock is released.
    """
    _dir, path = write_temp_bundle(tmp_path, "lua_loader_dispatch_log", failing_plugin_script())

    records: list[tuple[LogLevel, str, str]] = []
    records_lock = threading.Lock()

    def logger(level: LogLevel, scope: str, msg: str) -> None:
        with records_lock:
            records.append((level, scope, msg))

    runtime = RuntimeBuilder().logger(logger).build()

    loader = LuaLoader(LuaConfig())
    manifest = make_manifest(path, "lua_loader_dispatch_log")
    # The failing-function bundle must still load.
    loader.load(manifest, BundleSource.Path(manifest.path), runtime)

    contract_id = polyplug.guest_contract_id("test.loader", 1)
    handle = runtime.registry().find(GuestContractId.from_u64(contract_id), 0)
    vtable = runtime.registry().resolve_guest_contract(handle)

    # The failing function never reads its (args, out) pointers.
    result = call_vm(vtable, 0)
    assert (
        result.code == AbiErrorCode.Generic
    ), f"failing guest function must return Generic, got code={result.code}"

    with records_lock:
        captured = list(records)
    assert any(
        level == LogLevel.Error
        and scope == "loader.lua"
        and msg.startswith("Lua function call failed")
        and "boom from lua guest" in msg
        for level, scope, msg in captured
    ), (
        'expected an (Error, "loader.lua", "Lua function call failed: ...boom...") record, '
        f"got: {captured!r}"
    )


# ── 17. Guest logging — direct `HostApi.log` through the threaded host pointer ─


def logging_plugin_script() -> bytes:
    """A Lua plugin whose function logs via the SDK helper ``pg.log(host, ...)``.

    ``pg.log`` calls ``HostApi.log`` directly over FFI (no loader-injected global);
    the host pointer comes in through the factory.  The second call passes an
    out-of-range level so the host's clamp-to-Error is exercised.
    """
    return seed_bundle_script("seed_logging")


def guest_log_bridge_delivers_records_and_clamps_level(tmp_path: Path) -> None:
    """A guest's mid-dispatch ``HostApi.log`` reaches the host logger verbatim.

    An out-of-range level clamps to Error, and logging while the per-VM dispatch
    lock is held does not deadlock.
    """
    _dir, path = write_temp_bundle(tmp_path, "lua_loader_guest_log", logging_plugin_script())

    records: list[tuple[LogLevel, str, str]] = []
    records_lock = threading.Lock()

    def logger(level: LogLevel, scope: str, msg: str) -> None:
        with records_lock:
            records.append((level, scope, msg))

    runtime = RuntimeBuilder().logger(logger).build()

    loader = LuaLoader(LuaConfig())
    manifest = make_manifest(path, "lua_loader_guest_log")
    # The logging bundle must load.
    loader.load(manifest, BundleSource.Path(manifest.path), runtime)

    contract_id = polyplug.guest_contract_id("test.loader", 1)
    handle = runtime.registry().find(GuestContractId.from_u64(contract_id), 0)
    vtable = runtime.registry().resolve_guest_contract(handle)

    # The logging function never reads its (args, out) pointers.
    result = call_vm(vtable, 0)
    assert (
        result.code == AbiErrorCode.Ok
    ), f"logging guest function must dispatch Ok, got code={result.code}"

    with records_lock:
        captured = list(records)
    assert (
        LogLevel.Info,
        "guest.test-log",
        "hello from lua guest",
    ) in captured, (
        f'expected verbatim (Info, "guest.test-log", "hello from lua guest") record, '
        f"got: {captured!r}"
    )
    assert (
        LogLevel.Error,
        "guest.test-log",
        "out of range level",
    ) in captured, f"expected out-of-range level 99 to clamp to Error, got: {captured!r}"


# ── polyplug_init returned AbiError code ──────────────────────────────────────


def load_init_returning_error_code_fails_load(tmp_path: Path) -> None:
    """``polyplug_init`` returning a non-zero code fails the load, naming that code."""
    _dir, path = write_temp_bundle(
        tmp_path,
        "lua_loader_init_err_code",
        seed_bundle_script("seed_init_err_code"),
    )
    with pytest.raises(polyplug.InitFailed) as excinfo:
        load_script(path, "lua_loader_init_err_code")
    error = excinfo.value.error
    assert (
        "returned error code 1" in error
    ), f"error must carry the returned code, got: {error}"


def load_init_returning_ok_code_succeeds(tmp_path: Path) -> None:
    """``polyplug_init`` explicitly returning code 0 (Ok) loads successfully."""
    _dir, path = write_temp_bundle(
        tmp_path,
        "lua_loader_init_ok_code",
        seed_bundle_script("seed_init_ok_code"),
    )
    # Explicit Ok return must load.
    load_script(path, "lua_loader_init_ok_code")
