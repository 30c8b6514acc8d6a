"""Shared helpers for the test suite: temp bundles, hand-built manifests, raw vtable calls."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Optional, Union

import pytest

from polyplug import ManifestData, bundle_id, ffi


def pytest_pycollect_makeitem(collector: Any, name: str, obj: object) -> Any:
    """Collect the seed port's tests under the seed's own names (no ``test_`` prefix).

    A test module lists them in ``SEED_TESTS``; only those exact names are collected,
    so helpers in the module stay helpers.
    """
    seed = getattr(getattr(collector, "obj", None), "SEED_TESTS", ())
    if name in seed and callable(obj):
        return pytest.Function.from_parent(collector, name=name)
    return None


def write_temp_bundle(
    tmp_path: Path, name: str, content: Union[bytes, str]
) -> tuple[Path, Path]:
    """Write ``content`` as ``bundle.lua`` plus a minimal ``manifest.toml`` for ``name``.

    Each call gets its own fresh directory under ``tmp_path`` (two bundles in one test,
    even with the same name, never collide).  Returns ``(bundle_dir, bundle_dir/bundle.lua)``.
    """
    bundle_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp_path))
    path = bundle_dir / "bundle.lua"
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    (bundle_dir / "manifest.toml").write_text(
        f'id = {bundle_id(name)}\nname = "{name}"\nloader = "lua"\nfile = "bundle.lua"\n',
        encoding="utf-8",
    )
    return bundle_dir, path


def make_manifest(path: Path, name: str) -> ManifestData:
    """A ``ManifestData`` for the Lua entry file ``path`` (its parent is the bundle dir)."""
    path = Path(path)
    return ManifestData(
        id=bundle_id(name),
        name=name,
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


def call_vm(
    iface: Any,
    fn_id: int,
    args: Any = ffi.NULL,
    out: Any = ffi.NULL,
    arena: Any = ffi.NULL,
    instance: Any = None,
) -> Any:
    """Call ``iface.dispatch.vm.call`` directly and return the filled ``AbiError *``.

    ``instance`` defaults to the null (default) ``GuestContractInstance``; the result
    starts as ``AbiError::ok()`` (code 0), like the upstream tests.
    """
    if instance is None:
        instance = ffi.new("GuestContractInstance *")[0]
    result = ffi.new("AbiError *")
    vm = iface.dispatch.vm
    vm.call(vm.loader_data, instance, fn_id, args, out, arena, result)
    return result


ROOT = Path(__file__).resolve().parent.parent


def run_child(code: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` (dedented) in a fresh interpreter, from the repository root:
    for what could crash the process, and for what the default hooks print."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout,
                          env=dict(os.environ, PYTHONIOENCODING="utf-8"))


def load_module(name: str, path: Path) -> Any:
    """Import a helper script that is not a package module (e.g. tests/parity/pydriver.py)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# Scalar signature types and the C type each one is in memory, written out from the type
# list of docs/guest-authoring.md — not derived from polyplug.signature, so a wrong entry
# there (say u16 -> int16_t) is not agreed with by the guests these tests generate.
C_TYPES = {
    "u8": "uint8_t", "u16": "uint16_t", "u32": "uint32_t", "u64": "uint64_t",
    "i8": "int8_t", "i16": "int16_t", "i32": "int32_t", "i64": "int64_t",
    "f32": "float", "f64": "double", "bool": "bool",
}


def write_typed_bundle(root: Path, name: str, lua: str, contract: Optional[str] = None,
                       count: int = 0, functions: str = "") -> Path:
    """A bundle ``root/name`` (version 1.0.0) with ``bundle.lua`` = ``lua``.

    With ``contract`` it provides ``contract@1`` with ``count`` functions;
    ``functions`` is the body of its ``[contracts."<contract>@1".functions]`` table
    (omitted when empty).
    """
    d = root / name
    d.mkdir(parents=True)
    (d / "bundle.lua").write_text(lua, encoding="utf-8")
    manifest = (f'name = "{name}"\nid = {bundle_id(name)}\nversion = "1.0.0"\n'
                f'loader = "lua"\nfile = "bundle.lua"\n')
    if contract:
        manifest += (f'provides = ["{contract}@1"]\n\n[function_count]\n'
                     f'"{contract}@1" = {count}\n')
    if functions:
        manifest += f'\n[contracts."{contract}@1".functions]\n{functions}'
    (d / "manifest.toml").write_text(manifest, encoding="utf-8")
    return d


SCENARIOS = Path(__file__).parent / "scenarios"


def run_scenario(name: str, markers: list[str], timeout: float = 120) -> str:
    """Run tests/scenarios/<name>.py in its own process with a hard timeout: a hang fails
    the test (not the suite) and a crash shows up as its exit status.  Every marker
    must be in its output, and none of the threads it watched may say HUNG."""
    import subprocess
    import sys

    try:
        proc = subprocess.run([sys.executable, f"{name}.py"], cwd=SCENARIOS,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{name} did not finish in {timeout:.0f} s (a hang):\n{exc.stdout}\n"
                    f"{exc.stderr}")
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{proc.stderr[-3000:]}"
    # nothing on stderr from LuaJIT itself ("ERROR in finalizer", "PANIC"): the host logs
    assert "ERROR in finalizer" not in proc.stderr and "PANIC" not in proc.stderr, proc.stderr
    assert "HUNG" not in out, out
    for marker in markers:
        assert marker in out, f"{marker!r} missing from:\n{out}\n{proc.stderr[-2000:]}"
    return out
