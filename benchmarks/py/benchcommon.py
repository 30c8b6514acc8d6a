"""Helpers shared by the measurement scripts (stdlib only: it also runs in the
upstream venv, where this project's polyplug is not importable)."""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import Callable


def rss_kib() -> int:
    """VmRSS of this process in KiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def emit(key: str, value: float, bad: int = 0) -> None:
    """One result line for benchmarks/run.py."""
    print(json.dumps({"key": key, "value": value, "bad": int(bad)}), flush=True)


def per_call_ns(loop: Callable[[int], None], n: int) -> float:
    """Run ``loop(n)`` with the cyclic GC off; wall ns per iteration."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        loop(n)
        t1 = time.perf_counter_ns()
    finally:
        gc.enable()
    return (t1 - t0) / n


def rotated(items: list, rot: int) -> list:
    """``items`` starting at index ``rot`` (round-robin order across repeats)."""
    if not items:
        return items
    k = rot % len(items)
    return items[k:] + items[:k]


def args(argv: list[str], *defaults: str) -> list[str]:
    """argv padded with defaults."""
    out = list(argv)
    out += list(defaults[len(out):])
    return out


def die(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr)
    raise SystemExit(2)
