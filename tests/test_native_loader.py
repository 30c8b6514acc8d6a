"""The native loader (``loader = "native"``): C shared-library bundles behind the same
registry as Lua bundles.

Every bundle here is a real shared library built from tests/native/plug.c (variants by
-D switch, tests/native_plugins.py), loaded with dlopen by the C host, called through
the registry's native dispatch from Python, and mixed with real Lua bundles.
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import native_plugins as plugins
import pytest
from conftest import ROOT, run_scenario, write_typed_bundle

import polyplug
from polyplug import (
    BundleSource,
    DispatchType,
    FunctionNotAvailable,
    GuestError,
    InitFailed,
    NativeConfig,
    NativeLoader,
    PathEscape,
    PluginNotFound,
    ReentrantCall,
    StaleHandle,
    UnsupportedBundleSource,
    ffi,
    lib,
)

MATH = plugins.MATH
SIGS = """
[contracts."native.math@1".functions]
add = { id = 0, args = ["u32", "u32"], returns = "u32" }
tag = { id = 1, returns = "u32" }
fail = { id = 2 }
greet = { id = 3, args = ["string"], returns = "string" }
count = { id = 4, returns = "u64" }
lua_add = { id = 5, args = ["u32", "u32"], returns = "u32" }
statics = { id = 6, returns = "u64" }
spin = { id = 7, args = ["u32"], returns = "u32" }
context = { id = 8, returns = "string" }
"""


@pytest.fixture(scope="module", autouse=True)
def built() -> dict[str, Path]:
    return plugins.build_all()


def runtime(*, hot_reload: bool = False, copy_dir: Any = None, **config: Any) -> polyplug.Runtime:
    native = NativeLoader(NativeConfig(copy_dir=copy_dir)) if copy_dir else NativeLoader()
    cfg = polyplug.RuntimeConfig(hot_reload_enabled=hot_reload, **config)
    return polyplug.RuntimeBuilder().config(cfg).loader(native).loader(
        polyplug.LuaLoader()).build()


def native_bundle(tmp_path: Path, variant: str = "plug", name: str = "nplug",
                  file: str = "libplug.so") -> Path:
    return plugins.bundle(tmp_path, name, variant, file, extra=SIGS)


def copies(where: Path) -> list[Path]:
    return sorted(where.glob("polyplug-native-*/*"))


# ── loading and calling ──────────────────────────────────────────────────────


def test_load_and_call_through_the_call_layer(tmp_path: Path) -> None:
    with runtime() as rt:
        m = rt.load_bundle(native_bundle(tmp_path))
        assert (m.name, m.loader) == ("nplug", "native")
        math = rt.contract(MATH, 1)
        assert math.add(7, 35) == 42
        assert math.add(2**32 - 1, 1) == 0  # u32 wraps in C, as declared
        assert math.tag() == 1
        assert math.greet("polyplug") == "Hello, polyplug!"
        assert math.greet("") == "Hello, !"
        iface = math.interface
        assert iface.dispatch_type == DispatchType.Native
        assert iface.dispatch.native.function_count == plugins.MATH_FUNCTIONS
        [info] = rt.bundle_contracts("nplug")
        assert (info.contract, info.plugin, info.functions) == (
            f"{MATH}@1", "native-test-plugin", plugins.MATH_FUNCTIONS)


def test_errors_from_native_functions(tmp_path: Path) -> None:
    with runtime() as rt:
        rt.load_bundle(native_bundle(tmp_path))
        math = rt.contract(MATH, 1)
        with pytest.raises(polyplug.CallError, match="^native failure$") as exc:
            math.fail()
        assert exc.value.code == 300
        with pytest.raises(FunctionNotAvailable, match="count needs an instance"):
            math.count()
        with pytest.raises(FunctionNotAvailable, match=r"registered 9 function\(s\)"):
            math.function(9, [], "u32")()


def test_instances_have_their_own_state(tmp_path: Path) -> None:
    with runtime() as rt:
        rt.load_bundle(native_bundle(tmp_path))
        math = rt.contract(MATH, 1)
        with math.instance() as a, math.instance() as b:
            assert [a.count(), a.count(), b.count(), a.count()] == [1, 2, 1, 3]
            assert a.greet("a") == "Hello, a!"
            assert b.greet("b") == "Hello, b!"
            assert a.id != 0 and a.id != b.id


def test_init_context_names_the_bundle_and_the_artifact_directory(tmp_path: Path) -> None:
    with runtime() as rt:
        d = native_bundle(tmp_path, file="lib/x86/libplug.so")
        rt.load_bundle(d)
        bid, path = rt.contract(MATH, 1).context().split(" ", 1)
        assert int(bid, 16) == polyplug.bundle_id("nplug")
        assert Path(path) == (d / "lib" / "x86").resolve()


def test_statics_belong_to_one_load(tmp_path: Path) -> None:
    """Each load opens its own copy: two runtimes (and a load after an unload) do not
    share the library's static variables."""
    d = native_bundle(tmp_path)
    with runtime() as rt1, runtime() as rt2:
        rt1.load_bundle(d)
        rt2.load_bundle(d)
        one, two = rt1.contract(MATH, 1), rt2.contract(MATH, 1)
        assert [one.statics(), one.statics(), two.statics(), one.statics()] == [1, 2, 1, 3]
        rt1.unload_bundle("nplug")
        rt1.load_bundle(d)
        assert rt1.contract(MATH, 1).statics() == 1


