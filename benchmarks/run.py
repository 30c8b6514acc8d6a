"""polyplug benchmarks: one command, one table (min / median over repeated runs).

    python benchmarks/run.py [--quick] [--upstream] [--no-lupa] [--repeat N] [--save FILE]

--quick     small counts, for a smoke run (well under a minute); it is labelled as
            such and judges no target (no ✓/✗)
--upstream  also measure upstream polyplug 0.1.3 (installed into build/upstream-venv
            from PyPI on first use) in the same run, and print our/upstream ratios
--no-lupa   skip the lupa rows (lupa is installed into build/lupa-venv from PyPI on
            first use; without it, or offline, those rows print n/a)
--repeat N  repeats per figure (default 5, --quick 3)
--save FILE also write the table, the machine and the command as Markdown

Nothing here asserts a time.  Every figure is measured once per repeat; the repeats
run round-robin (each repeat runs every group of figures, and every variant inside a
group, in an order rotated by the repeat number), so order effects are spread over
all variants instead of favouring one.  See benchmarks/README.md for what each row
means.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BUILD = ROOT / "build" / "bench"
BUNDLE = BENCH / "bundles" / "bench"
NATIVE_SRC = BENCH / "bundles" / "bench_native"
HOSTFN_BUNDLE = BENCH / "bundles" / "hostfn"
GENERATED = BUILD / "bundles"
NATIVE_BUNDLE = GENERATED / "bench_native"  # the native bench bundle, with its library
UPSTREAM_VENV = ROOT / "build" / "upstream-venv"
UPSTREAM_PACKAGES = ["polyplug==0.1.3", "polyplug-loaders-lua==0.1.3", "cffi"]
STRINGS = BENCH / "bundles" / "strings"
LUPA_VENV = ROOT / "build" / "lupa-venv"
LUPA_VERSION = "2.8"
PY = BENCH / "py"


@dataclass(frozen=True)
class Params:
    repeat: int
    c_calls: int        # C -> vm.call, per variant
    alloc_calls: int    # calls per variant when counting mallocs
    gc_calls: int       # calls when measuring Lua heap bytes per call
    thread_calls: int   # add calls per thread
    py_calls: int       # Python -> vm.call, per variant
    bundles: int        # bundles loaded into one fresh runtime
    reloads: int        # reloads of one bundle
    imports: int        # fresh interpreters timing `import polyplug`, per repeat
    scale_sizes: tuple[int, int, int]  # bundles loaded when lookups are timed (issue 19)
    scale_c_calls: int  # C lookups per figure
    scale_py_calls: int  # Python lookups per figure
    scale_bundles: int  # bundles in the large runtime of the load-as-it-grows figures
    str_calls: int      # string rows: calls per function (large strings: fewer)
    c_str_calls: int    # C -> vm.call of the string functions, per variant
    smoke: bool = False  # a smoke run: counts too small to judge the targets
    host_c_calls: int = 10_000_000  # guest → C host function calls per variant
    host_py_calls: int = 200_000    # guest → Python host function calls per variant


FULL = Params(repeat=5, c_calls=10_000_000, alloc_calls=1_000_000, gc_calls=100_000,
              thread_calls=5_000_000, py_calls=500_000, bundles=100, reloads=1000,
              imports=10, scale_sizes=(10, 1000, 10_000), scale_c_calls=1_000_000,
              scale_py_calls=20_000, scale_bundles=10_000, str_calls=500_000,
              c_str_calls=2_000_000)
QUICK = Params(repeat=3, c_calls=1_000_000, alloc_calls=100_000, gc_calls=20_000,
               thread_calls=1_000_000, py_calls=100_000, bundles=100, reloads=200,
               imports=4, scale_sizes=(10, 100, 1000), scale_c_calls=200_000,
               scale_py_calls=5_000, scale_bundles=1000, str_calls=100_000,
               c_str_calls=200_000, smoke=True, host_c_calls=1_000_000, host_py_calls=50_000)


# ── building ─────────────────────────────────────────────────────────────────


def _cbuild():
    spec = importlib.util.spec_from_file_location("cbuild", ROOT / "tests" / "cbuild.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def _shared_object(name: str, sources: list[Path], flags: list[str]) -> Path:
    """cc -shared, rebuilt only when the sources or flags change."""
    out = BUILD / f"{name}.so"
    key = hashlib.sha256(" ".join(flags).encode())
    for s in sources:
        key.update(s.read_bytes())
    for h in sorted((ROOT / "csrc" / "include").glob("*.h")) + sorted((BENCH / "c").glob("*.h")):
        key.update(h.read_bytes())
    stamp = out.with_name(out.name + ".key")
    if out.is_file() and stamp.is_file() and stamp.read_text() == key.hexdigest():
        return out
    BUILD.mkdir(parents=True, exist_ok=True)
    cc = shlex.split(os.environ.get("CC") or "cc")
    cmd = [*cc, "-O2", "-g", "-shared", "-fPIC", "-Wall", "-Wextra", *flags,
           *map(str, sources), "-o", str(out), "-pthread", "-ldl"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"building {name} failed:\n$ {shlex.join(cmd)}\n{proc.stdout}{proc.stderr}")
    stamp.write_text(key.hexdigest())
    return out


@dataclass
class Tools:
    bench_dispatch: Path
    bench_load: Path
    bench_hostfn: Path
    bench_scale: Path
    alloc_count: Path
    bench_native: Path
    bench_strings: Path
    bench_loops_so: Path | None = None


def build_native_bundle(cb) -> None:
    """NATIVE_BUNDLE: the native bench bundle's manifest and its freshly built library."""
    NATIVE_BUNDLE.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(NATIVE_SRC / "manifest.toml", NATIVE_BUNDLE / "manifest.toml")
    lib = cb.build_shared("bench_native", [NATIVE_SRC / "bench_native.c"], out_dir=BUILD)
    shutil.copyfile(lib, NATIVE_BUNDLE / "libbench_native.so")


