"""Lifecycle and concurrency (issue 11): whatever threads do with calls, loads, reloads,
unloads and close, the host neither hangs nor crashes nor touches freed memory.

Each scenario is a script in tests/scenarios/ run in its own process with a hard
timeout, so a deadlock fails its test instead of stalling the suite and a crash shows
up as a signal.  The C-level races (close with calls in flight, raw calls through
retired interfaces, instance creation racing unload, a randomized schedule) also run
under AddressSanitizer in tests/test_lifecycle_c.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import run_scenario

CASES = {
    # 11.1a: a failed load used to drain calls while holding the flow lock
    "guest_load_while_another_load_fails": [
        "finished", "a: (0, '')", "b: InitFailed: init failed for bundle `bad`", "good loaded: True"],
    # 11.1b: ... and while holding the VM lock of the guest that started the load
    "guest_load_fails_while_caller_waits": ["finished", "a: (0, '')", "b: (0, '')"],
    # 11.2: draining held drain_lock for the whole wait
    "unload_while_guest_load_fails": ["finished", "a: (0, '')", "unload took < 0.3 s: True"],
    # 11.3: destroy_instance waited for the other bundle's VM without a bound
    "destroy_instances_across_bundles": ["finished", "p: (0, '') q: (0, '')", "bounded: True"],
    # 11.4: a Runtime collected without close() while a finalizer logs
    "runtime_collected_without_close": ["finalizer logged: True", "process survived"],
    # 11.5: close() while a call runs
    "close_while_a_call_runs": [
        "close waited for the call: True call: (0, '')", "load after close: RuntimeClosed",
        "short close: RuntimeBusy: True",
        "slow call: (0, '')", "second close: True",
        "C call after close: 5 stale contract handle: the runtime is closed",
        "process survived"],
    # 11.6: raw vm.call through an interface pointer kept across unload and slot reuse
    "stale_interface_after_unload": [
        "before: (0, 1, '')",
        "after unload: (5, 0, \"contract 't.first': bundle `first` was unloaded; its "
        "interface pointer is stale\")",
        "copy after unload: 5", "slot reused: True", "old pointer after reuse: 5",
        "new contract: (0, 2, '')", "instance through old pointer: True", "process survived"],
    # 11.7: instance create/close and calls racing unload and reload
    "instances_race_unload": ["finished", "unexpected: []", "calls ok: True",
                              "process survived"],
    # 11.8: operations on one bundle waited for calls in another
    "unload_while_another_bundle_is_busy": [
        "unload fast: True failed load fast: True", "finished"],
    # 11.9: bounded waits sleep instead of spinning
    "bounded_wait_sleeps": ["nested call waited: True code: 0 inner: 0",
                            "slept while waiting: True"],
    # found by a fresh-eyes review of the above (each script says what it broke):
    "close_from_on_reload": ["finished", "close ok in 0.0"],
    "close_inside_other_runtimes_flow": ["finished", "rt2.close ok in 0.0",
                                         "dropping rt2 took 0.0"],
    "close_waits_for_a_flow": ["a call that never ends: close(timeout=1) RuntimeBusy",
                               "an init that never ends: close(timeout=1) RuntimeBusy"],
    "cross_runtime_flow_deadlock": ["finished"],
    "dropped_runtime_finalizer_logs_later": ["finalizer records seen: ['finalizer ran']",
                                             "process survived"],
    "finalizer_reload_chain": ["outer reload: ok", "finished"],
    "finalizer_runs_unbounded": ["1. close(timeout=1): ok", "unload: returned",
                                 "2. call with timeout=5 s: returned"],
    "instance_count_survives_unload": ["warnings at the second unload: []"],
    # a fork() child inherits the VM and flow locks other threads of the parent held:
    # its waits for them are bounded and say why, instead of never ending; a lock one of
    # the child's own threads holds is waited for as long as it takes
    # ... and the leaf locks (registry, runtime, loader lists, a manifest's fill lock)
    # other threads were inside of at the fork are free in the child
    "fork_while_leaf_locks_are_busy": ["children that hung: 0, that failed: 0", "finished"],
    "fork_while_other_threads_hold_locks": [
        "call in child bounded: True", "other bundle in child: returned 7",
        "call waits for the child's own thread: returned 7 True",
        "load waits for the child's own thread: returned True",
        "parent after: returned 7", "load in child bounded: True",
        "call in child: returned 7", "parent loads after: 5 bundles", "finished"],
    # review: a finalizer loading its own bundle while it unloads is refused, so the
    # unload cannot leave a loaded bundle without registrations behind
    "finalizer_reloads_during_unload": ["before: 7", "finalizer: load_bundle code 1",
                                        "listed after unload: False", "load again: ok"],
    "shared_loader_two_runtimes": ["hung threads: 0", "unexpected results: [] 0"],
    "unload_self_from_init": [
        "load raised: InitFailed init failed for bundle `zombie`: it was unloaded while it "
        "was loading", "listed bundles: []", "handle found: False", "close: ok"],
    "unload_self_from_reload_init": [
        "reload raised: BundleNotFound reload of bundle `z` not applied: it was unloaded",
        "listed bundles: []", "handle found: False", "close: ok"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_lifecycle_scenario(name: str) -> None:
    run_scenario(name, CASES[name])


# ── in-process checks (nothing here can hang) ────────────────────────────────

COUNTER = """
local function get() end
function polyplug_init()
    return { ["t.counted"] = { factory = function() return {} end, functions = { [0] = get } } }, { code = 0 }
end
"""


def test_live_instance_counts_do_not_survive_an_unload(tmp_path: Path) -> None:
    """11.9: a re-loaded bundle used to warn about instances of its previous load."""
    import polyplug

    d = tmp_path / "counted"
    d.mkdir()
    (d / "manifest.toml").write_text(
        f'name = "counted"\nid = {polyplug.bundle_id("counted")}\nloader = "lua"\n'
        'file = "bundle.lua"\n')
    (d / "bundle.lua").write_text(COUNTER)
    records: list[str] = []
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).hot_reload().logger(
            lambda level, scope, message: records.append(message)).build() as rt:
        rt.load_bundle(d)
        rt.contract("t.counted", 1, signatures={}).instance()  # never closed
        rt.unload_bundle(polyplug.bundle_id("counted"))
        assert any("still has 1 live guest instance" in m for m in records)
        records.clear()
        rt.load_bundle(d)
        rt.reload_bundle(d)
        assert not [m for m in records if "live guest instance" in m], records

