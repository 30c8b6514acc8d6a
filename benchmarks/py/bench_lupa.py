"""The string rows for lupa (run by benchmarks/run.py in build/lupa-venv, where
``lupa`` is installed; stdlib and lupa only).

    python bench_lupa.py DIR N ROT    DIR = benchmarks/bundles/strings

Loads DIR/bodies.lua — the function bodies the strings bundle wraps — into a
``lupa.luajit21.LuaRuntime`` (lupa's bundled LuaJIT 2.1) and calls them with the Python
values of benchcommon.STRING_CASES: what a user of lupa writes.  Strings go in and come
out as ``str`` (lupa's default UTF-8 encoding); the bytes case uses a second runtime
with ``encoding=None``, in which Lua strings come back as ``bytes``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchcommon import STRING_CASES, args, die, run_string_cases

try:
    from lupa import luajit21
except ImportError as exc:  # pragma: no cover - only outside the lupa venv
    die(f"lupa with its LuaJIT 2.1 is not installed here ({exc})")


def main(argv: list[str]) -> None:
    bundle, n, rot = args(argv, "", "500000", "0")
    source = (Path(bundle) / "bodies.lua").read_text()
    text = luajit21.LuaRuntime()
    binary = luajit21.LuaRuntime(encoding=None)
    bodies = text.execute(source)
    raw = binary.execute(source)
    functions = {key: raw[name.encode()] if key == "echo64k" else bodies[name]
                 for key, name, _a, _d in STRING_CASES}
    run_string_cases(functions, "lupa", int(n), int(rot))


if __name__ == "__main__":
    main(sys.argv[1:])
