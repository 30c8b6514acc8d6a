"""Limits that nothing escapes (issue 12): what a hostile or careless bundle does to the
C stack, the heap, the clock and the loader's file reads.  Each scenario is a script
in tests/scenarios/ run in its own process with a hard timeout (conftest.run_scenario):
these bugs were segfaults and hangs.
"""

from __future__ import annotations

import pytest
from conftest import run_scenario

STACKS = ("main", "thread32768", "thread65536", "thread0")  # 32 KiB is Python's minimum

CASES = {
    # 12.1: recursion through C re-entries ends in a typed error, not SIGSEGV, on every
    # stack size (a Lua-stack "stack overflow" is fine too: both are GuestErrors)
    "cstack_recursion": [f"{where} {fn} stack overflow" for where in STACKS
                         for fn in ("co", "gs", "so", "pr")]
                        + [f"{where} next call: 7" for where in STACKS] + ["process survived"],
    # 12.2: an xpcall message handler that loops is stopped by the timeout and by cancel
    "xpcall_handler_loops": [f"timeout fn {fn}: CallTimeout" for fn in range(3)]
                            + [f"cancel fn {fn}: Cancelled" for fn in range(3)]
                            + ["next call: 7", "next call after cancel: 7", "finished"],
    # 12.3: a looping __gc finalizer fails a limited call, and unload / reload / close
    # return within the close bound; finalizer errors are logged, not printed
    "finalizer_loops": [
        "limited call: CallTimeout within bound: True", "next call: 7",
        "reload: ok within bound: True", "after reload: 7", "unload: ok within bound: True",
        "close: ok within bound: True", "warned: 3",
        "logged: ['bundle `raiser`: error in a __gc finalizer: (error object is a table "
        "value)', 'bundle `raiser`: error in a __gc finalizer: raiser/bundle.lua:4: first']",
        "capped: 6 True", "finished"],
    # review: collectgarbage() in finalizers nests a C level per pending finalizer; the
    # finalizers' errors, logged deep in the stack, wait for the call's end
    "cstack_collectgarbage_in_finalizer": [f"{where} next call: 7" for where in (
        "main", "thread1048576", "thread262144", "thread32768")] + ["process survived"],
    # review: the collection after an out-of-memory error runs the guest's finalizers
    # while the call is still watched and capped
    "finalizer_in_the_collection_after_oom": ["cap held: True", "loop_in_gc ",
                                              "next call: 7", "process survived"],
    # fresh-eyes review of cperf2: finalizers that keep memory from the collection after
    # an out-of-memory error, and re-arm themselves, gain no headroom per failed call
    # fresh-eyes review of cperf2: a child forked after the watchdog started has no
    # watchdog thread; its limited calls must still stop (child and grandchild)
    "limits_in_a_forked_child": [
        "parent: CallTimeout", "child: grandchild CallTimeout CallTimeout Cancelled 42",
        "child: CallTimeout CallTimeout Cancelled 42", "finished"],
    # fresh-eyes review of cperf2: a cancel token ends a wait for a busy bundle
    "cancel_reaches_a_waiting_call": [
        "token: Cancelled (waited), ended by the cancel: True",
        "token and a 60 s limit: Cancelled (waited), ended by the cancel: True",
        "holder stopped: True", "uncancelled waiter: 42", "finished"],
    # fresh-eyes review of cperf2: a guest's reload waits for a busy bundle no longer
    # than the calling call's own limit
    "guest_reload_waits_within_its_limit": [
        "within its limit: True", "reload from a call after the other call ended: 0",
        "finished"],
    "finalizers_creep_past_the_memory_limit": [
        "calls failed with: ['GuestOutOfMemory']", "cap held: True", "process survived"],
    # review: the limit never raises inside a jit.profile callback (LuaJIT would exit);
    # the restricted profile has neither jit.profile nor jit.attach
    "profiler_callback_under_a_timeout": [
        "profiled calls timed out: 30", "restricted: jit.attach, jit.profile loads: nil false",
        "process survived"],
    # review: a signed dependent reloaded by a cascade is verified again (12.11)
    "signed_dependent_cascade_reload": [
        "as is: manifest path intact: True", "as is: unsigned code ran under Required: False",
        "path fixed: unsigned code ran under Required: False", "process survived"],
    # 12.4: a guest that catches its own out-of-memory error leaves no garbage behind
    "guest_catches_out_of_memory": ["hog caught its own error", "next call: 1000"],
    # 12.6: nested calls inherit the outer deadline; waiting for a VM counts against it
    "limits_reach_into_nested_calls": [
        "nested call stopped: True", "nested call bounded by the outer deadline: True",
        "queued call: CallTimeout True", "waited at most its limit: True"],
    # 12.5 / 17: a limit of 0.1 s or more reads no clock per call (the watchdog fixes its
    # start); it stops runaway, nested and queued calls all the same, never early
    "long_limits_start_at_the_watchdogs_look": [
        "short calls: True", "runaway call stopped: True not early: True bounded: True",
        "next call: 42", "short limits never early: True", "nested call stopped: True",
        "nested: not early: True bounded: True",
        "queued call: CallTimeout True not early: True bounded: True",
        "cancelled under a long limit: True", "after all: 42"],
    # 12.7: huge limits saturate to "no limit", nonsense is rejected naming the field
    "huge_limits_saturate": [
        "{'call_timeout': 10000000000.0} -> 1000", "{'call_timeout': inf} -> 1000",
        "{'call_timeout': 1e+30} -> 1000", "{'memory_limit': 18446744073709551615} -> 1000",
        "{'memory_limit': 18446744073709551616} -> 1000", "per-call inf -> 1000",
        "rejected 0 names the field: True", "rejected nan names the field: True"],
    # 12.8: every function of a 70,000-entry table answers; past the limit: InitFailed
    "many_functions": ["fn 69999 -> 69999", "fn 65535 -> 65535", "too many: True"],
    # 12.9: FIFOs as entry file or module are refused, never opened for reading
    "fifo_entry_and_module": ["entry FIFO: True", "module FIFO none: True",
                              "module FIFO restricted: True", "C module FIFO: True",
                              "finished"],
    # 12.12: the restricted profile's module search and text-only load hold
    "restricted_profile_holds": [
        "outside module loaded: False", "bytecode through load: False",
        "bytecode through loadstring: False", "text load: 42", "searchpath, loadlib: nil nil"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_scenario(name: str) -> None:
    run_scenario(name, CASES[name])
