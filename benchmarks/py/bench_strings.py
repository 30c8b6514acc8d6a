"""The string rows for this project's Pythonic call layer (run by benchmarks/run.py).

    python bench_strings.py DIR N ROT    DIR = benchmarks/bundles/strings

Calls every function of ``rt.contract("bench.strings", 1)`` with the Python values of
benchcommon.STRING_CASES (the same values bench_lupa.py passes to lupa), N calls per
case (fewer for the large ones), in an order rotated by ROT.
"""

from __future__ import annotations

import sys

from benchcommon import STRING_CASES, args, run_string_cases

from polyplug import LuaLoader, Runtime, RuntimeConfig


def main(argv: list[str]) -> None:
    bundle, n, rot = args(argv, "", "500000", "0")
    rt = Runtime(RuntimeConfig(), [LuaLoader()])
    rt.load_bundle(bundle)
    strings = rt.contract("bench.strings", 1)
    functions = {key: getattr(strings, name) for key, name, _a, _d in STRING_CASES}
    run_string_cases(functions, "py.str", int(n), int(rot))
    rt.close()


if __name__ == "__main__":
    main(sys.argv[1:])
