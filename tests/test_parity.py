"""C-host parity: a C program drives the same host without Python and must observe
the same results.

tests/c/parity_driver.c (public headers only, linked against the same csrc/ core and
the same static LuaJIT) and tests/parity/pydriver.py (the Python API) interpret the
same scenario scripts, tests/parity/*.scn, and each prints a line-oriented transcript:
result codes, outputs, error messages, log records and reload phases.  The two
transcripts must be identical, line for line.

The scenario language is described in tests/parity/README.md.
"""

from __future__ import annotations

import difflib
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import cbuild  # tests/ is on sys.path under pytest, like conftest
import native_plugins
import pytest
from conftest import load_module

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PARITY = HERE / "parity"
DRIVER_SRC = HERE / "c" / "parity_driver.c"
SCENARIOS = sorted(PARITY.glob("*.scn"))


pydriver = load_module("polyplug_tests_pydriver", PARITY / "pydriver.py")


# ── running the two drivers ──────────────────────────────────────────────────


def run_c(exe: Path, scenario: Path, work: Path, timeout: float = 120) -> list[str]:
    """The C driver's transcript for one scenario; fails the test if the driver does."""
    proc = subprocess.run(
        [str(exe), "--root", str(ROOT), "--work", str(work), str(scenario)],
        capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0 or proc.stderr:
        pytest.fail(
            f"the C driver failed on {scenario.name} (exit {proc.returncode})\n"
            f"--- stderr ---\n{proc.stderr}\n--- stdout (last 40 lines) ---\n"
            + "\n".join(proc.stdout.splitlines()[-40:])
        )
    return proc.stdout.splitlines()


def run_py(scenario: Path, work: Path) -> list[str]:
    """The Python driver's transcript for one scenario (in this process)."""
    return pydriver.run_scenarios([scenario], ROOT, work)


def transcript_diff(c_lines: list[str], py_lines: list[str]) -> Optional[str]:
    """A unified diff of the two transcripts, or None when they are identical."""
    if c_lines == py_lines:
        return None
    return "\n".join(difflib.unified_diff(c_lines, py_lines, "C driver", "Python driver",
                                          lineterm="", n=3))


def _stale_extension_hint() -> str:
    """Say so when the C core is newer than the installed Python extension."""
    lib = cbuild.core_dir() / "libpolyplug_core.a"
    exts = sorted((ROOT / "polyplug").glob("_native*.so"))
    if lib.is_file() and exts and lib.stat().st_mtime > max(e.stat().st_mtime for e in exts):
        return ("\nNOTE: build/core/libpolyplug_core.a is newer than polyplug/_native*.so: "
                "the Python side may run an older build of csrc/ (run `pip install -e .`).")
    return ""


@pytest.fixture(scope="module")
def driver() -> Path:
    """tests/c/parity_driver.c built against build/core and the static LuaJIT."""
    try:
        native_plugins.build_all()  # the native scenarios copy them
        return cbuild.build_program("parity_driver", [DRIVER_SRC])
    except cbuild.CBuildError as exc:
        pytest.fail(f"could not build the C parity driver:\n{exc}")


# ── the parity test ──────────────────────────────────────────────────────────


def test_scenarios_exist() -> None:
    names = {p.stem for p in SCENARIOS}
    wanted = {"seed", "fixture", "multi_contract", "instances", "arena_strings", "errors",
              "unknown_fn", "reentrancy", "reload", "unload", "logging", "cached_interface",
              "native", "native_reload"}
    assert wanted <= names, f"missing scenarios: {sorted(wanted - names)}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_parity(scenario: Path, driver: Path, tmp_path: Path) -> None:
    c_lines = run_c(driver, scenario, tmp_path / "c")
    py_lines = run_py(scenario, tmp_path / "py")
    diff = transcript_diff(c_lines, py_lines)
    assert diff is None, (
        f"the C and Python drivers disagree on {scenario.name}:\n{diff}{_stale_extension_hint()}"
    )
    # a transcript that stopped early would still "agree" with an equally short one
    assert len(c_lines) > 5 and c_lines[0] == f"== scenario {scenario.stem}"


# Lines each scenario must produce: the semantics the scenarios are there to exercise
# (two drivers agreeing on a wrong answer would otherwise pass).
EXPECTED = {
    "fixture": [
        "call add fn=0 code=0 out=42",
        "call add fn=3 code=6",
        'call add fn=2 code=1 msg="Lua function call failed: test_plugin_lua/test_plugin.lua:',
        'load test_plugin_lua error InvalidSourceEncoding "loader `lua` received non-UTF-8',
    ],
    "unknown_fn": [
        "call add fn=3 code=6",
        "call add fn=4294967295 code=6",
        "call add fn=0 code=6 out=0",  # unknown instance id
        "instance i data=1 cid_ok=1",
    ],
    "instances": [
        "instance i1 data=1 cid_ok=1",
        "instance i2 data=2 cid_ok=1",
        "call c fn=1 code=6 out=0",
        "instance b1 null",
    ],
    "reentrancy": [
        'call r fn=1 code=0 out="code=9 out=0 msg=reentrant call refused',
        'call r fn=2 code=0 out="code=0 out=42 msg="',
        'call r fn=3 code=0 out="data=0"',
        'call r fn=4 code=0 out="code=0 out=9 msg="',
        'call r fn=5 code=0 out="data=1"',
        'call r fn=6 code=0 out="code=0 inner=code=9 out=0 msg=reentrant call refused: this '
        'thread is already running contract \'parity.reenter\' of bundle `reenter`"',
    ],
    "arena_strings": [
        'call s fn=0 code=0 out="HELLO"',
        'call s fn=1 code=0 out="left|right"',
        "arena_used a 5",
    ],
    "errors": [
        'call f fn=0 code=1 msg="Lua function call failed: failing/bundle.lua:3: boom from lua',
        'log Error loader.lua "Lua function call failed: failing/bundle.lua:3: boom from lua',
        "load twice error BundleAlreadyLoaded",
        "load syntax error InitFailed",
    ],
    "logging": [
        'log Info guest.test-log "hello from lua guest"',
        'log Error guest.test-log "out of range level"',
        'log Error host.scope "level six"',
    ],
    "reload": [
        "phase Reloaded parity_reload",
        "call r fn=0 code=0 out=2",
        "phase Failed parity_reload",
        "reload parity_reload error BundleNotFound",
    ],
    "cached_interface": [
        "call h fn=0 code=0 out=4",
        "call h fn=0 code=0 out=101",  # across a hot reload: the new code
        "call h fn=0 code=5 out=0 msg=\"contract 'parity.cached': bundle `cached` was unloaded",
        "call h2 fn=0 code=0 out=101",
    ],
    "unload": [
        "resolve b error StaleHandle",
        "unload second error BundleNotFound",
        "call b fn=0 code=5",
    ],
    "multi_contract": [
        "findall test.first@1 n=2 0:0 2:0",
        # the major floor: test.first is at major 1
        "find none notfound",         # min=2 excludes it
        "find floor1 index=0 gen=0",  # min=1 does not
        "findall test.first@1 n=0",   # min=2 excludes both providers
    ],
    "seed": [
        "load lua_loader_syntax_error error InitFailed",
        "reload lua_reload_disabled error HotReloadDisabled",
        'load lua_loader_init_err_code error InitFailed "init failed for bundle '
        "`lua_loader_init_err_code`: Lua polyplug_init returned error code 1",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scenario_semantics(name: str, driver: Path, tmp_path: Path) -> None:
    lines = run_c(driver, PARITY / f"{name}.scn", tmp_path)
    missing = [want for want in EXPECTED[name] if not any(ln.startswith(want) for ln in lines)]
    assert not missing, f"{name}: expected lines not found: {missing}\n" + "\n".join(lines)


# ── the comparison catches real differences ──────────────────────────────────


def test_parity_detects_a_python_side_difference(driver: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Registry.find returning the last provider instead of the first must show up."""
    import polyplug.runtime

    scenario = PARITY / "multi_contract.scn"
    c_lines = run_c(driver, scenario, tmp_path / "c")
    assert transcript_diff(c_lines, run_py(scenario, tmp_path / "py0")) is None

    def find_last(self, contract_id, min_major=0):  # the deliberate behaviour change
        found = self.find_all(contract_id, min_major)
        if not found:
            raise polyplug.PluginNotFound("no plugin")
        return found[-1]

    monkeypatch.setattr(polyplug.runtime.Registry, "find", find_last)
    diff = transcript_diff(c_lines, run_py(scenario, tmp_path / "py1"))
    assert diff is not None, "a changed Registry.find went unnoticed"
    assert "-find f2 index=0 gen=0" in diff and "+find f2 index=2 gen=0" in diff, diff


def test_parity_detects_a_c_side_difference(driver: Path, tmp_path: Path) -> None:
    """A core whose instance ids start at 2 instead of 1 must show up.

    The mutant is a patched copy of csrc/ built into tmp_path and linked into a second
    C driver; the Python side keeps the real extension.
    """
    src = tmp_path / "mutant"
    shutil.copytree(ROOT / "csrc", src / "csrc", ignore=shutil.ignore_patterns("luajit"))
    (src / "scripts").symlink_to(ROOT / "scripts")  # the Makefile runs ../scripts/embed_sdk.py
    anchor = "c->next_instance = 1;"
    hits = [f for f in sorted((src / "csrc").glob("*.c")) if anchor in f.read_text()]
    assert len(hits) == 1 and hits[0].read_text().count(anchor) == 1, (
        f"mutation anchor {anchor!r} not found exactly once in csrc/*.c; update the mutation")
    hits[0].write_text(hits[0].read_text().replace(anchor, "c->next_instance = 2;"))
    try:
        lib = cbuild.build_core(csrc=src / "csrc", out=tmp_path / "mutant-core")
        mutant = cbuild.build_program("parity_driver", [DRIVER_SRC], core_lib=lib,
                                      out_dir=tmp_path / "bin")
    except cbuild.CBuildError as exc:
        pytest.fail(f"could not build the mutant core or driver:\n{exc}")
    scenario = PARITY / "instances.scn"
    py_lines = run_py(scenario, tmp_path / "py")
    assert transcript_diff(run_c(driver, scenario, tmp_path / "c0"), py_lines) is None
    diff = transcript_diff(run_c(mutant, scenario, tmp_path / "c1"), py_lines)
    assert diff is not None, "a core with different instance ids went unnoticed"
    assert "-instance i1 data=2 cid_ok=1" in diff and "+instance i1 data=1 cid_ok=1" in diff, diff


# ── library bugs found by the drivers (left failing until fixed) ─────────────


def test_failed_direct_loader_load_leaves_no_trace(driver: Path, tmp_path: Path) -> None:
    """A failed ``LuaLoader.load`` / ``pp_loader_load`` must not announce an unload.

    Found by the parity scenarios: pp_loader_load (csrc/pp_loader.c) undoes a failed
    load with pp_runtime_unload, which fires an ``Unloading`` reload phase with an
    empty bundle name for a bundle that never loaded, and bumps the registry revision.
    The runtime path (pp_runtime_load) does neither.
    """
    scenario = tmp_path / "direct_load_failure.scn"
    scenario.write_text(
        "runtime\nrevision\n"
        "load bad $ROOT/tests/parity/bundles/seed_syntax_error via=loader\n"
        "revision\nbundles\n"
    )
    c_lines = run_c(driver, scenario, tmp_path / "c")
    py_lines = run_py(scenario, tmp_path / "py")
    assert transcript_diff(c_lines, py_lines) is None
    assert not [ln for ln in c_lines if ln.startswith("phase ")], "\n".join(c_lines)
    revisions = [ln for ln in c_lines if ln.startswith("revision ")]
    assert revisions == ["revision 0", "revision 0"], "\n".join(c_lines)