def build(upstream: bool) -> Tools:
    cb = _cbuild()
    c = BENCH / "c"
    common = [c / "bench_host.c", c / "bench_loops.c"]
    luajit_inc = f"-I{cb.CSRC / 'luajit' / 'include'}"
    tools = Tools(
        bench_dispatch=cb.build_program("bench_dispatch", [c / "bench_dispatch.c", *common],
                                        cflags=[luajit_inc], out_dir=BUILD),
        bench_load=cb.build_program("bench_load", [c / "bench_load.c", *common],
                                    cflags=[luajit_inc], out_dir=BUILD),
        bench_hostfn=cb.build_program("bench_hostfn", [c / "bench_hostfn.c", *common],
                                      out_dir=BUILD),
        bench_scale=cb.build_program("bench_scale", [c / "bench_scale.c", *common],
                                     cflags=[luajit_inc], out_dir=BUILD),
        alloc_count=_shared_object("alloc_count", [c / "alloc_count.c"], []),
        bench_native=cb.build_program("bench_native", [c / "bench_native.c"], out_dir=BUILD),
        bench_strings=cb.build_program("bench_strings", [c / "bench_strings.c", *common],
                                       cflags=[luajit_inc], out_dir=BUILD),
    )
    build_native_bundle(cb)
    if upstream:
        tools.bench_loops_so = _shared_object(
            "libbench_loops", [c / "bench_loops.c"], [f"-I{ROOT / 'csrc' / 'include'}"])
    # the Python floor's cffi module, built now rather than inside a measurement
    _check_run([sys.executable, str(PY / "pyfloor.py")], "building the Python floor module")
    return tools


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def generate_bundles(count: int) -> None:
    """GENERATED/bench_NNNN: copies of the bench bundle, each under its own name."""
    template = (BUNDLE / "manifest.toml").read_text()
    base_id = str(_fnv1a64(b"bench"))
    assert 'name = "bench"' in template and base_id in template
    sources = {lua.name: lua.read_bytes() for lua in BUNDLE.glob("*.lua")}
    for i in range(max(count, 2)):
        name = f"bench_{i:04d}"
        d = GENERATED / name
        text = template.replace('name = "bench"', f'name = "{name}"')
        text = text.replace(base_id, str(_fnv1a64(name.encode())))
        files = {**sources, "manifest.toml": text.encode()}
        if all((d / f).is_file() and (d / f).read_bytes() == data for f, data in files.items()):
            continue  # current from an earlier run
        d.mkdir(parents=True, exist_ok=True)
        for f, data in files.items():
            (d / f).write_bytes(data)


# ── upstream venv ────────────────────────────────────────────────────────────


def _venv_python() -> Path:
    return UPSTREAM_VENV / "bin" / "python"


def ensure_upstream() -> dict[str, str]:
    """Create build/upstream-venv with upstream 0.1.3 if needed; the env for its runs."""
    py = _venv_python()
    probe = [str(py), "-c",
             ("import importlib.metadata as m, cffi, polyplug_loaders_lua; "
             "print(m.version('polyplug'), m.version('polyplug-loaders-lua'))")]
    ok = py.is_file() and subprocess.run(probe, check=False, capture_output=True, text=True,
                                         cwd=BUILD).stdout.split() == ["0.1.3", "0.1.3"]
    if not ok:
        print(f"installing upstream 0.1.3 into {UPSTREAM_VENV} ...", file=sys.stderr)
        _check_run([sys.executable, "-m", "venv", str(UPSTREAM_VENV)], "creating the venv")
        _check_run([str(py), "-m", "pip", "install", "-q", *UPSTREAM_PACKAGES],
                   "pip install of upstream 0.1.3")
    libs = list(UPSTREAM_VENV.glob("lib/python*/site-packages/polyplug/_native/linux-x64/"
                                   "libpolyplug.so"))
    if not libs:
        sys.exit("upstream libpolyplug.so not found in the venv")
    # reference-behaviour.md F1: upstream needs POLYPLUG_LIB to find its own .so
    return {"POLYPLUG_LIB": str(libs[0])}


