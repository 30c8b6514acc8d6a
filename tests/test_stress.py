"""Stress (issue 8): threads calling into several bundles while another thread reloads,
unloads and loads them again, for a bounded time.

What must hold: no crash, no hang, no wrong result, no call lost without an error,
and bounded memory.  Concretely, every call through ``rt.contract(...)``

* returns the value of *some* version of that bundle that was current during the
  call: not older than the version committed when the call started, not newer than
  the newest one written when it returned (each result encodes bundle, version and
  argument, so a result from the wrong bundle, version or argument is caught); or
* raises StaleHandle / PluginNotFound while its bundle is unloaded (the caller then
  resolves the contract again with ``rt.contract``).

Anything else -- another exception type, a thread that dies or does not finish --
is a failure.  The stress runs in a child process so that a crash (a use-after-free
between unload and a call in flight, say) fails the test with its signal and
traceback instead of killing the test session.

    python tests/test_stress.py WORKDIR SECONDS MODE   # the child; prints a JSON report
"""

from __future__ import annotations

import gc
import json
import os
import random
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

BUNDLES = 3
CALLERS = 4
SECONDS = 4.0
RSS_LIMIT = 50 * 1024 * 1024
MIN_CALLS = 2000

HERE = Path(__file__).resolve().parent


def bundle_name(b: int) -> str:
    return f"stress{b}"


def contract_name(b: int) -> str:
    return f"stress.b{b}"


def encode(b: int, version: int, arg: int) -> int:
    """What fn 0 of bundle ``b`` at ``version`` returns for ``arg`` (< 4096)."""
    return (b << 40) | (version << 12) | arg


def decode(value: int) -> tuple[int, int, int]:
    return value >> 40, (value >> 12) & 0xFFFFFFF, value & 0xFFF


def lua_source(b: int, version: int) -> str:
    return f"""
local pg = require("polyplug_guest")
local B, V = {b}, {version}
function polyplug_init()
    return {{ ["{contract_name(b)}"] = {{ contract_version = 1,
        factory = function() return {{}} end,
        functions = {{ [0] = function(_, args, out)
            local a = pg.ptr(args, "const uint32_t *")[0]
            pg.ptr(out, "uint64_t *")[0] = B * 2^40 + V * 4096 + a
        end }} }} }}, {{ code = 0 }}
end
"""


def write_bundle(root: Path, b: int, version: int) -> Path:
    d = root / bundle_name(b)
    d.mkdir(parents=True, exist_ok=True)
    import polyplug

    (d / "manifest.toml").write_text(
        f'name = "{bundle_name(b)}"\nid = {polyplug.bundle_id(bundle_name(b))}\n'
        'loader = "lua"\nfile = "bundle.lua"\nversion = "1.0.0"\n\n'
        f'[contracts."{contract_name(b)}@1".functions]\n'
        'get = { id = 0, args = ["u32"], returns = "u64" }\n', encoding="utf-8")
    tmp = d / "bundle.lua.tmp"
    tmp.write_text(lua_source(b, version), encoding="utf-8")
    os.replace(tmp, d / "bundle.lua")  # the loader never sees a half-written file
    return d


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ── the child: the stress itself ─────────────────────────────────────────────


