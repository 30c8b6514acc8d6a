"""The string rows for this project's Pythonic call layer, and lupa's next to them (run
by benchmarks/run.py).

    python bench_strings.py DIR N ROT [LUPA_PYTHON]    DIR = benchmarks/bundles/strings

Calls every function of ``rt.contract("bench.strings", 1)`` with the Python values of
benchcommon.STRING_CASES, N calls per case (fewer for the large ones), cases in an
order rotated by ROT.  With LUPA_PYTHON (the python of build/lupa-venv) it also starts
``bench_lupa.py DIR serve`` there and times lupa's call of the same body right after
ours, ROUNDS times in turn, keeping each one's fastest: the two figures of a case are
taken moments apart, so a busy machine skews them alike and their ratio holds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchcommon import STRING_CASES, args, die, emit, per_call_ns, rotated, string_loops

from polyplug import LuaLoader, Runtime, RuntimeConfig

ROUNDS = 3


def main(argv: list[str]) -> None:
    bundle, n, rot, lupa_python = args(argv, "", "500000", "0", "")
    rt = Runtime(RuntimeConfig(), [LuaLoader()])
    rt.load_bundle(bundle)
    strings = rt.contract("bench.strings", 1)
    functions = {key: getattr(strings, name) for key, name, _a, _d in STRING_CASES}
    lupa = None
    if lupa_python:
        lupa = subprocess.Popen([lupa_python, str(Path(__file__).with_name("bench_lupa.py")),
                                 bundle, "serve"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert lupa.stdin is not None and lupa.stdout is not None
        if lupa.stdout.readline().strip() != "ready":
            die("bench_lupa.py serve did not start")
    for key, loop, count, bad in rotated(string_loops(functions, int(n)), int(rot)):
        ours, theirs, lupa_bad = [], [], 0
        for _ in range(ROUNDS):
            ours.append(per_call_ns(loop, count))
            if lupa is not None:
                lupa.stdin.write(f"{key} {count}\n")
                lupa.stdin.flush()
                ns, lupa_bad = lupa.stdout.readline().split()
                theirs.append(float(ns))
        emit(f"py.str.{key}", min(ours), bad)
        if theirs:
            emit(f"lupa.{key}", min(theirs), int(lupa_bad))
    if lupa is not None:
        lupa.stdin.close()
        lupa.wait(timeout=60)
    rt.close()


if __name__ == "__main__":
    main(sys.argv[1:])
