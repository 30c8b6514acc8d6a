"""``import polyplug`` in a fresh interpreter (run by benchmarks/run.py; stdlib only, so it
also runs in the upstream venv).

    python bench_import.py COUNT

Times the ``import polyplug`` statement (``time.perf_counter`` around it) in COUNT fresh
interpreters of this Python, after one warm-up run that writes the bytecode cache (into
``PYTHONPYCACHEPREFIX``, default ``./pycache``, so the source tree stays clean), and
emits the fastest: start-up noise only ever adds.  The same is measured for the standard
modules the package cannot do without (``typing``, ``enum``, ``dataclasses``, ``struct``,
``weakref``) as the floor.
"""

from __future__ import annotations

import os
import subprocess
import sys

from benchcommon import args, die, emit

TIMED = ("import time; t = time.perf_counter(); import {mods}; "
         "print((time.perf_counter() - t) * 1000)")
FLOOR = "typing, enum, dataclasses, struct, weakref"


def fastest(mods: str, count: int, env: dict[str, str]) -> float:
    code = TIMED.format(mods=mods)
    times = []
    for i in range(count + 1):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, check=False)
        if proc.returncode != 0:
            die(f"`import {mods}` failed: {proc.stderr.strip()}")
        if i:  # the first run writes the bytecode cache
            times.append(float(proc.stdout))
    return min(times)


def main(argv: list[str]) -> None:
    (count,) = args(argv, "10")
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", os.path.abspath("pycache"))
    emit("py.import.ms", fastest("polyplug", int(count), env))
    emit("py.import.floor.ms", fastest(FLOOR, int(count), env))


if __name__ == "__main__":
    main(sys.argv[1:])