def ensure_lupa() -> Path | None:
    """build/lupa-venv with lupa LUPA_VERSION (created on first use); its python, or None
    (with a note on stderr) when it cannot be installed, e.g. offline."""
    py = LUPA_VENV / "bin" / "python"
    probe = [str(py), "-c", "import lupa, lupa.luajit21; print(lupa.__version__)"]
    if py.is_file() and subprocess.run(probe, check=False, capture_output=True, text=True,
                                       cwd=BUILD).stdout.strip() == LUPA_VERSION:
        return py
    print(f"installing lupa {LUPA_VERSION} into {LUPA_VENV} ...", file=sys.stderr)
    for cmd in ([sys.executable, "-m", "venv", str(LUPA_VENV)],
                [str(py), "-m", "pip", "install", "-q", f"lupa=={LUPA_VERSION}"]):
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=BUILD)
        if proc.returncode != 0:
            print(f"lupa is not available, its rows print n/a: $ {shlex.join(cmd)}\n"
                  f"{proc.stdout}{proc.stderr}", file=sys.stderr)
            return None
    return py


def _check_run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=BUILD)
    if proc.returncode != 0:
        sys.exit(f"{what} failed:\n$ {shlex.join(cmd)}\n{proc.stdout}{proc.stderr}")


# ── running ──────────────────────────────────────────────────────────────────


@dataclass
class Results:
    """values[system][key] = one value per repeat; bad[system][key] = wrong results."""

    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    bad: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, system: str, key: str, value: float, bad: int) -> None:
        self.values.setdefault(system, {}).setdefault(key, []).append(value)
        b = self.bad.setdefault(system, {})
        b[key] = b.get(key, 0) + bad

    def series(self, system: str, key: str) -> list[float]:
        return self.values.get(system, {}).get(key, [])


@dataclass
class Job:
    system: str  # "ours" or "upstream"
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def jobs_for_repeat(r: int, p: Params, tools: Tools, upstream_env: dict[str, str] | None,
                    lupa_python: Path | None = None) -> list[Job]:
    bundle, gen = str(BUNDLE), str(GENERATED)
    py = sys.executable
    sizes = ",".join(map(str, p.scale_sizes))
    preload = {"LD_PRELOAD": str(tools.alloc_count)}
    jobs = [
        Job("ours", "c-dispatch", [str(tools.bench_dispatch), bundle, "dispatch",
                                   str(p.c_calls), str(r)]),
        Job("ours", "c-allocs", [str(tools.bench_dispatch), bundle, "allocs",
                                 str(p.alloc_calls)], preload),
        Job("ours", "c-gc", [str(tools.bench_dispatch), bundle, "gc", str(p.gc_calls)]),
        Job("ours", "c-threads", [str(tools.bench_dispatch), bundle, "threads",
                                  str(p.thread_calls), str(r)]),
        Job("ours", "c-limits", [str(tools.bench_dispatch), bundle, "limits",
                                 str(p.thread_calls), str(r)]),
        Job("ours", "c-load", [str(tools.bench_load), bundle, "load", str(p.bundles)]),
        Job("ours", "c-load-path", [str(tools.bench_load), gen, "loadpath", str(p.bundles)]),
        Job("ours", "c-load-floor", [str(tools.bench_load), bundle, "floor", str(p.bundles)]),
        Job("ours", "c-load-floor-fns", [str(tools.bench_load), bundle, "floor-fns",
                                         str(p.bundles)]),
        Job("ours", "c-reload", [str(tools.bench_load), bundle, "reload", str(p.reloads)]),
        Job("ours", "py-calls", [py, str(PY / "bench_ours.py"), "calls", bundle,
                                 str(p.py_calls), str(r)]),
        Job("ours", "py-load-source", [py, str(PY / "bench_ours.py"), "load", gen,
                                       str(p.bundles), "source"]),
        Job("ours", "py-load-path", [py, str(PY / "bench_ours.py"), "load", gen,
                                     str(p.bundles), "path"]),
        Job("ours", "py-reload", [py, str(PY / "bench_ours.py"), "reload", bundle,
                                  str(p.reloads)]),
        Job("ours", "py-import", [py, str(PY / "bench_import.py"), str(p.imports)]),
        Job("ours", "c-native", [str(tools.bench_native), str(NATIVE_BUNDLE), str(p.c_calls),
                                 str(r)]),
        Job("ours", "py-native", [py, str(PY / "bench_native.py"), str(NATIVE_BUNDLE),
                                  str(p.py_calls), str(r)]),
        Job("ours", "c-hostfn", [str(tools.bench_hostfn), str(HOSTFN_BUNDLE),
                                 str(p.host_c_calls), str(r)]),
        Job("ours", "py-hostfn", [py, str(PY / "bench_ours.py"), "hostfn", str(HOSTFN_BUNDLE),
                                  str(p.host_py_calls), str(r)]),
        Job("ours", "c-scale", [str(tools.bench_scale), "lookup", sizes, str(p.scale_c_calls),
                                str(r)]),
        Job("ours", "c-grow", [str(tools.bench_load), bundle, "grow", str(p.bundles),
                               str(p.scale_bundles)]),
        Job("ours", "py-scale", [py, str(PY / "bench_ours.py"), "scale", sizes,
                                 str(p.scale_py_calls), str(r)]),
        Job("ours", "py-grow", [py, str(PY / "bench_ours.py"), "grow", gen, str(p.bundles),
                                str(p.scale_bundles)]),
        Job("ours", "c-strings", [str(tools.bench_strings), str(STRINGS), "calls",
                                  str(p.c_str_calls), str(r)]),
        # lupa's figures come from the same job, timed right after ours (bench_strings.py)
        Job("ours", "py-strings", [py, str(PY / "bench_strings.py"), str(STRINGS),
                                   str(p.str_calls), str(r),
                                   str(lupa_python) if lupa_python else ""]),
    ]
    if upstream_env is not None:
        assert tools.bench_loops_so is not None
        up = [str(_venv_python()), str(PY / "bench_upstream.py")]
        env = dict(upstream_env, BENCH_LOOPS_SO=str(tools.bench_loops_so))
        jobs += [
            Job("upstream", "up-dispatch", [*up, "dispatch", bundle, str(p.c_calls), str(r)],
                env),
            Job("upstream", "up-allocs", [*up, "allocs", bundle, str(p.alloc_calls)],
                dict(env, **preload)),
            Job("upstream", "up-gc", [*up, "gc", bundle, str(p.gc_calls)], env),
            Job("upstream", "up-threads", [*up, "threads", str(GENERATED / "bench_0000"),
                                           str(GENERATED / "bench_0001"),
                                           str(p.thread_calls), str(r)], env),
            Job("upstream", "up-calls", [*up, "calls", bundle, str(p.py_calls), str(r)], env),
            Job("upstream", "up-load", [*up, "load", gen, str(p.bundles)], env),
            Job("upstream", "up-reload", [*up, "reload", bundle, str(p.reloads)], env),
            Job("upstream", "up-import", [up[0], str(PY / "bench_import.py"), str(p.imports)],
                env),
        ]
    k = r % len(jobs)
    return jobs[k:] + jobs[:k]


