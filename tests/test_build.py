"""The build chain: the linked LuaJIT, its build script, the version check, what the
extension exports, and what the repository (or the sdist) does not carry."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_typed_bundle

import polyplug
from polyplug import ffi, lib

ROOT = Path(__file__).resolve().parent.parent
LUAJIT = ROOT / "csrc" / "luajit"
SCRIPT = ROOT / "scripts" / "build_luajit.sh"
UPSTREAM_RELVER = 1767980792  # the LuaJIT 2.1 release upstream polyplug 0.1.3 ships


def build_info() -> dict[str, str]:
    lines = (LUAJIT / "BUILD_INFO").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines)


def test_linked_luajit_is_a_current_2_1_release() -> None:
    version = polyplug.luajit_version()
    m = re.fullmatch(r"LuaJIT 2\.1\.(\d+)", version)
    assert m, f"{version!r} has no release version (a ROLLING or beta build?)"
    assert int(m.group(1)) >= UPSTREAM_RELVER
    assert build_info()["version"] == version  # the extension links csrc/luajit's library


def test_the_luajit_notice_shipped_is_the_one_of_the_built_source() -> None:
    assert (LUAJIT / "COPYRIGHT").read_bytes() == (ROOT / "LICENSE.LuaJIT").read_bytes()


def script_copy(tmp_path: Path, pin_sha256: str | None = None) -> Path:
    """The build script in a scratch repository holding a copy of csrc/luajit/."""
    text = SCRIPT.read_text()
    if pin_sha256 is not None:
        text = re.sub(r"^PIN_SHA256='[0-9a-f]{64}'$", f"PIN_SHA256='{pin_sha256}'", text,
                      count=1, flags=re.M)
        assert pin_sha256 in text
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / SCRIPT.name).write_text(text)
    shutil.copytree(LUAJIT, root / "csrc" / "luajit")
    shutil.copy(ROOT / "LICENSE.LuaJIT", root)
    return root / "scripts" / SCRIPT.name


def built_cc() -> str:
    """The compiler csrc/luajit was built with (its BUILD_INFO ``flags: CC=...``)."""
    m = re.match(r"CC=(.*) CFLAGS=", build_info()["flags"])
    assert m, build_info()["flags"]
    return m.group(1)


def check_luajit(script: Path, cc: str | None = None) -> subprocess.CompletedProcess[str]:
    """``build_luajit.sh --check`` with the compiler csrc/luajit was built with (or ``cc``)."""
    env = {k: v for k, v in os.environ.items() if k != "LUAJIT_SRC"}
    env["CC"] = cc or built_cc()
    return subprocess.run(["bash", str(script), "--check"], env=env, capture_output=True,
                          text=True, timeout=60)


def test_the_luajit_build_is_current_and_names_source_version_and_checksum(
        tmp_path: Path) -> None:
    proc = check_luajit(script_copy(tmp_path))
    assert proc.returncode == 0, proc.stderr
    info = build_info()
    (line,) = proc.stderr.splitlines()
    assert info["version"] in line and info["source"] in line and info["sha256"] in line


@pytest.mark.parametrize("change", ["pin", "flags"])
def test_a_changed_pin_or_changed_flags_make_luajit_rebuild(tmp_path: Path, change: str) -> None:
    if change == "pin":
        proc = check_luajit(script_copy(tmp_path, pin_sha256="0" * 64))
    else:
        proc = check_luajit(script_copy(tmp_path), cc=f"{built_cc()} -DPP_CHANGED_FLAGS")
    assert proc.returncode == 1
    assert "csrc/luajit is out of date" in proc.stderr


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


def extension() -> Path:
    so = Path(polyplug._ffi.__file__).with_name("_native.abi3.so")
    return so if so.exists() else next(Path(polyplug.__file__).parent.glob("_native*.so"))


def test_luajit_symbols_are_not_exported_from_the_extension() -> None:
    so = extension()
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True,
                             text=True, check=True).stdout.split()
    leaked = [s for s in symbols if s.startswith(("lua_", "luaL_", "luaJIT_", "lj_"))]
    assert leaked == [], leaked[:10]


X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def test_luajit_s_cpu_detection_goes_through_the_once_per_process_wrapper() -> None:
    """The extension is linked with --wrap=lj_vm_cpuid (csrc/pp_lua_vm.c): every call
    LuaJIT makes for its CPU detection reaches the wrapper, none the CPUID routine."""
    disassembly = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(extension())],
                                 capture_output=True, text=True, check=True).stdout
    called = set(re.findall(r"\bcall\s+[0-9a-f]+ <([^>@+]+)", disassembly))
    assert "lj_vm_cpuid" not in called
    assert ("__wrap_lj_vm_cpuid" in called) is X86


CPU_BUNDLE = """
local pg = require("polyplug_guest")