def test_loader_name_and_hot_reload_support() -> None:
    loader = NativeLoader()
    assert loader.loader_name() == "native"
    assert loader.supports_hot_reload()


def test_direct_loader_load_and_its_failure_registers_nothing(tmp_path: Path) -> None:
    with runtime() as rt:
        m = polyplug.read_manifest(native_bundle(tmp_path))
        NativeLoader().load(m, BundleSource.Path(m.path), rt)
        # no bookkeeping: no signature table either, so the types are given here
        assert rt.contract(MATH, 1).function(0, ["u32", "u32"], "u32")(1, 2) == 3
    with runtime() as rt:
        m = polyplug.read_manifest(native_bundle(tmp_path / "b", "plug_init_code"))
        with pytest.raises(InitFailed, match="init returned error code 5"):
            NativeLoader().load(m, BundleSource.Path(m.path), rt)
        with pytest.raises(PluginNotFound):
            rt.contract(MATH, 1)


# ── every error of the protocol, with its message ────────────────────────────


def _expect_load_failure(rt: polyplug.Runtime, bundle: Path, exc_type: type[Exception],
                         message: str) -> Exception:
    """Loading fails with exactly ``message`` and leaves the runtime as it was."""
    with pytest.raises(exc_type) as info:
        rt.load_bundle(bundle)
    assert str(info.value) == message
    assert rt.list_bundles() == []
    assert rt.registry().find_all(polyplug.guest_contract_id(MATH, 1)) == []
    with pytest.raises(PluginNotFound):
        rt.contract(MATH, 1)
    return info.value


@pytest.mark.parametrize("variant, detail", [
    ("plug_no_abi_symbol", "missing symbol 'polyplug_abi_version' in bundle '{path}'"),
    ("plug_abi_v2", "ABI version mismatch in {path}: expected=1, found=2"),
    ("plug_no_init", "init symbol missing: {path} does not export `polyplug_init` (expected "
                     "`AbiError polyplug_init(const HostApi *host, const BundleInitContext "
                     "*ctx)`)"),
    ("plug_init_code", "init returned error code 5"),
    ("plug_init_msg", "the plugin refused to start"),
    ("plug_null_entry", "register_guest_contract: dispatch.native.functions contains a null "
                        "entry within function_count"),
    ("plug_undefined", "failed to load plugin library at {path}: undefined symbol: "
                       "plug_symbol_nothing_defines"),
])
def test_protocol_errors(tmp_path: Path, variant: str, detail: str) -> None:
    d = native_bundle(tmp_path, variant)
    path = str(d.resolve() / "libplug.so")
    with runtime() as rt:
        exc = _expect_load_failure(rt, d, InitFailed,
                                   "init failed for bundle `nplug`: " + detail.format(path=path))
        assert exc.bundle == "nplug"
        rt.load_bundle(native_bundle(tmp_path / "good"))  # the runtime still works
        assert rt.contract(MATH, 1).tag() == 1


