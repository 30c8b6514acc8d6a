"""Native bundles driven by C hosts (public headers only): the scaffold's bundle from a
minimal C host, and reload / unload under concurrent calls from C threads — plain,
under ASan+UBSan, and under valgrind memcheck (zero errors, zero definite leaks).

The stress runs plain and under valgrind twice: as the machine schedules it, and on one
CPU where a thread that wakes up does not preempt the one running (SCHED_BATCH plain,
SCHED_RR under valgrind).  The second is how an idle multi-core machine treats
valgrind's threads (the woken one comes too late to take valgrind's lock): on CI a busy
stress thread kept that lock and the thread running the reloads never ran again, until
memcheck got --fair-sched=yes (tests/test_c_sanitizers.MEMCHECK_FLAGS).  Without it the
SCHED_RR run hangs every time.

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
from test_c_sanitizers import MEMCHECK_FLAGS, SAN_ENV

HERE = Path(__file__).resolve().parent
STRESS_SRC = HERE / "c" / "native_stress.c"
HOST_SRC = HERE / "c" / "native_host.c"


@pytest.fixture(scope="module")
def plugins() -> Path:
    native_plugins.build_all()
    return native_plugins.NATIVE_DIR


def _one_cpu_batch() -> None:
    """In the child before exec: one CPU of those allowed, SCHED_BATCH (no wake-up
    preemption; needs no privilege)."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def _one_cpu_rr() -> None:
    """One CPU, SCHED_RR: nothing else runs on that CPU and a thread that wakes waits
    for the running one's 100 ms slice, the strictest form of the idle machine.  It
    needs CAP_SYS_NICE (CI and the developers' machines run as root); without it, the
    same as _one_cpu_batch (a weaker check: other processes' load on the CPU helps the
    woken thread)."""
    _one_cpu_batch()
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
    except PermissionError:
        pass


SCHEDULES = {"shared": None, "one-cpu-batch": _one_cpu_batch, "one-cpu-rr": _one_cpu_rr}


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600,
         schedule: str = "shared") -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, **(env or {})),
                              preexec_fn=SCHEDULES[schedule])
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        pytest.fail(f"{cmd[0]} ({schedule} schedule) did not finish in {timeout} s, a hang; "
                    f"stderr:\n{err}")


def _stress(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600,
            schedule: str = "shared") -> str:
    proc = _run(cmd, env, timeout, schedule)
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


@pytest.mark.parametrize("schedule", ["shared", "one-cpu-batch"])
def test_reload_under_concurrent_calls_plain(plugins: Path, tmp_path: Path,
                                             schedule: str) -> None:
    exe = cbuild.build_program("native_stress", [STRESS_SRC])
    _stress([str(exe), "--plugins", str(plugins), "--work", str(tmp_path), "--rounds", "200"],
            schedule=schedule)


def test_reload_under_concurrent_calls_asan_ubsan(plugins: Path, tmp_path: Path) -> None:
    exe = cbuild.build_program("native_stress", [STRESS_SRC], sanitize=True, opt="-O1")
    err = _stress([str(exe), "--plugins", str(plugins), "--work", str(tmp_path), "--rounds",
                   "100"], env=SAN_ENV)
    assert "Sanitizer" not in err and "runtime error:" not in err, err


@pytest.mark.parametrize("schedule", ["shared", "one-cpu-rr"])
def test_reload_under_concurrent_calls_valgrind(plugins: Path, tmp_path: Path,
                                                schedule: str) -> None:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.fail("valgrind is not on PATH (`apt-get install valgrind`; .ci/run installs it)")
    exe = cbuild.build_program("native_stress", [STRESS_SRC])
    err = _stress([valgrind, *MEMCHECK_FLAGS, str(exe), "--plugins", str(plugins), "--work",
                   str(tmp_path), "--rounds", "20"], timeout=900, schedule=schedule)
    assert "ERROR SUMMARY: 0 errors" in err, err[-20000:]