def run_stress(root: Path, seconds: float, mode: str) -> dict[str, Any]:
    """Run callers against a reloading/unloading thread; return a report.

    ``mode`` "explicit": callers pass the signatures to ``rt.contract``.
    ``mode`` "manifest": callers rely on the manifest's signature table.
    """
    import polyplug
    from polyplug import PluginNotFound, StaleHandle
    from polyplug.signature import signature

    sigs = {"get": signature("get", 0, ("u32",), "u64")}
    rt = polyplug.RuntimeBuilder().config(polyplug.RuntimeConfig(
        hot_reload_enabled=True, log=lambda *_: None,
        log_max_level=polyplug.LogLevel.Error)).loader(polyplug.LuaLoader()).build()
    written = [1] * BUNDLES    # newest version on disk
    committed = [1] * BUNDLES  # version every call starting now must see (or newer)
    dirs = [write_bundle(root, b, 1) for b in range(BUNDLES)]
    for d in dirs:
        rt.load_bundle(d)
    stop = threading.Event()
    report: dict[str, Any] = {"mode": mode, "callers": {}, "reloader": {}, "problems": []}
    problems: list[str] = report["problems"]
    lock = threading.Lock()

    def problem(text: str) -> None:
        with lock:
            if len(problems) < 50:
                problems.append(text)

    def caller(tid: int) -> None:
        rng = random.Random(tid)
        stats = {"ok": 0, "stale": 0, "not_found": 0, "unexpected": 0}
        contracts: dict[int, Any] = {}
        while not stop.is_set():
            b = rng.randrange(BUNDLES)
            c = contracts.get(b)
            try:
                if c is None:
                    c = contracts[b] = (rt.contract(contract_name(b), 1, sigs)
                                        if mode == "explicit" else
                                        rt.contract(contract_name(b), 1))
                arg = rng.randrange(4096)
                lo = committed[b]
                value = c.get(arg)
                hi = written[b]
            except StaleHandle:
                stats["stale"] += 1
                contracts.pop(b, None)
                continue
            except PluginNotFound:
                stats["not_found"] += 1
                contracts.pop(b, None)
                continue
            except Exception as exc:  # noqa: BLE001 - any other type is the finding
                stats["unexpected"] += 1
                contracts.pop(b, None)
                problem(f"caller {tid}: {type(exc).__module__}.{type(exc).__name__}: {exc}")
                continue
            vb, vver, varg = decode(value)
            if vb != b or varg != arg or not lo <= vver <= hi:
                problem(f"caller {tid}: wrong result from {contract_name(b)}({arg}): bundle "
                        f"{vb}, version {vver}, arg {varg}; expected version {lo}..{hi}")
                stats["unexpected"] += 1
            else:
                stats["ok"] += 1
        report["callers"][tid] = stats

    def reloader() -> None:
        rng = random.Random(99)
        stats = {"reloads": 0, "unloads": 0, "loads": 0, "failures": 0}
        rss: list[tuple[float, int]] = []
        start = time.monotonic()
        last_sample = 0.0
        while not stop.is_set():
            b = rng.randrange(BUNDLES)
            try:
                if rng.random() < 0.6:
                    written[b] += 1
                    write_bundle(root, b, written[b])
                    rt.reload_bundle(dirs[b])
                    committed[b] = written[b]
                    stats["reloads"] += 1
                else:
                    rt.unload_bundle(polyplug.bundle_id(bundle_name(b)))
                    stats["unloads"] += 1
                    time.sleep(rng.random() * 0.002)
                    written[b] += 1
                    write_bundle(root, b, written[b])
                    rt.load_bundle(dirs[b])
                    committed[b] = written[b]
                    stats["loads"] += 1
            except Exception as exc:  # noqa: BLE001
                stats["failures"] += 1
                problem(f"reloader on bundle {b}: {type(exc).__name__}: {exc}")
                return
            now = time.monotonic() - start
            if now - last_sample > 0.05:
                gc.collect()
                rss.append((now, rss_bytes()))
                last_sample = now
            time.sleep(rng.random() * 0.001)
        report["reloader"] = stats
        report["rss"] = rss

    threads = [threading.Thread(target=caller, args=(t,), daemon=True) for t in range(CALLERS)]
    threads.append(threading.Thread(target=reloader, daemon=True))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    hung = [t.name for t in threads if t.is_alive()]
    if hung:
        problem(f"threads did not finish within 30 s of the stop signal (deadlock?): {hung}")
    report["seconds"] = time.monotonic() - t0
    report["bundles_after"] = len(rt.list_bundles())
    if not hung:
        rt.close()
    return report


# ── the parent: pytest ───────────────────────────────────────────────────────


def run_child(tmp_path: Path, seconds: float, mode: str) -> dict[str, Any]:
    cmd = [sys.executable, "-X", "faulthandler", str(Path(__file__).resolve()),
           str(tmp_path), str(seconds), mode]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True,
                          timeout=seconds * 10 + 120, cwd=HERE.parent)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, (
        f"the stress child ended with exit status {proc.returncode} (negative = killed by that "
        f"signal: -11 SIGSEGV, -6 SIGABRT)\nstdout:\n{proc.stdout[-4000:]}\n"
        f"stderr:\n{proc.stderr[-8000:]}")
    return json.loads(lines[-1])