def test_missing_and_unloadable_artifacts(tmp_path: Path) -> None:
    with runtime() as rt:
        d = native_bundle(tmp_path, None)
        path = d.resolve() / "libplug.so"
        _expect_load_failure(rt, d, InitFailed,
                             f"init failed for bundle `nplug`: failed to canonicalize artifact "
                             f"path {path}: No such file or directory (os error 2)")
        path.write_text("not an ELF file\n" * 16)
        exc = _expect_load_failure(
            rt, d, InitFailed,
            f"init failed for bundle `nplug`: failed to load plugin library at {path}: "
            "invalid ELF header")
        assert "polyplug-native-" not in str(exc)  # the copy's name is never shown
        path.unlink()
        path.mkdir()
        _expect_load_failure(rt, d, InitFailed,
                             f"init failed for bundle `nplug`: failed to load plugin library at "
                             f"{path}: not a regular file")
        path.rmdir()
        os.mkfifo(path)  # never opened for a blocking read
        _expect_load_failure(rt, d, InitFailed,
                             f"init failed for bundle `nplug`: failed to load plugin library at "
                             f"{path}: not a regular file")


ESCAPE = ("bundle `nplug` artifact `{file}` resolves outside the bundle directory (path "
          "traversal or symlink escape)")


def test_symlinked_artifacts_are_refused_even_inside(tmp_path: Path) -> None:
    with runtime() as rt:
        inside = native_bundle(tmp_path / "in", file="libplug.so")
        (inside / "real.so").write_bytes((inside / "libplug.so").read_bytes())
        (inside / "libplug.so").unlink()
        (inside / "libplug.so").symlink_to("real.so")
        exc = _expect_load_failure(rt, inside, PathEscape, ESCAPE.format(file="libplug.so"))
        assert (exc.bundle, exc.path) == ("nplug", "libplug.so")
        outside = native_bundle(tmp_path / "out", None)
        (outside / "libplug.so").symlink_to(plugins.build("plug"))
        _expect_load_failure(rt, outside, PathEscape, ESCAPE.format(file="libplug.so"))


def test_paths_leaving_the_bundle_directory_are_refused(tmp_path: Path) -> None:
    native_bundle(tmp_path, name="other")
    with runtime() as rt:
        d = native_bundle(tmp_path, None, file="../other/libplug.so")
        _expect_load_failure(rt, d, PathEscape, ESCAPE.format(file="../other/libplug.so"))
        d2 = native_bundle(tmp_path / "x", None, name="nplug", file="lib/libplug.so")
        (d2 / "lib").symlink_to(tmp_path / "other")
        _expect_load_failure(rt, d2, PathEscape, ESCAPE.format(file="lib/libplug.so"))


@pytest.mark.parametrize("source, kind", [(BundleSource.Code("x"), "code"),
                                          (BundleSource.Bytes(b"\x7fELF"), "bytes")])
def test_in_memory_sources_are_refused(tmp_path: Path, source: BundleSource, kind: str) -> None:
    with runtime() as rt:
        m = polyplug.read_manifest(native_bundle(tmp_path))
        with pytest.raises(UnsupportedBundleSource) as info:
            rt.load_bundle_from_source(m, source)
        assert str(info.value) == (f"loader `native` does not support bundle source kind "
                                   f"`{kind}` (bundle `nplug`): a native bundle is a shared "
                                   "library in a bundle directory")
        assert (info.value.loader, info.value.source_kind) == ("native", kind)
        assert rt.list_bundles() == []


