"""The error model: csrc/pp_errors.def <-> pp_status_* <-> polyplug._errors, the
exception tree, the C-to-exception bridge, and the messages typical failures produce.
"""

from __future__ import annotations

import builtins
import itertools
import re
from pathlib import Path
from typing import Any

import pytest

import polyplug
from polyplug import _errors, ffi, guest_contract_id, lib

ROOT = Path(__file__).resolve().parent.parent
DEF_FILE = ROOT / "csrc" / "pp_errors.def"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "test_plugin_lua"

ERRDEF = re.compile(r'^\s*PP_ERRDEF\(\s*(\w+)\s*,\s*"(\w+)"\s*,\s*"([^"]*)"\s*\)', re.MULTILINE)


def catalogue() -> list[tuple[str, str, str]]:
    entries = ERRDEF.findall(DEF_FILE.read_text())
    assert entries, "no PP_ERRDEF lines parsed"
    return entries


# ── .def <-> C <-> Python ────────────────────────────────────────────────────


def test_def_file_parses_completely() -> None:
    text = DEF_FILE.read_text()
    code_lines = [ln for ln in text.splitlines() if ln.startswith("PP_ERRDEF(")]
    assert len(code_lines) == len(catalogue())
    assert catalogue()[0][0] == "OK"
    names = [name for name, _, _ in catalogue()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name,cls,text", catalogue())
def test_every_def_class_exists_and_is_a_polyplug_error(name: str, cls: str, text: str) -> None:
    exc_cls = getattr(_errors, cls, None)
    assert isinstance(exc_cls, type), f"{cls} (for PP_{name}) missing from polyplug._errors"
    assert issubclass(exc_cls, _errors.PolyplugError)
    # and re-exported at the top level as the same class
    assert getattr(polyplug, cls) is exc_cls


def test_status_values_and_lookups_match_the_def() -> None:
    entries = catalogue()
    assert lib.PP_STATUS_COUNT == len(entries)
    for i, (name, cls, _) in enumerate(entries):
        assert getattr(lib, f"PP_{name}") == i
        assert ffi.string(lib.pp_status_exception(i)).decode() == cls, name
        assert ffi.string(lib.pp_status_name(i)).decode() == f"PP_{name}"


@pytest.mark.parametrize("status", [-1, -1000, None, 1000, 2**31 - 1])
def test_unknown_statuses(status: Any) -> None:
    status = lib.PP_STATUS_COUNT if status is None else status
    assert ffi.string(lib.pp_status_exception(status)) == b"RuntimeError"
    assert ffi.string(lib.pp_status_name(status)) == b"PP_UNKNOWN"


def test_c_fields_mappings_are_well_formed() -> None:
    for obj in vars(_errors).values():
        if isinstance(obj, type) and issubclass(obj, _errors.PolyplugError):
            for attr, src in obj._c_fields.items():
                assert src in ("bundle", "detail", "aux"), (obj, attr)
                assert attr.isidentifier() and attr not in ("message", "status", "code")


# ── raise_from_c: the one bridge ─────────────────────────────────────────────


def filled_error(status: int, message: str = "the message", bundle: str = "the-bundle",
                 detail: str = "the detail", aux: str = "the aux") -> Any:
    err = ffi.new("pp_error *")
    lib.pp_error_clear(err)
    err.status = status
    err.abi_code = 1
    for field, value in (("message", message), ("bundle", bundle), ("detail", detail),
                         ("aux", aux)):
        data = value.encode() + b"\0"
        ffi.memmove(getattr(err, field), data, len(data))
    return err


def test_ok_status_raises_nothing() -> None:
    _errors.raise_from_c(ffi, lib, filled_error(0))
    err = ffi.new("pp_error *")
    lib.pp_error_clear(err)
    assert err.status == 0
    _errors.raise_from_c(ffi, lib, err)


@pytest.mark.parametrize("status", range(1, len(catalogue())))
def test_raise_from_c_builds_the_def_class_with_its_fields(status: int) -> None:
    _, cls_name, _ = catalogue()[status]
    with pytest.raises(_errors.PolyplugError) as info:
        _errors.raise_from_c(ffi, lib, filled_error(status))
    exc = info.value
    assert type(exc) is getattr(_errors, cls_name)
    assert str(exc) == "the message" and exc.message == "the message"
    assert exc.status == status
    source = {"bundle": "the-bundle", "detail": "the detail", "aux": "the aux"}
    for attr, src in type(exc)._c_fields.items():
        assert getattr(exc, attr) == source[src]
    assert repr(exc).startswith(f"{cls_name}('the message'")


def test_raise_from_c_unknown_status_is_runtime_error() -> None:
    with pytest.raises(polyplug.RuntimeError) as info:
        _errors.raise_from_c(ffi, lib, filled_error(999, "weird"))
    assert type(info.value) is _errors.RuntimeError
    assert str(info.value) == "weird"


def test_raise_from_c_tolerates_bad_utf8() -> None:
    err = filled_error(lib.PP_ERR_INIT_FAILED)
    ffi.memmove(err.message, b"bad \xff byte\0", 11)
    with pytest.raises(polyplug.InitFailed) as info:
        _errors.raise_from_c(ffi, lib, err)
    assert str(info.value) == "bad \ufffd byte"


# ── the tree ─────────────────────────────────────────────────────────────────


def test_exception_tree() -> None:
    E = polyplug
    assert issubclass(E.PolyplugError, Exception)
    assert E.RuntimeError is not builtins.RuntimeError
    assert issubclass(E.RuntimeError, builtins.RuntimeError)
    assert issubclass(E.RuntimeError, E.PolyplugError)
    assert issubclass(E.InitFailed, E.LoaderError)
    assert issubclass(E.LoaderError, E.RuntimeError)
    assert issubclass(E.InitFailed, builtins.RuntimeError)
    for cls in (E.ManifestParse, E.ManifestMissingFile, E.BundleTampered, E.BundleNotADirectory,
                E.BundleReadFailed, E.PathEscape, E.NoLoaderForName, E.DuplicateLoader,
                E.UnsupportedBundleSource, E.InvalidSourceEncoding, E.FunctionCountMismatch,
                E.BundleAlreadyLoaded, E.HotReloadUnsupported):
        assert issubclass(cls, E.LoaderError), cls
    for cls in (E.PluginNotFound, E.InvalidHandle, E.StaleHandle, E.DuplicateProvider,
                E.ContractIdCollision, E.InvalidRegistration):
        assert issubclass(cls, E.RegistryError), cls
    assert issubclass(E.RegistryError, E.RuntimeError)
    assert not issubclass(E.StaleHandle, E.LoaderError)
    for cls in (E.HotReloadDisabled, E.BundleNotFound, E.DependencyInUse, E.ReloadFailed,
                E.InvalidArgument, E.OutOfMemory, E.RuntimeClosed):
        assert issubclass(cls, E.RuntimeError) and not issubclass(cls, E.LoaderError), cls
    assert issubclass(E.InvalidArgument, ValueError)
    assert issubclass(E.OutOfMemory, MemoryError)
    # call errors are not runtime (host-side) failures
    for cls in (E.GuestError, E.FunctionNotAvailable, E.ReentrantCall):
        assert issubclass(cls, E.CallError)
    assert issubclass(E.CallError, E.PolyplugError)
    assert not issubclass(E.CallError, builtins.RuntimeError)


def test_every_exported_exception_is_a_polyplug_error() -> None:
    exported = [getattr(polyplug, n) for n in polyplug.__all__]
    classes = [c for c in exported if isinstance(c, type) and issubclass(c, BaseException)]
    assert len(classes) >= 30
    for cls in classes:
        assert issubclass(cls, _errors.PolyplugError), cls


def test_catching_builtin_runtime_error_catches_polyplug_failures() -> None:
    with polyplug.Runtime() as rt, pytest.raises(builtins.RuntimeError):
        rt.find_guest_contract(guest_contract_id("none", 1))


@pytest.mark.parametrize("code,cls", [(1, _errors.GuestError), (6, _errors.FunctionNotAvailable),
                                      (9, _errors.ReentrantCall), (2, _errors.CallError),
                                      (300, _errors.CallError)])
def test_call_error_mapping(code: int, cls: type) -> None:
    err = _errors.call_error(code, "boom")
    assert type(err) is cls
    assert err.code == code and str(err) == "boom"
    assert str(_errors.call_error(code, "")) == f"guest call failed with code {code}"


# ── messages of typical failures ─────────────────────────────────────────────

_counter = itertools.count()


def write_bundle(root: Path, name: str, source: str, manifest: str | None = None,
                 loader: str = "lua") -> Path:
    d = root / f"{name}-{next(_counter)}"
    d.mkdir()
    (d / "manifest.toml").write_text(
        manifest if manifest is not None else
        f'name = "{name}"\nid = {polyplug.bundle_id(name)}\nloader = "{loader}"\n'
        'file = "bundle.lua"\n')
    (d / "bundle.lua").write_text(source)
    return d


GOOD = """
function polyplug_init(host, ctx)
    return { ["test.good"] = { factory = function(h) return {} end,
                               functions = { [0] = function() end } } }, { code = 0 }
end
"""


@pytest.fixture
def rt() -> Any:
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as runtime:
        yield runtime


def assert_untouched(rt: polyplug.Runtime, revision: int) -> None:
    assert rt.list_bundles() == []
    assert rt.revision() >= revision
    with pytest.raises(polyplug.PluginNotFound):
        rt.find_guest_contract(guest_contract_id("test.good", 1))


def test_no_loader_for_name(rt: polyplug.Runtime, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, "pybundle", GOOD, loader="python")
    with pytest.raises(polyplug.NoLoaderForName) as info:
        rt.load_bundle(bundle)
    exc = info.value
    assert str(exc) == ('bundle "pybundle" declares loader "python" but no loader is registered '
                        'for "python" (registered: "lua").\nRegister one first, e.g. '
                        "RuntimeBuilder().loader(LuaLoader()).")
    assert exc.loader_name == "python"
    assert exc.bundle == "pybundle"
    assert exc.status == lib.PP_ERR_NO_LOADER
    assert_untouched(rt, 0)


def test_no_loader_registered_at_all(tmp_path: Path) -> None:
    with polyplug.Runtime() as rt:
        with pytest.raises(polyplug.NoLoaderForName) as info:
            rt.load_bundle(write_bundle(tmp_path, "orphan", GOOD))
        assert 'no loader is registered for "lua" (registered: none).\nRegister one' in str(
            info.value)
        assert info.value.loader_name == "lua"


def test_a_loader_name_in_the_wrong_case_says_names_are_case_sensitive(
        rt: polyplug.Runtime, tmp_path: Path) -> None:
    with pytest.raises(polyplug.NoLoaderForName) as info:
        rt.load_bundle(write_bundle(tmp_path, "shouty", GOOD, loader="Lua"))
    assert str(info.value) == ('bundle "shouty" declares loader "Lua" but no loader is '
                               'registered for "Lua": loader names are case-sensitive; did you '
                               'mean "lua"? (registered: "lua")')
    assert info.value.loader_name == "Lua"
    assert_untouched(rt, 0)


def test_duplicate_loader(rt: polyplug.Runtime) -> None:
    with pytest.raises(polyplug.DuplicateLoader) as info:
        rt.register_loader(polyplug.LuaLoader())
    assert info.value.loader_name == "lua"
    assert str(info.value) == (
        'duplicate loader "lua": a loader with this name is already registered')
    with pytest.raises(polyplug.DuplicateLoader):
        polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).loader(polyplug.LuaLoader()).build()