def summary(report: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in report.items() if k != "rss"}, indent=1)


def test_calls_during_reload_and_unload_are_correct_or_typed_errors(tmp_path: Path) -> None:
    """4 callers x 3 bundles while a thread reloads / unloads+loads them, ~4 s."""
    report = run_child(tmp_path, SECONDS, "explicit")
    print(summary(report))
    assert not report["problems"], summary(report)
    callers = report["callers"]
    assert len(callers) == CALLERS, f"a caller thread died: {summary(report)}"
    ok = sum(s["ok"] for s in callers.values())
    assert ok >= MIN_CALLS, f"only {ok} successful calls: {summary(report)}"
    assert all(s["ok"] > 0 for s in callers.values()), summary(report)
    reloader = report["reloader"]
    assert reloader["reloads"] > 10 and reloader["unloads"] > 10, summary(report)
    assert report["bundles_after"] == BUNDLES
    rss = report["rss"]
    baseline = rss[len(rss) // 4][1]  # after warm-up
    growth = max(r for _, r in rss[len(rss) // 4:]) - baseline
    print(f"RSS {baseline / 2**20:.1f} MiB after warm-up, grew by {growth / 2**20:.1f} MiB "
          f"over {len(rss)} samples")
    assert growth < RSS_LIMIT, (
        f"RSS grew by {growth / 2**20:.1f} MiB during the stress (limit "
        f"{RSS_LIMIT / 2**20:.0f} MiB): {[(round(t, 2), r // 2**20) for t, r in rss]}")


def test_contract_from_manifest_signatures_while_loading(tmp_path: Path) -> None:
    """``rt.contract(name, major)`` racing with ``load_bundle`` must not lose the signatures.

    polyplug/runtime.py ``Runtime.load_bundle_from_source`` calls ``pp_runtime_load``
    (which publishes the contracts to the registry) and only afterwards records the
    manifest in ``self._manifests``; ``Runtime.contract`` takes the signatures from
    ``self._manifests.get(owner)``.  A thread calling ``rt.contract(name, 1)`` in that
    window gets a Contract with a live handle but *no* declared functions, so
    ``contract.get(...)`` raises ``AttributeError: ... declares no function 'get'
    (declared: none)`` -- neither a result nor a polyplug error.  Expected: only
    results, StaleHandle or PluginNotFound (e.g. record the manifest before the C load
    publishes the contracts, or take the signatures from the bundle that owns the
    handle under one lock).
    """
    report = run_child(tmp_path, 1.5, "manifest")
    print(summary(report))
    assert not report["problems"], summary(report)


# ── the same in C, under AddressSanitizer + UndefinedBehaviorSanitizer ────────

STRESS_DRIVER = HERE / "c" / "stress_driver.c"
SAN_ENV = {  # as tests/test_c_sanitizers.py: halt on the first report
    "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:abort_on_error=0:exitcode=86:"
                    "detect_stack_use_after_return=1:strict_string_checks=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=87",
    "LSAN_OPTIONS": "exitcode=88",
}
SAN_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
               "SUMMARY: UndefinedBehaviorSanitizer")


def _cbuild() -> Any:
    import cbuild  # tests/ is on sys.path under pytest, like conftest

    return cbuild


@pytest.fixture(scope="module")
def san_stress_driver() -> Path:
    cbuild = _cbuild()
    try:
        return cbuild.build_program("stress_driver", [STRESS_DRIVER], sanitize=True, opt="-O1")
    except cbuild.CBuildError as exc:
        pytest.fail(f"could not build the ASan+UBSan stress driver:\n{exc}")


def run_san_driver(exe: Path, work: Path, *args: str) -> dict[str, int]:
    """Run the sanitized driver; zero sanitizer reports and exit 0, or fail.  Returns
    the numbers of its last line ("stats k=v ..." / "scenario NAME k=v ...")."""
    proc = subprocess.run([str(exe), "--work", str(work), *args], check=False,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **SAN_ENV})
    reports = [m for m in SAN_MARKERS if m in proc.stderr]
    assert proc.returncode == 0 and not reports and not proc.stderr.strip(), (
        f"stress_driver {' '.join(args)} failed (exit {proc.returncode}; 86 = ASan, "
        f"87 = UBSan, 88 = LeakSanitizer, 1 = wrong results / unexpected errors):\n"
        f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-12000:]}")
    print(proc.stdout)
    last = proc.stdout.strip().splitlines()[-1]
    return {k: int(v) for k, _, v in (f.partition("=") for f in last.split() if "=" in f)}