def test_a_registration_init_then_refuses_is_dropped(tmp_path: Path) -> None:
    """plug_init_msg registers native.math@1, then returns code 300: nothing stays."""
    with runtime() as rt:
        rt.load_bundle(write_typed_bundle(tmp_path, "lua_other", LUA_MIXED, "mixed.lua", 3))
        with pytest.raises(InitFailed, match="the plugin refused to start"):
            rt.load_bundle(native_bundle(tmp_path, "plug_init_msg"))
        assert rt.list_bundles() == [polyplug.bundle_id("lua_other")]
        assert [c.contract for c in rt.bundle_contracts("lua_other")] == ["mixed.lua@1"]
        assert rt.registry().find_all(polyplug.guest_contract_id(MATH, 1)) == []


def test_no_loader_registered_names_the_native_loader(tmp_path: Path) -> None:
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as rt:
        with pytest.raises(polyplug.NoLoaderForName, match=r"NativeLoader\(\)"):
            rt.load_bundle(native_bundle(tmp_path))


def test_bundle_memory_is_not_measured_for_native_bundles(tmp_path: Path) -> None:
    with runtime() as rt:
        rt.load_bundle(native_bundle(tmp_path))
        with pytest.raises(polyplug.InvalidArgument, match="native bundle"):
            rt.bundle_memory("nplug")


# ── copies of the artifact ───────────────────────────────────────────────────


def test_copies_live_until_the_runtime_is_freed(tmp_path: Path) -> None:
    where = tmp_path / "copies"
    where.mkdir()
    rt = runtime(hot_reload=True, copy_dir=where)
    d = native_bundle(tmp_path)
    rt.load_bundle(d)
    [first] = copies(where)
    assert first.name == "libplug.so" and first.read_bytes() == (d / "libplug.so").read_bytes()
    rt.reload_bundle(d)
    assert len(copies(where)) == 2  # the old version stays mapped: cached pointers use it
    rt.unload_bundle("nplug")
    assert len(copies(where)) == 2
    with pytest.raises(InitFailed):  # init never ran: that copy goes at once
        rt.load_bundle(native_bundle(tmp_path / "v", "plug_abi_v2"))
    assert len(copies(where)) == 2
    rt.close()
    del rt
    gc.collect()
    assert list(where.iterdir()) == []


def test_an_unusable_copy_directory_is_reported(tmp_path: Path) -> None:
    with runtime(copy_dir=tmp_path / "missing") as rt:
        d = native_bundle(tmp_path)
        with pytest.raises(InitFailed, match=re.escape(
                f"failed to load plugin library at {d.resolve() / 'libplug.so'}: cannot make a "
                f"directory for its copy in {tmp_path / 'missing'}: No such file or directory")):
            rt.load_bundle(d)


# ── reload and unload ────────────────────────────────────────────────────────


def raw_fn(iface: Any, fn_id: int) -> Any:
    """The library's function ``fn_id`` as a cffi function pointer (what a raw caller caches)."""
    return ffi.cast("NativeGuestFn", iface.dispatch.native.functions[fn_id])


def raw_u32(fn: Any, *args: int) -> int:
    a = ffi.new("uint32_t[]", list(args) or [0])
    out = ffi.new("uint32_t *")
    err = ffi.new("AbiError *")
    fn(ffi.new("GuestContractInstance *")[0], a, out, err)
    assert err.code == 0
    return int(out[0])


