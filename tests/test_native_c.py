"""Native bundles driven by C hosts (public headers only): the scaffold's bundle from a
minimal C host, and reload / unload under concurrent calls from C threads — plain,
under ASan+UBSan, and under valgrind memcheck (zero errors, zero definite leaks).

The native scenarios of the C parity driver (tests/parity/native*.scn) run under ASan
and valgrind in tests/test_c_sanitizers.py as well."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cbuild
import native_plugins
import pytest
from test_c_sanitizers import SAN_ENV, VALGRIND_EXIT

HERE = Path(__file__).resolve().parent
STRESS_SRC = HERE / "c" / "native_stress.c"
HOST_SRC = HERE / "c" / "native_host.c"


@pytest.fixture(scope="module")
def plugins() -> Path:
    native_plugins.build_all()
    return native_plugins.NATIVE_DIR


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def _stress(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    proc = _run(cmd, env, timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-20000:]}"
    summary = proc.stdout.splitlines()[-1]
    fields = dict(part.split("=") for part in summary.split())
    assert fields["problems"] == "0", proc.stdout
    for key in ("checked", "raw", "mixed"):
        assert int(fields[key]) > 0, summary
    return proc.stderr


def test_scaffolded_bundle_from_a_c_host(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "polyplug", "new", "hi", "--native", "--dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    d = tmp_path / "hi"
    assert subprocess.run(["make", "-C", str(d)], capture_output=True).returncode == 0
    exe = cbuild.build_program("native_host", [HOST_SRC])
    proc = _run([str(exe), str(d), "hi.greet", "C host"], timeout=60)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert proc.stdout.splitlines() == ["Hello, C host!", "reloaded: Hello, C host!"]
    shutil.rmtree(d)
    proc = _run([str(exe), str(d), "hi.greet", "x"], timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == f"native_host: load: bundle path is not a directory: `{d}`\n"


def test_reload_under_concurrent_calls_plain(plugins: Path, tmp_path: Path) -> None:
    exe = cbuild.build_program("native_stress", [STRESS_SRC])
    _stress([str(exe), "--plugins", str(plugins), "--work", str(tmp_path), "--rounds", "200"])


def test_reload_under_concurrent_calls_asan_ubsan(plugins: Path, tmp_path: Path) -> None:
    exe = cbuild.build_program("native_stress", [STRESS_SRC], sanitize=True, opt="-O1")
    err = _stress([str(exe), "--plugins", str(plugins), "--work", str(tmp_path), "--rounds",
                   "100"], env=SAN_ENV)
    assert "Sanitizer" not in err and "runtime error:" not in err, err


def test_reload_under_concurrent_calls_valgrind(plugins: Path, tmp_path: Path) -> None:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.fail("valgrind is not on PATH (`apt-get install valgrind`; .ci/run installs it)")
    exe = cbuild.build_program("native_stress", [STRESS_SRC])
    err = _stress([valgrind, "--tool=memcheck", "--leak-check=full",
                   "--show-leak-kinds=definite", "--errors-for-leak-kinds=definite",
                   f"--error-exitcode={VALGRIND_EXIT}", "--smc-check=all-non-file",
                   str(exe), "--plugins", str(plugins), "--work", str(tmp_path),
                   "--rounds", "20"], timeout=900)
    assert "ERROR SUMMARY: 0 errors" in err, err[-20000:]