def run_job(job: Job, results: Results) -> None:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(job.env)
    proc = subprocess.run(job.argv, check=False, capture_output=True, text=True, env=env,
                          cwd=BUILD)
    got = 0
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            results.add(job.system, rec["key"], float(rec["value"]), int(rec.get("bad", 0)))
            got += 1
    if proc.returncode != 0 or not got:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        results.errors.append(f"{job.system}/{job.name} exited {proc.returncode}: "
                              + " | ".join(tail))


# ── the table ────────────────────────────────────────────────────────────────

Getter = Callable[[dict[str, float]], Optional[float]]


@dataclass
class Row:
    figure: str
    unit: str
    get: Getter                      # one repeat's values -> this row's value
    target: str = "—"
    check: Callable[[float, Ctx], bool | None] | None = None  # None: no verdict
    upstream: bool = True            # measure/compare the same getter for upstream
    up_get: Getter | None = None  # upstream's value, when it is another key
    ratio: bool = True               # print our/upstream (lower-is-better figures only)


@dataclass
class Ctx:
    ours: dict[str, list[float]]     # values by key (for targets relative to our figures)
    p: Params
    upstream: dict[str, list[float]] = field(default_factory=dict)  # likewise, upstream's


def key(k: str) -> Getter:
    return lambda d: d.get(k)


def diff(a: str, b: str) -> Getter:
    return lambda d: d[a] - d[b] if a in d and b in d else None


def quotient(a: str, b: str) -> Getter:
    return lambda d: d[a] / d[b] if a in d and b in d and d[b] else None


def maximum(*keys: str) -> Getter:
    return lambda d: max(d[k] for k in keys) if all(k in d for k in keys) else None


def le(limit: float) -> Callable[[float, Ctx], bool]:
    return lambda m, ctx: m <= limit


def vs_ours(k: str, factor: float) -> Callable[[float, Ctx], bool]:
    """≤ factor × our own median of another key (the same figure at another size)."""
    def check(m: float, ctx: Ctx) -> bool:
        base = ctx.ours.get(k) or []
        return bool(base) and m <= factor * statistics.median(base)
    return check


def vs_upstream(k: str, factor: float) -> Callable[[float, Ctx], bool | None]:
    """≤ factor × upstream's median of the same key; None (no verdict) without upstream."""
    def check(m: float, ctx: Ctx) -> bool | None:
        up = ctx.upstream.get(k) or []
        return m <= factor * statistics.median(up) if up else None
    return check


# The string rows (bundles/strings, benchcommon.STRING_CASES): key, what is called.
STRING_ROWS = [
    ("add", "add(7, 35) → int"),
    ("slen", "str → u32, slen('hello, world')"),
    ("const", "() → str, const() of 12 B"),
    ("upper12", "str → str, upper('hello, world')"),
    ("upper4k", "str → str, upper(s) of 4 KiB"),
    ("echo64k", "bytes → bytes, echo(b) of 64 KiB"),
]


