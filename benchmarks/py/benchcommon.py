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


# ── the string rows: the same cases for our Pythonic layer and for lupa ─────

# (key, function name, arguments, calls divisor): the functions of
# bundles/strings (bodies.lua), each called with the same Python values by
# bench_strings.py (rt.contract("bench.strings", 1).<name>) and bench_lupa.py
# (lupa.luajit21, the body itself).  Large cases make fewer calls: N / divisor.
TEXT_4K = "".join(chr(ord("a") + i % 26) for i in range(4096))
BLOB_64K = bytes(i % 255 for i in range(65536))  # every byte value but 0xff, NULs included
STRING_CASES = [
    ("add", "add", (7, 35), 1),
    ("slen", "slen", ("hello, world",), 1),
    ("const", "const", (), 1),
    ("upper12", "upper", ("hello, world",), 1),
    ("upper4k", "upper", (TEXT_4K,), 20),
    ("echo64k", "echo", (BLOB_64K,), 200),
]
STRING_RESULTS = {"add": 42, "slen": 12, "const": "hello, world", "upper12": "HELLO, WORLD",
                  "upper4k": TEXT_4K.upper(), "echo64k": BLOB_64K}


def call_loop(fn: Callable[..., object], call_args: tuple) -> Callable[[int], None]:
    """A loop ``f(n)`` calling ``fn(*call_args)`` n times, spelled out per arity so that
    no ``*args`` unpacking is timed."""
    if len(call_args) == 0:
        def loop(n: int) -> None:
            for _ in range(n):
                fn()
    elif len(call_args) == 1:
        (a,) = call_args

        def loop(n: int) -> None:
            for _ in range(n):
                fn(a)
    else:
        a, b = call_args

        def loop(n: int) -> None:
            for _ in range(n):
                fn(a, b)
    return loop


def string_loops(functions: dict[str, Callable[..., object]], n: int
                 ) -> list[tuple[str, Callable[[int], None], int, int]]:
    """(key, loop, calls, bad) for every STRING_CASES function of ``functions`` (by key),
    each checked once and warmed up (the JIT, caches)."""
    loops = []
    for key, _name, call_args, divisor in STRING_CASES:
        fn = functions[key]
        bad = int(fn(*call_args) != STRING_RESULTS[key])
        loops.append((key, call_loop(fn, call_args), max(n // divisor, 100), bad))
    for _key, loop, count, _bad in loops:
        loop(max(count // 20, 100))
    return loops
