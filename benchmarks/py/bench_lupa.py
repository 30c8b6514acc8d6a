"""The string rows for lupa (run in build/lupa-venv, where ``lupa`` is installed; stdlib
and lupa only).

    python bench_lupa.py DIR N ROT    time every case, one JSON line each (lupa.<key>)
    python bench_lupa.py DIR serve    for bench_strings.py: read "KEY COUNT" lines, answer
                                      each with "NS BAD": ns per call of COUNT calls, and
                                      1 if the case's result was wrong

DIR is benchmarks/bundles/strings.  Its bodies.lua — the function bodies the strings
bundle wraps — is loaded into a ``lupa.luajit21.LuaRuntime`` (lupa's bundled LuaJIT
2.1) and its functions are called with the Python values of benchcommon.STRING_CASES:
what a user of lupa writes.  Strings go in and come out as ``str`` (lupa's default
UTF-8 encoding); the bytes case uses a second runtime with ``encoding=None``, in which
Lua strings come back as ``bytes``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchcommon import STRING_CASES, args, die, emit, per_call_ns, rotated, string_loops

try:
    from lupa import luajit21
except ImportError as exc:  # pragma: no cover - only outside the lupa venv
    die(f"lupa with its LuaJIT 2.1 is not installed here ({exc})")


def lupa_functions(bundle: str) -> dict:
    source = (Path(bundle) / "bodies.lua").read_text()
    bodies = luajit21.LuaRuntime().execute(source)
    raw = luajit21.LuaRuntime(encoding=None).execute(source)  # bytes in, bytes out
    return {key: raw[name.encode()] if key == "echo64k" else bodies[name]
            for key, name, _a, _d in STRING_CASES}


def main(argv: list[str]) -> None:
    bundle, n, rot = args(argv, "", "500000", "0")
    if n == "serve":
        loops = {key: (loop, bad)
                 for key, loop, _count, bad in string_loops(lupa_functions(bundle), 1000)}
        print("ready", flush=True)
        for line in sys.stdin:
            key, count = line.split()
            loop, bad = loops[key]
            print(per_call_ns(loop, int(count)), bad, flush=True)
        return
    loops = string_loops(lupa_functions(bundle), int(n))
    for key, loop, count, bad in rotated(loops, int(rot)):
        emit(f"lupa.{key}", per_call_ns(loop, count), bad)


if __name__ == "__main__":
    main(sys.argv[1:])