def string_rows(p: Params) -> list[str | Row]:
    """Pythonic calls next to lupa's call of the same Lua body, then the same string
    functions called from C (the guest SDK without Python) and their Lua C API floor."""
    out: list[str | Row] = [
        f"Python calls next to lupa {LUPA_VERSION} (lupa.luajit21), same Lua bodies "
        f"(bundles/strings/bodies.lua), {p.str_calls:,} calls (4 KiB: ÷20, 64 KiB: ÷200)"]
    for k, what in STRING_ROWS:
        out += [
            Row(f"{what}: ours, Pythonic layer", "ns", key(f"py.str.{k}"), upstream=False),
            Row(f"{what}: lupa", "ns", key(f"lupa.{k}"), upstream=False),
            Row(f"{what}: ours / lupa", "×", quotient(f"py.str.{k}", f"lupa.{k}"), "≤ 1.0",
                le(1.0), upstream=False),
        ]
    out.append(f"C → vm.call of the string functions, 4 KiB arena reset per call "
               f"({p.c_str_calls:,} calls; 4 KiB: ÷20, 64 KiB: ÷200)")
    for k, what in STRING_ROWS[1:]:
        target = ("≤ 80", le(80)) if k == "upper12" else ("—", None)
        out.append(Row(what, "ns", key(f"c.str.{k}"), *target, upstream=False))
    for k, what in STRING_ROWS[1:]:
        out.append(Row(f"floor, Lua C API: {what}", "ns", key(f"floor.str.{k}"),
                       upstream=False))
    return out


VM_VARIANTS = [f"c.{f}.{i}{a}" for f in ("add", "noop") for i in ("null", "inst")
               for a in ("", ".arena")]