def test_syntax_error_is_init_failed_with_the_lua_message(rt: polyplug.Runtime,
                                                          tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, "syntax", "function polyplug_init(\n  return 1 +\nend\n")
    with pytest.raises(polyplug.InitFailed) as info:
        rt.load_bundle(bundle)
    exc = info.value
    assert str(exc).startswith("init failed for bundle `syntax`: ")
    assert "Lua script load failed" in str(exc)
    assert "bundle.lua" in str(exc)
    assert exc.bundle == "syntax"
    assert exc.error and exc.error in str(exc)
    assert_untouched(rt, 0)


def test_runtime_error_in_chunk_is_init_failed(rt: polyplug.Runtime, tmp_path: Path) -> None:
    with pytest.raises(polyplug.InitFailed) as info:
        rt.load_bundle(write_bundle(tmp_path, "chunkerr", 'error("top level kaboom")'))
    assert "top level kaboom" in str(info.value)


def test_missing_polyplug_init(rt: polyplug.Runtime, tmp_path: Path) -> None:
    with pytest.raises(polyplug.InitFailed) as info:
        rt.load_bundle(write_bundle(tmp_path, "noinit", "local x = 1\n"))
    assert "Lua plugin missing polyplug_init function" in str(info.value)


@pytest.mark.parametrize("ret,needle", [
    ("return { }, { code = 0 }", "Lua plugin registered no contracts"),
    ("return { ['a.b'] = { functions = {} } }, { code = 0 }", "needs a `factory` function"),
    ("return { ['a.b'] = { factory = function() end } }, { code = 0 }",
     "missing functions table for contract 'a.b'"),
    ("return { ['a.b'] = { factory = function() end, functions = {} } }",
     "Lua polyplug_init failed"),
    ("return { ['a.b'] = { factory = function() end, functions = {} } }, { code = 5 }",
     "Lua polyplug_init returned error code 5"),
    ("error('init exploded here')", "init exploded here"),
    (("return { ['a.b'] = { factory = function() error('factory fell over') end, "
     "functions = {} } }, { code = 0 }"), "factory fell over"),
    ("return { ['a.b'] = { factory = function() end, functions = { [0] = 42 } } }, { code = 0 }",
     "Lua function slot 0 error for contract 'a.b'"),
])
def test_bad_init_results_are_init_failed(rt: polyplug.Runtime, tmp_path: Path, ret: str,
                                          needle: str) -> None:
    bundle = write_bundle(tmp_path, "badinit", f"function polyplug_init(h, c)\n  {ret}\nend\n")
    revision = rt.revision()
    with pytest.raises(polyplug.InitFailed) as info:
        rt.load_bundle(bundle)
    assert needle in str(info.value)
    assert info.value.bundle
    assert_untouched(rt, revision)
    with pytest.raises(polyplug.PluginNotFound):
        rt.find_guest_contract(guest_contract_id("a.b", 1))