def test_reload_runs_the_new_build(tmp_path: Path) -> None:
    phases: list[str] = []
    with runtime(hot_reload=True, on_reload=lambda p: phases.append(p.type.name)) as rt:
        d = native_bundle(tmp_path)
        rt.load_bundle(d)
        math = rt.contract(MATH, 1)
        handle = math.handle
        old_tag = raw_fn(math.interface, 1)
        plugins.install("plug_v2", d / "libplug.so")
        rt.reload_bundle(d)
        assert phases == ["Preparing", "Reloaded"]
        assert math.tag() == 2                    # same handle, new library
        assert rt.find_guest_contract(math.contract_id, 1) == handle
        assert raw_u32(old_tag) == 1              # a cached pointer still runs the old one
        extra = rt.contract("native.extra", 1)
        assert extra.function(0, [], "u32")() == 77
        old_extra = raw_fn(extra.interface, 0)
        plugins.install("plug_v3", d / "libplug.so")
        rt.reload_bundle(d)
        assert math.tag() == 3
        with pytest.raises(StaleHandle):          # v3 dropped native.extra@1
            extra.function(0, [], "u32")()
        assert raw_u32(old_extra) == 77           # its library is still mapped
        (d / "libplug.so").write_text("a broken build\n" * 16)
        with pytest.raises(InitFailed, match="invalid ELF header"):
            rt.reload_bundle(d)
        assert phases[-1] == "Failed"
        assert math.tag() == 3                    # the previous version keeps serving
        assert math.statics() == 1                # ... with its own statics


def test_unload_makes_handles_stale_but_cached_pointers_stay_callable(tmp_path: Path) -> None:
    with runtime() as rt:
        d = native_bundle(tmp_path)
        rt.load_bundle(d)
        math = rt.contract(MATH, 1)
        add = raw_fn(math.interface, 0)
        rt.unload_bundle("nplug")
        with pytest.raises(StaleHandle):
            math.add(1, 2)
        assert raw_u32(add, 20, 22) == 42  # no StaleHandle here: it is the library itself
        plugins.install("plug_v3", d / "libplug.so")
        rt.load_bundle(d)                  # a load after an unload reads the file again
        assert rt.contract(MATH, 1).tag() == 3


def test_a_timeout_does_not_stop_native_code_but_a_set_cancel_token_refuses(tmp_path: Path
                                                                            ) -> None:
    with runtime() as rt:
        rt.load_bundle(native_bundle(tmp_path))
        slow = rt.contract(MATH, 1, timeout=0.001)
        assert slow.spin(20000) == 1       # 20 ms, past the 1 ms limit: native code runs on
        token = polyplug.CancelToken()
        token.cancel()
        with pytest.raises(polyplug.Cancelled, match="cancelled before it started"):
            rt.contract(MATH, 1, cancel=token).add(1, 2)
        token.reset()
        assert rt.contract(MATH, 1, cancel=token).add(1, 2) == 3


# ── native and Lua bundles together ──────────────────────────────────────────

LUA_MIXED = """
local ffi = require("ffi")
local abi = require("abi")
local pg = require("polyplug_guest")

local MATH = abi.guest_contract_id("native.math", 1)
local host

-- fn 0: add, for the native bundle to call
local function add(_, args_ptr, out_ptr)
    local a = pg.ptr(args_ptr, "const uint32_t *")
    pg.ptr(out_ptr, "uint32_t *")[0] = a[0] + a[1]
end

-- call fn `fn_id` of native.math@1 with two u32 operands (the native dispatch formula)
local function native(fn_id, a, b)
    local h = host.find_guest_contract(host, MATH, 1)
    local iface = host.resolve_guest_contract(host, h)
    if iface == nil then error("native.math@1 is not loaded", 0) end
    assert(iface.dispatch_type == abi.DispatchType.Native)
    local fn = ffi.cast("NativeGuestFn", iface.dispatch.native.functions[fn_id])
    local args, out = ffi.new("uint32_t[2]", a, b), ffi.new("uint32_t[1]")
    local err = ffi.new("AbiError[1]")
    fn(ffi.new("GuestContractInstance"), args, out, err)
    if err[0].code ~= 0 then
        error(("native call failed (%d): %s"):format(err[0].code, abi.to_str(err[0].message)), 0)
    end
    return out[0]
end

-- fn 1: a * b + native add(a, b), in Lua over the native contract
local function mixed(_, args_ptr, out_ptr)
    local a = pg.ptr(args_ptr, "const uint32_t *")
    pg.ptr(out_ptr, "uint32_t *")[0] = a[0] * a[1] + native(0, a[0], a[1])
end

-- fn 2: the native lua_add (fn 5), which calls back into this very VM
local function roundtrip(_, args_ptr, out_ptr)
    local a = pg.ptr(args_ptr, "const uint32_t *")
    pg.ptr(out_ptr, "uint32_t *")[0] = native(5, a[0], a[1])
end

function polyplug_init(host_ptr)
    host = pg.cast_host_interface(host_ptr)
    return { ["mixed.lua"] = { factory = function() return {} end,
                               functions = { [0] = add, [1] = mixed, [2] = roundtrip } } },
           { code = 0 }
end
"""