def rows(p: Params) -> list[str | Row]:
    """The table: Rows, and strings for section headings."""
    def two_x1_check(m: float, ctx: Ctx) -> bool:
        one = ctx.ours.get("threads.1") or []
        return bool(one) and m <= 1.2 * statistics.median(one)

    small, mid, big = p.scale_sizes
    many, few = p.scale_bundles, p.bundles

    def lookups(what: str, prefix: str, judged: bool) -> list[str | Row]:
        """first/last registered at each size; the largest size against the smallest."""
        out: list[str | Row] = []
        for size in p.scale_sizes:
            for which in ("first", "last"):
                k = f"{prefix}.{which}.{size}"
                row = Row(f"{what}, {which} registered, {size:,} bundles", "ns", key(k),
                          upstream=False)
                if judged and size == big:
                    row.target = f"≤ 1.2× {small} bundles"
                    row.check = vs_ours(f"{prefix}.{which}.{small}", 1.2)
                out.append(row)
        return out

    return [
        f"C → vm.call, per call ({p.c_calls:,} calls per variant)",
        Row("add(u32,u32), null instance", "ns", key("c.add.null"), "≤ 40", le(40)),
        Row("add, real instance", "ns", key("c.add.inst"), "≤ 40", le(40)),
        Row("add, null instance + arena (reset per call)", "ns", key("c.add.null.arena"),
            "≤ 40", le(40)),
        Row("add, real instance + arena", "ns", key("c.add.inst.arena"), "≤ 40", le(40)),
        Row("no-op, null instance", "ns", key("c.noop.null"), "≤ 35", le(35)),
        Row("no-op, real instance", "ns", key("c.noop.inst"), "≤ 35", le(35)),
        Row("no-op, null instance + arena", "ns", key("c.noop.null.arena"), "≤ 35", le(35)),
        Row("no-op, real instance + arena", "ns", key("c.noop.inst.arena"), "≤ 35", le(35)),
        Row("unknown fn_id (FunctionNotAvailable)", "ns", key("c.unknown_fn")),
        Row("floor: bare lua_pcall add, plain LuaJIT state", "ns", key("floor.add"),
            upstream=False),
        Row("floor: bare lua_pcall no-op", "ns", key("floor.noop"), upstream=False),
        Row("floor + an uncontended lock pair, add (diagnostic)", "ns",
            key("floor.add.locked"), upstream=False),
        Row("floor + an uncontended lock pair, no-op (diagnostic)", "ns",
            key("floor.noop.locked"), upstream=False),
        Row("vm.call add − floor add", "ns", diff("c.add.null", "floor.add"), upstream=False),
        Row("vm.call no-op − floor no-op", "ns", diff("c.noop.null", "floor.noop"),
            upstream=False),
        Row("C indirect call of a C add (same loop)", "ns", key("c.plain_fn"), ratio=False),
        f"A call under a 60 s call_timeout (no deadline passes) vs the same call unlimited",
        Row("add, unlimited loader", "ns", key("limits.add.unlimited"), upstream=False),
        Row("add, call_timeout = 60 s", "ns", key("limits.add.limited"), upstream=False),
        Row("add: limited / unlimited", "×", quotient("limits.add.limited",
                                                      "limits.add.unlimited"),
            "≤ 1.1", le(1.1), upstream=False),
        Row("spin (compiled loop, 10⁶ iterations), unlimited", "ms",
            key("limits.spin.unlimited"), upstream=False),
        Row("spin, call_timeout = 60 s", "ms", key("limits.spin.limited"), upstream=False),
        Row("spin: limited / unlimited", "×", quotient("limits.spin.limited",
                                                       "limits.spin.unlimited"),
            "≤ 1.1", le(1.1), upstream=False),
        f"Allocations per call ({p.alloc_calls:,} calls, malloc interposer)",
        Row("heap allocations, add (null instance)", "/call", key("c.add.null.allocs"),
            "0", le(0)),
        Row("heap allocations, no-op (null instance)", "/call", key("c.noop.null.allocs"),
            "0", le(0)),
        Row("heap allocations, worst of the 8 vm.call variants", "/call",
            maximum(*[v + ".allocs" for v in VM_VARIANTS]), "0", le(0)),
        Row("heap allocations, floor add", "/call", key("floor.add.allocs"), upstream=False),
        Row("Lua heap bytes, add (GC stopped)", "B/call", key("c.add.null.gc_bytes")),
        Row("Lua heap bytes, no-op", "B/call", key("c.noop.null.gc_bytes")),
        Row("Lua heap bytes, floor add", "B/call", key("floor.add.gc_bytes"), upstream=False),
        f"Python → vm.call, per call ({p.py_calls:,} calls per variant)",
        Row("add, lib.pp_call (cffi API mode) [upstream: its best, cffi ABI]", "ns",
            key("py.add.pp_call"), "≤ 200", le(200), up_get=key("py.add.fnptr")),
        Row("add, iface.dispatch.vm.call through cffi (libffi)", "ns", key("py.add.fnptr")),
        Row("add, vm.call through ctypes CFUNCTYPE", "ns", key("py.add.ctypes")),
        Row("no-op, lib.pp_call [upstream: cffi ABI]", "ns", key("py.noop.pp_call"),
            up_get=key("py.noop.fnptr")),
        Row("no-op, vm.call through cffi (libffi)", "ns", key("py.noop.fnptr")),
        Row("no-op, vm.call through ctypes", "ns", key("py.noop.ctypes")),
        Row("floor: trivial C add, same signature (cffi API mode)", "ns", key("py.floor"),
            upstream=False),
        Row("add through the Pythonic call layer: rt.contract('bench', 1).add(7, 35)", "ns",
            key("py.add.pythonic"), "≤ 400", le(400), upstream=False),
        Row("no-op through the Pythonic call layer", "ns", key("py.noop.pythonic"),
            upstream=False),
        Row("Pythonic add / lib.pp_call add (same process)", "×",
            quotient("py.add.pythonic", "py.add.pp_call"), "≤ 1.3", le(1.3), upstream=False),
        *string_rows(p),
        f"C → native bundle (loader = \"native\"), add(u32,u32), per call ({p.c_calls:,} "
        "calls per variant)",
        Row("floor: indirect call of a C add with the native slot's signature", "ns",
            key("native.plain"), upstream=False),
        Row("the library's add through a function pointer the caller cached", "ns",
            key("native.cached"), upstream=False),
        Row("through the registry's dispatch: iface->dispatch.native.functions[0](...)", "ns",
            key("native.dispatch"), upstream=False),
        Row("registry's dispatch − floor", "ns", diff("native.dispatch", "native.plain"),
            "≤ 3", le(3), upstream=False),
        Row("no-op through the registry's dispatch", "ns", key("native.noop.dispatch"),
            upstream=False),
        Row("add, pp_call(iface, ...)", "ns", key("native.pp_call"), upstream=False),
        Row("add, pp_call_handle (the handle checked, the thread marked inside)", "ns",
            key("native.handle"), upstream=False),
        f"Python → native bundle, per call ({p.py_calls:,} calls per variant)",
        Row("add through the call layer: rt.contract('bench.native', 1).add(7, 35)", "ns",
            key("py.native.pythonic"), upstream=False),
        Row("the call layer, native add / Lua add (same run)", "×",
            quotient("py.native.pythonic", "py.add.pythonic"), upstream=False),
        Row("no-op through the call layer", "ns", key("py.native.noop.pythonic"),
            upstream=False),
        Row("add, lib.pp_call (cffi API mode)", "ns", key("py.native.pp_call"), upstream=False),
        Row("add, the library's function through cffi (libffi)", "ns", key("py.native.fnptr"),
            upstream=False),
        f"Load and reload ({p.bundles} bundles into a fresh runtime; {p.reloads} reloads)",
        Row("load one bundle, Python load_bundle(path)", "ms", key("py.load.path.ms"),
            "≤ 0.6× upstream", vs_upstream("py.load.path.ms", 0.6)),
        Row("load one bundle, Python load_bundle_from_source", "ms", key("py.load.source.ms"),
            "≤ 0.15", le(0.15), upstream=False),
        Row("load one bundle, C pp_runtime_load_path (reads manifest.toml)", "ms",
            key("c.load.path.ms"), "≤ 0.08", le(0.08), upstream=False),
        Row("load one bundle, C pp_runtime_load (manifest built in C)", "ms", key("c.load.ms"),
            "≤ 0.15", le(0.15), upstream=False),
        Row("floor: luaL_newstate + luaL_openlibs", "ms", key("floor.load.ms"), upstream=False),
        Row("floor: the same + run bench_fns.lua (requires ffi)", "ms", key("floor.load_fns.ms"),
            upstream=False),
        Row("RSS per bundle, Python load_bundle(path)", "KiB", key("py.load.path.rss_kib"),
            "≤ 64", le(64)),
        Row("RSS per bundle, Python load_bundle_from_source", "KiB",
            key("py.load.source.rss_kib"), "≤ 64", le(64), upstream=False),
        Row("RSS per bundle, C pp_runtime_load", "KiB", key("c.load.rss_kib"), "≤ 64", le(64),
            upstream=False),
        Row("floor: RSS per luaL_newstate + luaL_openlibs", "KiB", key("floor.load.rss_kib"),
            upstream=False),
        Row("floor: RSS, the same + run bench_fns.lua (requires ffi)", "KiB",
            key("floor.load_fns.rss_kib"), upstream=False),
        Row("reload one bundle, Python reload_bundle", "ms", key("py.reload.ms"),
            "≤ 0.6× upstream", vs_upstream("py.reload.ms", 0.6)),
        Row("reload one bundle, C pp_runtime_reload", "ms", key("c.reload.ms"), "≤ 0.2",
            le(0.2), upstream=False),
        Row(f"RSS growth over {p.reloads} reloads, Python", "KiB",
            key("py.reload.rss_growth_kib"), f"flat (< {p.reloads} KiB)", le(p.reloads)),
        Row(f"RSS growth over {p.reloads} reloads, C", "KiB", key("c.reload.rss_growth_kib"),
            f"flat (< {p.reloads} KiB)", le(p.reloads), upstream=False),
        f"Host functions: a guest calls its host ({p.host_c_calls:,} C / {p.host_py_calls:,} "
        "Python calls, from a compiled Lua loop)",
        Row("guest → C host function, SDK method h:add(s, 1)", "ns", key("hostfn.c.sdk"),
            "≤ 15", le(15), upstream=False),
        Row("floor: the same native slot, one hand-written FFI call", "ns", key("hostfn.c.ffi"),
            upstream=False),
        Row("guest → C host function provided with pp_runtime_provide_host_contract", "ns",
            key("hostfn.c.managed"), upstream=False),
        Row("guest → Python host function (HostContract), SDK method", "ns",
            key("hostfn.py.sdk"), "≤ 1500", le(1500), upstream=False),
        Row("floor: C → a trivial cffi extern \"Python\" callback", "ns",
            key("hostfn.py.floor"), upstream=False),
        Row(f"unload one bundle, C pp_runtime_unload ({few} loaded)", "ms", key("c.unload.ms"),
            upstream=False),
        f"Loading the last {few} of {many:,} bundles into one runtime, in turns with the "
        f"first {few} into another (median load)",
        Row(f"load one bundle, Python load_bundle(path), bundles {many - few:,}–{many:,}",
            "ms", key("py.grow.large.ms"), f"≤ 1.1× bundles 0–{few}",
            vs_ours("py.grow.small.ms", 1.1), upstream=False),
        Row(f"load one bundle, Python load_bundle(path), bundles 0–{few} (in turns)", "ms",
            key("py.grow.small.ms"), upstream=False),
        Row(f"load one bundle, C pp_runtime_load, bundles {many - few:,}–{many:,}", "ms",
            key("c.grow.large.ms"), f"≤ 1.1× bundles 0–{few}", vs_ours("c.grow.small.ms", 1.1),
            upstream=False),
        Row(f"load one bundle, C pp_runtime_load, bundles 0–{few} (in turns)", "ms",
            key("c.grow.small.ms"), upstream=False),
        Row(f"RSS per bundle, Python load_bundle(path), {many - few:,} bundles", "KiB",
            key("py.grow.rss_kib"), f"≤ 1.1× {few} bundles", vs_ours("py.load.path.rss_kib", 1.1),
            upstream=False),
        Row(f"RSS per bundle, C pp_runtime_load, {many - few:,} bundles", "KiB",
            key("c.grow.rss_kib"), f"≤ 1.1× {few} bundles", vs_ours("c.load.rss_kib", 1.1),
            upstream=False),
        Row(f"unload one bundle, C pp_runtime_unload, {many:,} loaded", "ms",
            key("c.grow.unload.ms"), upstream=False),
        f"Lookups as bundles are added ({small:,} / {mid:,} / {big:,} bundles, a contract "
        f"each; {p.scale_c_calls:,} C and {p.scale_py_calls:,} Python lookups per figure)",
        *lookups("C HostApi.find_guest_contract", "c.find", judged=True),
        *lookups("Python rt.contract(name, 1)", "py.contract", judged=True),
        *lookups("Python rt.registry().find(id, 1)", "py.find", judged=False),
        f"Import (fastest of {p.imports} fresh interpreters, bytecode cached)",
        Row("import polyplug", "ms", key("py.import.ms"), "≤ 20", le(20)),
        Row("floor: import typing, enum, dataclasses, struct, weakref", "ms",
            key("py.import.floor.ms"), upstream=False),
        f"Threads, C, add with null instance ({p.thread_calls:,} calls per thread)",
        Row("1 thread (per call)", "ns", key("threads.1")),
        Row("2 threads × 2 bundles (aggregate per call)", "ns", key("threads.2x2"), "≤ 25",
            le(25)),
        Row("2 threads × same bundle (aggregate per call)", "ns", key("threads.2x1"),
            "≤ 1.2× 1 thread", two_x1_check),
        Row("2×2 speed-up over 1 thread (higher is better)", "×",
            quotient("threads.1", "threads.2x2"), ratio=False),
        Row("2×1 time relative to 1 thread", "×", quotient("threads.2x1", "threads.1")),
    ]