def test_c_stress_under_asan(san_stress_driver: Path, tmp_path: Path) -> None:
    """4 pthreads call 3 bundles through pp_call_handle while a thread reloads
    (pp_runtime_reload) and unloads / loads them (pp_runtime_unload / pp_runtime_load),
    ~3 s, under ASan+UBSan.  Callers look contracts up again whenever their handle
    goes stale, so they also race with loads in progress.

    It guards the window of a *first* load: a contract is published to the registry
    while the loader is still committing its VM and function references, and a call
    that finds it then must wait for the load to finish or be refused with a typed
    error (once it ran into a record with ``fn_count`` set and ``fn_refs == NULL``).
    """
    stats = run_san_driver(san_stress_driver, tmp_path, "--seconds", "3")
    assert stats["ok"] >= 10_000 and stats["unloads"] >= 10 and stats["reloads"] >= 10, stats


def test_c_stress_under_asan_lookups_only_after_load(san_stress_driver: Path,
                                                     tmp_path: Path) -> None:
    """The same stress, but callers keep only handles looked up while their bundle was
    fully loaded: calls race with unloads and reloads, never with a load in progress
    (separates those races from the one above)."""
    stats = run_san_driver(san_stress_driver, tmp_path, "--seconds", "2", "--gate", "1")
    assert stats["ok"] >= 10_000 and stats["unloads"] >= 10 and stats["reloads"] >= 10, stats


def test_c_stress_with_limits_under_asan(san_stress_driver: Path, tmp_path: Path) -> None:
    """The stress with limits: calls under a long limit (a deadline the watchdog fixes
    on its first look), a short limit that runs out while the call spins (the watchdog
    arms hooks while other threads reload and unload the VMs), and cancel tokens freed
    the moment their call returns.  ASan reports it if the watchdog ever touches a
    freed VM or token; a call stopped by a limit it did not have is a problem."""
    stats = run_san_driver(san_stress_driver, tmp_path, "--seconds", "3", "--limits", "1")
    assert stats["ok"] >= 200 and stats["stopped"] >= 10, stats
    assert stats["unloads"] >= 5 and stats["reloads"] >= 5, stats


def test_c_unload_with_calls_queued_on_the_bundle_lock_under_asan(san_stress_driver: Path,
                                                                  tmp_path: Path) -> None:
    """100 rounds: one call runs in a bundle, three more passed the handle check and
    spin on the bundle's lock, and the bundle is unloaded.  Each queued call must
    return its result or StaleHandle.  (Before the call drain of b6a2a44 the unload
    could take the lock ahead of the queued calls and free the VM under them.)"""
    stats = run_san_driver(san_stress_driver, tmp_path, "--scenario", "queued-unload",
                           "--seconds", "1")
    assert stats["served"] + stats["refused"] == 300, stats


def test_c_lock_hands_off_to_sleeping_waiters_under_asan(san_stress_driver: Path,
                                                        tmp_path: Path) -> None:
    """Three threads make 100 calls each into one bundle, every call holding the VM for
    3 ms: waiters spin 2 ms, then sleep, so each hand-off goes through the VM lock's
    sleeping protocol (pp_lock.c).  A lost wake-up is a call that never returns: the
    driver gives up after 120 s and exits 3."""
    stats = run_san_driver(san_stress_driver, tmp_path, "--scenario", "handoff", "--seconds", "1")
    assert stats["calls"] == 300, stats


if __name__ == "__main__":  # the child
    workdir, secs, how = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    try:
        result = run_stress(workdir, secs, how)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        sys.exit(3)
    result["problems"] = sorted(set(result["problems"]))
    print(json.dumps(result), flush=True)
    # skip interpreter teardown: hung daemon threads may still hold the runtime
    os._exit(0)