MIXED_SIGS = """add = { id = 0, args = ["u32", "u32"], returns = "u32" }
mixed = { id = 1, args = ["u32", "u32"], returns = "u32" }
roundtrip = { id = 2, args = ["u32", "u32"], returns = "u32" }
"""


def test_native_and_lua_bundles_call_each_other(tmp_path: Path) -> None:
    with runtime() as rt:
        rt.load_bundle(write_typed_bundle(tmp_path, "mixed", LUA_MIXED, "mixed.lua", 3,
                                          MIXED_SIGS))
        with pytest.raises(GuestError, match="native.math@1 is not loaded"):
            rt.contract("mixed.lua", 1).mixed(6, 7)
        rt.load_bundle(native_bundle(tmp_path))
        math, lua = rt.contract(MATH, 1), rt.contract("mixed.lua", 1)
        assert math.lua_add(40, 2) == 42         # C -> Lua (vm.call)
        assert lua.mixed(6, 7) == 6 * 7 + 13     # Lua -> C (native dispatch)
        # Lua -> C -> the same Lua VM: refused as re-entry, and the error travels back
        with pytest.raises(GuestError, match=r"native call failed \(9\)"):
            lua.roundtrip(1, 2)
        assert lua.add(1, 2) == 3 and math.add(1, 2) == 3  # both fine afterwards


def test_reentrant_call_is_reported_to_the_native_caller(tmp_path: Path) -> None:
    with runtime() as rt:
        rt.load_bundle(write_typed_bundle(tmp_path, "mixed", LUA_MIXED, "mixed.lua", 3,
                                          MIXED_SIGS))
        rt.load_bundle(native_bundle(tmp_path))
        iface = rt.contract("mixed.lua", 1).interface
        err = ffi.new("AbiError *")
        out = ffi.new("uint32_t *")
        # the Lua bundle calls native lua_add, which calls fn 0 of the same Lua VM
        lib.pp_call(iface, ffi.NULL, 0, 2, ffi.new("uint32_t[2]", [1, 2]), out, ffi.NULL, err)
        assert err.code == 1  # the Lua function failed; the native call's code was 9
        assert f"native call failed ({int(ReentrantCall.code)})" in ffi.string(
            err.message.ptr, err.message.len).decode()


# ── concurrency ──────────────────────────────────────────────────────────────


def test_reload_and_unload_under_concurrent_calls() -> None:
    """Threads call the native bundle (call layer and cached raw pointers) while it is
    reloaded between two builds, unloaded and loaded again: every call returns a tag of
    a build that was loaded, or StaleHandle while it is unloaded; nothing crashes."""
    out = run_scenario("native_reload_under_calls", ["reloads=60", "bad=0", "finished"],
                       timeout=300)
    counts = dict(re.findall(r"(\w+)=(\d+)", out))
    assert int(counts["calls"]) > 1000 and int(counts["raw"]) > 1000, out
    assert set(re.findall(r"tags=\[([\d, ]+)\]", out)[0].split(", ")) == {"1", "3"}, out


