"""Lifecycle and concurrency for C hosts, under AddressSanitizer + UBSan (issue 11).

tests/c/lifecycle_driver.c drives the host core with public headers only: a raw
vm.call through an interface pointer kept across unload and slot reuse, close with a
call in flight (waiting, and running out of patience), instance creation racing unload
and reload through cached interface pointers, and a randomized schedule of calls,
nested calls, instances, reloads, failing loads, unloads and a final close.  Each run
is its own process with a hard timeout; the driver's watchdog exits 3 when nothing
finishes for 30 s.  The sanitized core is built with PP_DEBUG_LOCKS, so a lock taken
out of the documented order aborts the run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import cbuild  # tests/ is on sys.path under pytest, like conftest
import pytest
from test_c_sanitizers import MEMCHECK_FLAGS, SAN_ENV

HERE = Path(__file__).resolve().parent
DRIVER_SRC = HERE / "c" / "lifecycle_driver.c"


@pytest.fixture(scope="module")
def san_driver() -> Path:
    try:
        return cbuild.build_program("lifecycle_driver", [DRIVER_SRC], sanitize=True, opt="-O1")
    except cbuild.CBuildError as exc:
        pytest.fail(f"could not build the ASan+UBSan lifecycle driver:\n{exc}")


def run(driver: Path, work: Path, scenario: str, *extra: str) -> str:
    try:
        proc = subprocess.run([str(driver), "--work", str(work), "--scenario", scenario, *extra],
                              capture_output=True, text=True, timeout=180,
                              env={**os.environ, **SAN_ENV})
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{scenario} did not finish in 180 s (a hang):\n{exc.stdout}")
    reports = [m for m in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                           "lock order violated") if m in proc.stderr]
    assert proc.returncode == 0 and not reports, (
        f"{scenario}: exit {proc.returncode} (1 problems, 3 hang, 86 ASan, 87 UBSan, 88 LSan)"
        f"\n{proc.stdout}\n{proc.stderr[-4000:]}")
    assert f"{scenario} problems=0" in proc.stdout, proc.stdout
    return proc.stdout


def test_retired_interface_answers_stale_handle(san_driver: Path, tmp_path: Path) -> None:
    out = run(san_driver, tmp_path, "stale-interface")
    assert ("after unload: 5, by-value copy: 5, slot reused: 1, old pointer after reuse: 5 "
            "(out 0), instance: none") in out


def test_a_fork_child_s_new_thread_does_not_pass_for_the_holder(san_driver: Path,
                                                                tmp_path: Path) -> None:
    """A thread is inside a call when the process forks; the child's new thread gets the
    copied thread's stack and so its thread tag (a C host's TLS is on it): its call must
    wait and time out as a fork child's does, not enter the VM as a nested call."""
    out = run(san_driver, tmp_path, "fork-new-thread")
    assert "child: new thread got the copied thread's stack, its call: 200 after" in out, out


def test_close_waits_for_a_call_in_flight(san_driver: Path, tmp_path: Path) -> None:
    out = run(san_driver, tmp_path, "close-in-flight")
    assert "close: PP_OK after" in out and "the call: 0, a call after close: 5" in out


def test_close_with_a_short_wait_is_busy_then_clean(san_driver: Path, tmp_path: Path) -> None:
    out = run(san_driver, tmp_path, "close-busy")
    assert "close: PP_ERR_RUNTIME_BUSY after" in out
    assert "the call: 0, a call after close: 5" in out


def test_a_bundle_loads_from_a_fileset(san_driver: Path, tmp_path: Path) -> None:
    # what a C host does with a signed bundle: the loader reads the entry file and a
    # module required long after the load from bytes in memory, not the directory
    out = run(san_driver, tmp_path, "fileset")
    assert "fileset tag=9 module=77" in out


def test_instances_race_unload_and_reload(san_driver: Path, tmp_path: Path) -> None:
    run(san_driver, tmp_path, "instances-race", "--seconds", "3")


def test_randomized_schedule(san_driver: Path, tmp_path: Path) -> None:
    out = run(san_driver, tmp_path, "random", "--seconds", "4", "--threads", "6")
    assert "operations=" in out


BREAKER_SRC = HERE / "c" / "breaker_driver.c"
BREAKER_CASES = {
    # the last call out of a retired VM, or an instance creation, racing pp_runtime_free
    "free-race-error": (["--iterations", "60"], "no use-after-free seen"),
    "free-race-create": (["--iterations", "600"], "no use-after-free seen"),
    # calls through a kept interface that start after unload returned answer StaleHandle
    "retired-runs": (["--iterations", "8"], "in 0 of them calls"),
    "retired-one-call": (["--iterations", "8"], "in 0 of 8 runs"),
    # lock-free lookups while a slot is reused: every answer from the handle's own bundle
    "slot-reuse": (["--iterations", "2"], " 0 wrong"),
    # a finalizer that reloads its own bundle: bounded by the C-stack check, not a crash
    "finalizer-reload": ([], "finalizer-reload: first reload PP_OK"),
}


@pytest.fixture(scope="module")
def breaker() -> Path:
    try:
        return cbuild.build_program("breaker_driver", [BREAKER_SRC], sanitize=True, opt="-O1")
    except cbuild.CBuildError as exc:
        pytest.fail(f"could not build the ASan+UBSan breaker driver:\n{exc}")


@pytest.mark.parametrize("scenario", sorted(BREAKER_CASES))
def test_review_findings_stay_fixed(scenario: str, breaker: Path, tmp_path: Path) -> None:
    extra, marker = BREAKER_CASES[scenario]
    try:
        proc = subprocess.run([str(breaker), "--work", str(tmp_path), "--scenario", scenario,
                               *extra], capture_output=True, text=True, timeout=300,
                              env={**os.environ, **SAN_ENV})
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{scenario} did not finish in 300 s (a hang):\n{exc.stdout}")
    reports = [m for m in ("ERROR: AddressSanitizer", "runtime error:", "lock order violated")
               if m in proc.stderr]
    assert proc.returncode == 0 and not reports and marker in proc.stdout, (
        f"{scenario}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}")


@pytest.mark.parametrize("scenario", ["stale-interface", "close-busy", "random", "fileset"])
def test_valgrind_memcheck(scenario: str, tmp_path: Path) -> None:
    """The same scenarios under valgrind memcheck (uninstrumented build, JIT code too)."""
    import shutil

    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.fail("valgrind is not on PATH (`apt-get install valgrind`; .ci/run installs it)")
    exe = cbuild.build_program("lifecycle_driver", [DRIVER_SRC])
    extra = ["--seconds", "2", "--threads", "3"] if scenario == "random" else []
    proc = subprocess.run([valgrind, *MEMCHECK_FLAGS, "-q", str(exe), "--work", str(tmp_path),
                           "--scenario", scenario, *extra],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and f"{scenario} problems=0" in proc.stdout, (
        f"exit {proc.returncode} (99 = memcheck errors)\n{proc.stdout}\n{proc.stderr[-4000:]}")