def per_repeat(results: Results, system: str, repeat: int) -> dict[str, float]:
    return {k: v[repeat] for k, v in results.values.get(system, {}).items() if len(v) > repeat}


def row_series(results: Results, system: str, row: Row, repeats: int) -> list[float]:
    get = row.up_get if system == "upstream" and row.up_get is not None else row.get
    out = []
    for r in range(repeats):
        v = get(per_repeat(results, system, r))
        if v is not None:
            out.append(v)
    return out


def fmt(v: float | None) -> str:
    if v is None:
        return ""
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 0.001:
        return f"{v:.3f}"
    return f"{v:.1e}"


def render(results: Results, p: Params, with_upstream: bool) -> str:
    repeats = p.repeat
    ctx = Ctx(ours=dict(results.values.get("ours", {})), p=p,
              upstream=dict(results.values.get("upstream", {})))
    head = ["figure", "unit", "min", "median", "target"]
    if with_upstream:
        head += ["upstream", "ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for item in rows(p):
        if isinstance(item, str):
            cells = [f"**{item}**"] + [""] * (len(head) - 1)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        row = item
        ours = row_series(results, "ours", row, repeats)
        if ours:
            mn, med = min(ours), statistics.median(ours)
            target = row.target
            verdict = row.check(med, ctx) if row.check is not None and not p.smoke else None
            if verdict is not None:  # a smoke run judges nothing
                target += " ✓" if verdict else " ✗"
            cells = [row.figure, row.unit, fmt(mn), fmt(med), target]
        else:
            na = "n/a (issue 6)" if "Pythonic" in row.figure else "n/a"
            cells = [row.figure, row.unit, na, na, row.target]
        if with_upstream:
            up = row_series(results, "upstream", row, repeats) if row.upstream else []
            if up:
                umed = statistics.median(up)
                ratio = (f"{statistics.median(ours) / umed:.2f}×"
                         if row.ratio and ours and umed else "")
                cells += [fmt(umed), ratio]
            else:
                cells += ["—", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds all processes spent busy, CPU seconds this run and its children
    spent), both since boot / start; their deltas give the load others caused."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        busy = float("nan")
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy, me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def machine() -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cc = subprocess.run([*shlex.split(os.environ.get("CC") or "cc"), "--version"],
                        check=False, capture_output=True, text=True).stdout.splitlines()
    return (f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
            f"Python {platform.python_version()}, {cc[0] if cc else 'cc'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts, a smoke run")
    ap.add_argument("--upstream", action="store_true",
                    help="also measure upstream polyplug 0.1.3 side by side")
    ap.add_argument("--no-lupa", action="store_true",
                    help="skip the rows measuring lupa (installed into build/lupa-venv)")
    ap.add_argument("--repeat", type=int, help="repeats per figure")
    ap.add_argument("--save", type=Path, help="also write the result as Markdown here")
    opts = ap.parse_args(argv)
    p = QUICK if opts.quick else FULL
    if opts.repeat:
        p = Params(**{**p.__dict__, "repeat": max(1, opts.repeat)})

    BUILD.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    cpu_start = cpu_seconds()
    tools = build(opts.upstream)
    generate_bundles(max(p.bundles, p.scale_bundles))
    upstream_env = ensure_upstream() if opts.upstream else None
    lupa_python = None if opts.no_lupa else ensure_lupa()

    results = Results()
    tty = sys.stderr.isatty()
    for r in range(p.repeat):
        for job in jobs_for_repeat(r, p, tools, upstream_env, lupa_python):
            if tty:
                print(f"\rrepeat {r + 1}/{p.repeat}: {job.system} {job.name}".ljust(60),
                      end="", file=sys.stderr, flush=True)
            run_job(job, results)
    if tty:
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr)

    table = render(results, p, opts.upstream)
    command = "python benchmarks/run.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    elapsed = time.monotonic() - t_start
    notes = []
    for system, bad in results.bad.items():
        for k, n in sorted(bad.items()):
            if n:
                notes.append(f"WRONG RESULTS: {system} {k}: {n} bad calls")
    notes += [f"ERROR: {e}" for e in results.errors]
    cpu_end = cpu_seconds()
    others = ((cpu_end[0] - cpu_start[0]) - (cpu_end[1] - cpu_start[1])) / (
        elapsed * (os.cpu_count() or 1))
    loads = f"other processes used {max(others, 0.0):.0%} of the CPU during the run"
    if others > 0.20:
        notes.append("NOTE: other processes kept the machine busy during the run; medians "
                     "(threads above all) are inflated: compare the min column, or run "
                     "again on a quiet machine")
    smoke = ("SMOKE RUN (--quick): counts too small to judge the targets, so no ✓/✗; run "
             "without --quick for figures\n" if p.smoke else "")
    header = (f"{command}  —  {p.repeat} repeats, {elapsed:.0f} s\n"
              f"{smoke}machine: {machine()}\n{loads}\n")
    print(header)
    print(table)
    for note in notes:
        print(note)
    if opts.save:
        opts.save.write_text(f"`{command}` — {p.repeat} repeats, {elapsed:.0f} s\n\n{smoke}"
                             f"Machine: {machine()}; {loads}.\n\n{table}\n"
                             + "".join(f"\n{note}" for note in notes) + "\n")
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