# ── signing ──────────────────────────────────────────────────────────────────


def test_signature_covers_the_artifact(tmp_path: Path) -> None:
    from polyplug import signing

    d = native_bundle(tmp_path)
    seed = bytes(range(32))
    signing.sign_bundle(d, seed)
    config: dict[str, Any] = {"signature_policy": polyplug.SignaturePolicy.Required}
    with runtime(**config) as rt:
        rt.load_bundle(d)
        assert rt.contract(MATH, 1).tag() == 1
    plugins.install("plug_v3", d / "libplug.so")  # a different build, same file name
    with runtime(**config) as rt:
        with pytest.raises(polyplug.SignatureVerificationFailed):
            rt.load_bundle(d)
        assert rt.list_bundles() == []


def test_a_library_swapped_during_signed_loads_never_runs_unsigned(tmp_path: Path) -> None:
    # the library is read once, verified, and the loader's private copy is written from
    # those bytes: a build swapped in while the bundle loads is refused or not run
    import threading

    from polyplug import signing

    d = native_bundle(tmp_path)
    signing.sign_bundle(d, bytes(range(32)))
    signed, unsigned = (plugins.build(v).read_bytes() for v in ("plug", "plug_v3"))
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            for data in (unsigned, signed):
                tmp = d / ".libplug.so.tmp"
                tmp.write_bytes(data)
                os.replace(tmp, d / "libplug.so")

    seen: dict[Any, int] = {}
    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    try:
        for _ in range(20):  # a runtime keeps every library it loaded until it is freed
            with runtime(signature_policy=polyplug.SignaturePolicy.Required) as rt:
                for _ in range(20):
                    try:
                        m = rt.load_bundle(d)
                    except polyplug.SignatureVerificationFailed:
                        seen["refused"] = seen.get("refused", 0) + 1
                        continue
                    tag = rt.contract(MATH, 1).tag()
                    seen[tag] = seen.get(tag, 0) + 1
                    rt.unload_bundle(m.id)
            if seen.get("refused", 0) >= 10 and seen.get(1, 0) >= 10:
                break
    finally:
        stop.set()
        swapper.join()
    assert set(seen) <= {"refused", 1}, seen
    assert seen.get("refused", 0) >= 10 and seen.get(1, 0) >= 10, seen


# ── the Python call layer stays safe after close ─────────────────────────────


def test_calls_after_close_raise(tmp_path: Path) -> None:
    rt = runtime()
    rt.load_bundle(native_bundle(tmp_path))
    math = rt.contract(MATH, 1)
    rt.close()
    with pytest.raises(polyplug.RuntimeClosed):
        math.add(1, 2)


def test_examples_native_checksum_builds_and_answers(tmp_path: Path) -> None:
    """examples/native/checksum: built with its own Makefile (into a copy, the header from
    polyplug.get_include()), loaded, called."""
    d = tmp_path / "checksum"
    shutil.copytree(ROOT / "examples" / "native" / "checksum", d)
    import subprocess

    proc = subprocess.run(["make", "-C", str(d), f"PYTHON={sys.executable}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with runtime() as rt:
        rt.load_bundle(d)
        c = rt.contract("example.checksum", 1)
        assert c.fnv1a("hello") == polyplug.fnv1a_64(b"hello")
        import zlib

        assert c.crc32("The quick brown fox") == zlib.crc32(b"The quick brown fox")
        assert c.hex(0xDEADBEEF) == "00000000deadbeef"
        with c.instance() as running:
            running.update("hel")
            assert running.update("lo") == polyplug.fnv1a_64(b"hello")
        with pytest.raises(FunctionNotAvailable, match="needs an instance"):
            c.update("x")
