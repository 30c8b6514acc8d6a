"""Guests calling back into the runtime, and allocation failures in the loader's own
code: each scenario runs in a child process, because the bugs these guard against were
hangs (deadlocks) and process exits (LuaJIT panics), found in a review of csrc/."""

from __future__ import annotations

import pytest
from conftest import run_scenario

CASES = {
    # a guest loads a bundle whose init fails, inside a checked call: the failed load
    # drains in-flight calls and used to wait for the caller's own call forever
    "failed_load_inside_a_checked_call": ["raw pp_call: code 0", "checked: (0, '')",
                                          "finished"],
    # a guest reloads its own bundle from inside a call: refused, not a self-deadlock
    "reload_self_from_inside_a_call": ["(0, '')", "finished"],
    # polyplug_init ends right at the memory limit: a typed error, not a LuaJIT panic
    "out_of_memory_at_the_end_of_init": ["process survived"],
    # the collection after an out-of-memory call runs a raising finalizer
    "out_of_memory_with_a_raising_finalizer": ["code 202", "process survived"],
    # bundle_memory while a guest in that bundle loads another bundle (was an ABBA)
    "bundle_memory_during_a_guest_load": ["call done 0", "finished"],
    # destroying an unknown instance id at the memory limit (used to allocate)
    "destroy_unknown_instance_at_the_memory_limit": ["process survived"],
    # nested same-bundle calls build vm.call's frame above the guest's, with the
    # registry's helpers, and leave the guest's stack as they found it on every path
    "nested_calls_build_their_own_frame": [
        "arena through a nested call: True", "missing instance: True", "nested error: True",
        "nested error text: True", "nested spin stopped: True", "within the outer limit: True",
        "after: True", "finished"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_reentry_scenario(name: str) -> None:
    run_scenario(name, CASES[name])