def test_init_error_message_is_used_verbatim(rt: polyplug.Runtime, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, "msg", "function polyplug_init(h, c)\n"
                          "  return {}, { code = 300, message = 'custom init refusal' }\nend\n")
    with pytest.raises(polyplug.InitFailed) as info:
        rt.load_bundle(bundle)
    assert info.value.error == "custom init refusal"
    assert str(info.value).endswith("custom init refusal")


def test_failed_load_can_be_fixed_and_retried(rt: polyplug.Runtime, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, "retry", "this is not lua")
    with pytest.raises(polyplug.InitFailed):
        rt.load_bundle(bundle)
    (bundle / "bundle.lua").write_text(GOOD)
    rt.load_bundle(bundle)
    assert rt.list_bundles() == [polyplug.bundle_id("retry")]


def test_missing_manifest(rt: polyplug.Runtime, tmp_path: Path) -> None:
    d = tmp_path / "empty"
    d.mkdir()
    with pytest.raises(polyplug.ManifestParse) as info:
        rt.load_bundle(d)
    assert str(info.value).startswith(f"manifest parse error for `{d / 'manifest.toml'}`: ")
    assert "failed to read" in str(info.value)


def test_bundle_path_that_does_not_exist(rt: polyplug.Runtime, tmp_path: Path) -> None:
    with pytest.raises(polyplug.BundleNotADirectory) as info:
        rt.load_bundle(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)


