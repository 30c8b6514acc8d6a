"""The build chain: the linked LuaJIT, the version check, what the extension exports,
and what the repository does not track."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polyplug
from polyplug import ffi, lib

ROOT = Path(__file__).resolve().parent.parent


def test_luajit_version_is_2_1() -> None:
    assert polyplug.luajit_version().startswith("LuaJIT 2.1")


def test_extension_and_package_versions_agree() -> None:
    assert ffi.string(lib.pp_version()).decode() == polyplug.__version__


def test_a_mismatched_extension_is_a_clear_import_error() -> None:
    code = (
        "import sys, types\n"
        "fake = types.ModuleType('polyplug._version'); fake.__version__ = '0.0.0-stale'\n"
        "sys.modules['polyplug._version'] = fake\n"
        "try:\n"
        "    import polyplug\n"
        "except ImportError as exc:\n"
        "    print('IMPORT ERROR:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert "IMPORT ERROR:" in out and "0.0.0-stale" in out and "pip install -e ." in out


def test_luajit_symbols_are_not_exported_from_the_extension() -> None:
    so = Path(polyplug._ffi.__file__).with_name("_native.abi3.so")
    if not so.exists():
        so = next(Path(polyplug.__file__).parent.glob("_native*.so"))
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True,
                             text=True, check=True).stdout.split()
    leaked = [s for s in symbols if s.startswith(("lua_", "luaL_", "luaJIT_", "lj_"))]
    assert leaked == [], leaked[:10]


def test_luajit_was_built_with_gc64_and_checkhook() -> None:
    info = (ROOT / "csrc" / "luajit" / "BUILD_INFO").read_text()
    assert "gc64: 1" in info
    assert "LUAJIT_ENABLE_CHECKHOOK" in info


def test_repository_tracks_no_third_party_source_or_build_output() -> None:
    files = subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True,
                           cwd=ROOT).stdout.splitlines()
    assert "csrc/pp_lua_call.c" in files
    assert not [f for f in files if f.startswith("csrc/luajit/")]
    assert not [f for f in files if f.endswith((".so", ".a", ".o", ".whl"))]


def test_star_import_exports_the_api_and_shadows_no_builtin() -> None:
    namespace: dict[str, object] = {}
    exec("from polyplug import *", namespace)  # noqa: S102
    exported = set(namespace) - {"__builtins__"}
    assert exported == set(polyplug.__all__)
    assert "RuntimeError" not in exported and "annotations" not in exported
    assert not [n for n in exported if type(namespace[n]).__name__ == "module"]
    assert {"Runtime", "RuntimeBuilder", "LuaLoader", "PolyplugError", "GuestError",
            "guest_contract_id", "ffi", "lib", "__version__"} <= exported
    # upstream's name stays reachable as an attribute, and is a builtin RuntimeError
    assert issubclass(polyplug.RuntimeError, RuntimeError)
    assert polyplug.RuntimeError is not RuntimeError


def test_the_package_is_typed_and_ships_its_data() -> None:
    import importlib.resources

    assert (ROOT / "polyplug" / "py.typed").is_file()
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "polyplug.cli" in setuptools["packages"]
    assert setuptools["package-data"] == {"polyplug": ["py.typed"],
                                          "polyplug.cli": ["templates/*"]}
    templates = importlib.resources.files("polyplug.cli").joinpath("templates")
    assert sorted(p.name for p in templates.iterdir()) == ["bundle.lua", "manifest.toml",
                                                          "test_bundle.py"]