local function features(_, _, out_ptr, arena_ptr, arena_alloc)
    pg.write_string(out_ptr, arena_ptr, arena_alloc, table.concat({select(2, jit.status())}, " "))
end

function polyplug_init(_host, _ctx)
    return { [CONTRACT] = { contract_version = 1, factory = function(_) return {} end,
                            functions = { [0] = features } } }, { code = 0 }
end
"""


def test_every_vm_s_jit_sees_the_cpu_features_the_kernel_reports(tmp_path: Path) -> None:
    """The answers the wrapper keeps are the CPU's: each VM's JIT reports SSE3, SSE4.1
    and BMI2 exactly when /proc/cpuinfo lists them (an x86 CPU's flags; none elsewhere)."""
    found = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
    flags = set(found.group(1).split()) if X86 and found else set()
    expected = {"SSE3": "pni" in flags, "SSE4.1": "sse4_1" in flags, "BMI2": "bmi2" in flags}
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as rt:
        for name in ("first", "second"):
            lua = CPU_BUNDLE.replace("[CONTRACT]", f'["build.{name}"]')
            rt.load_bundle(write_typed_bundle(tmp_path, name, lua, f"build.{name}", 1,
                                              'features = { id = 0, returns = "string" }\n'))
            reported = rt.contract(f"build.{name}", 1).features().split()
            assert {f: f in reported for f in expected} == expected, reported


def test_luajit_was_built_with_gc64_and_checkhook() -> None:
    info = build_info()
    assert info["gc64"] == "1"
    assert "-DLUAJIT_ENABLE_CHECKHOOK" in info["flags"] and "-fPIC" in info["flags"]


def distributed_files() -> list[str]:
    """What this tree distributes: git's index in a checkout, SOURCES.txt in an sdist."""
    if (ROOT / ".git").exists():
        return subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True,
                              cwd=ROOT).stdout.splitlines()
    return (ROOT / "polyplug.egg-info" / "SOURCES.txt").read_text().splitlines()


def test_repository_tracks_no_third_party_source_or_build_output() -> None:
    files = distributed_files()
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
    assert setuptools["package-data"] == {"polyplug": ["py.typed", "include/*.h"],
                                          "polyplug.cli": ["templates/*"]}
    templates = importlib.resources.files("polyplug.cli").joinpath("templates")
    assert sorted(p.name for p in templates.iterdir()) == [
        "bundle.lua", "manifest.toml", "native.Makefile", "native.c", "native.gitignore",
        "native_manifest.toml", "test_bundle.py", "test_native.py"]
    # native bundles compile against the host's own ABI header (a symlink in the tree)
    assert sorted(os.listdir(polyplug.get_include())) == ["polyplug_abi.h"]
    assert (Path(polyplug.get_include()) / "polyplug_abi.h").read_bytes() == (
        ROOT / "csrc" / "include" / "polyplug_abi.h").read_bytes()


# A guest stores a double into an int32_t through the FFI. A current LuaJIT 2.1 (the one
# upstream 0.1.3 ships too) converts through int64 and keeps the low 32 bits; the 2022
# snapshot (2.1.0-beta3) saturated every out-of-range value to INT32_MIN.
INT32_BUNDLE = """
local pg = require("polyplug_guest")

local function store(_, args_ptr, out_ptr)
    pg.ptr(out_ptr, "int32_t *")[0] = pg.ptr(args_ptr, "const double *")[0]
end

function polyplug_init(_host, _ctx)
    return {
        ["build.int32"] = {
            contract_version = 1,
            plugin_name = "int32",
            factory = function(_) return {} end,
            functions = { [0] = store },
        },
    }, { code = 0 }
end
"""


@pytest.mark.parametrize(("value", "stored"), [
    (2147483649.0, -2147483647),
    (2147483648.0, -2147483648),
    (4294967301.0, 5),
    (-2147483649.0, 2147483647),
    (-7.9, -7),
])
def test_a_guest_storing_a_double_into_an_int32_field_keeps_the_low_32_bits(
        tmp_path: Path, value: float, stored: int) -> None:
    bundle = write_typed_bundle(tmp_path, "int32", INT32_BUNDLE, "build.int32", 1,
                                'store = { id = 0, args = ["f64"], returns = "i32" }\n')
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as rt:
        rt.load_bundle(bundle)
        assert rt.contract("build.int32", 1).store(value) == stored