def test_tampered_bundle_id(rt: polyplug.Runtime, tmp_path: Path) -> None:
    manifest = 'name = "tamper"\nid = 12345\nloader = "lua"\nfile = "bundle.lua"\n'
    with pytest.raises(polyplug.BundleTampered) as info:
        rt.load_bundle(write_bundle(tmp_path, "tamper", GOOD, manifest=manifest))
    exc = info.value
    assert str(exc).startswith('bundle "tamper" tampered with bundle_id: '
                               f"expected={polyplug.bundle_id('tamper'):#x}, found=0x3039")
    assert exc.bundle == "tamper" and exc.found == "0x3039"


def test_missing_entry_file(rt: polyplug.Runtime, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, "nofile", GOOD)
    (bundle / "bundle.lua").unlink()
    with pytest.raises(polyplug.LoaderError) as info:
        rt.load_bundle(bundle)
    assert "bundle.lua" in str(info.value)
    assert rt.list_bundles() == []


def test_function_count_mismatch_in_strict_mode(rt: polyplug.Runtime, tmp_path: Path) -> None:
    manifest = (f'name = "fc"\nid = {polyplug.bundle_id("fc")}\nloader = "lua"\n'
                'file = "bundle.lua"\nversion = "1.0.0"\nprovides = ["test.good@1"]\n')
    with pytest.raises(polyplug.FunctionCountMismatch) as info:
        rt.load_bundle(write_bundle(tmp_path, "fc", GOOD, manifest=manifest))
    msg = str(info.value)
    assert "expected=0, found=0" not in msg  # upstream's unhelpful text is gone
    assert '"test.good@1"' in msg and "[function_count]" in msg
    assert info.value.contract == "test.good@1"


def test_invalid_source_encoding(rt: polyplug.Runtime, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, "bytes", GOOD)
    manifest = polyplug.read_manifest(bundle)
    with pytest.raises(polyplug.InvalidSourceEncoding) as info:
        rt.load_bundle_from_source(manifest, polyplug.BundleSource.Bytes(b"\xff\xfe--"))
    assert info.value.loader == "lua"
    assert info.value.source_kind == "bytes"
    assert "UTF-8" in str(info.value)
    assert rt.list_bundles() == []


def test_plugin_not_found_message(rt: polyplug.Runtime) -> None:
    cid = guest_contract_id("missing.contract", 2)
    with pytest.raises(polyplug.PluginNotFound) as info:
        rt.find_guest_contract(cid, 2)
    assert str(info.value) == (f"no plugin found for contract_id=0x{cid:016X} with "
                               "min_version=2; no loaded contract has that id (loaded: none); "
                               "compute ids with guest_contract_id(name, major)")
    assert info.value.contract_id == f"0x{cid:016X}"


def test_bundle_not_found_on_unload(rt: polyplug.Runtime) -> None:
    with pytest.raises(polyplug.BundleNotFound) as info:
        rt.unload_bundle(0xABC)
    assert "0x0000000000000abc" in str(info.value)
    assert info.value.bundle == "0x0000000000000abc"


def test_hot_reload_disabled(rt: polyplug.Runtime) -> None:
    with pytest.raises(polyplug.HotReloadDisabled, match="hot-reload is disabled in runtime config"):
        rt.reload_bundle(FIXTURE)


def test_already_loaded(rt: polyplug.Runtime) -> None:
    rt.load_bundle(FIXTURE)
    with pytest.raises(polyplug.BundleAlreadyLoaded) as info:
        rt.load_bundle(FIXTURE)
    assert "already loaded" in str(info.value)
    assert info.value.bundle == "test_plugin_lua"
    assert info.value.status == lib.PP_ERR_ALREADY_LOADED


def test_invalid_trusted_key_is_invalid_argument() -> None:
    with pytest.raises(polyplug.InvalidArgument) as info:
        polyplug.Runtime(polyplug.RuntimeConfig(trusted_keys=[b"short"]))
    assert isinstance(info.value, ValueError)
