"""Python-side figures for this project's polyplug (run by benchmarks/run.py).

    python bench_ours.py calls DIR N ROT          Python → vm.call variants
    python bench_ours.py load ROOT COUNT VARIANT  COUNT bundles ROOT/bench_NNNN into a
                                                  fresh runtime; VARIANT = source | path
    python bench_ours.py grow ROOT FEW MANY       load_bundle(path): MANY - FEW bundles
                                                  into a runtime, then FEW more into it
                                                  and FEW into a fresh one, in turns (the
                                                  median load of each)
    python bench_ours.py reload DIR COUNT         COUNT reloads of the bundle in DIR
    python bench_ours.py hostfn DIR N ROT         guest → Python host function: the loop
                                                  of benchmarks/bundles/hostfn, and the
                                                  floor (C → a cffi callback)
    python bench_ours.py scale SIZES N ROT        rt.contract(name, 1) and
                                                  rt.registry().find(id, 1) of the first
                                                  and the last contract registered, with
                                                  SIZES (e.g. 10,1000,10000) bundles loaded
                                                  (a runtime per size, timed in turns)

Each result is a JSON line (see benchcommon.emit).  load and reload must run in a
fresh process: their RSS deltas assume a heap that nothing else has used yet.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from benchcommon import args, die, emit, per_call_ns, rotated, rss_kib

from polyplug import (
    BundleSource,
    LuaLoader,
    ManifestData,
    Runtime,
    RuntimeConfig,
    bundle_id,
    ffi,
    guest_contract_id,
    lib,
    read_manifest,
)
from polyplug.signature import signature

CONTRACT = "bench"
FN_ADD, FN_NOOP = 0, 1


def _runtime(hot_reload: bool = False) -> Runtime:
    return Runtime(RuntimeConfig(hot_reload_enabled=hot_reload), [LuaLoader()])


def _iface(rt: Runtime) -> Any:
    return rt.resolve_guest_contract(rt.find_guest_contract(guest_contract_id(CONTRACT, 1), 1))


# ── the Pythonic call layer (issue 6) ───────────────────────────────────────


def pythonic_loop(rt: Runtime, fn: str) -> Callable[[int], None] | None:
    """A loop ``f(n)`` making n calls through the Pythonic call layer (issue 6):
    ``rt.contract("bench", 1)``, typed by the bench manifest's
    ``[contracts."bench@1".functions]`` table.  None when the layer is missing (the
    row then prints "n/a (issue 6)")."""
    if not hasattr(rt, "contract"):
        return None
    contract = rt.contract(CONTRACT, 1)
    if fn == "add":
        add = contract.add
        if add(7, 35) != 42:
            die("Pythonic layer: add(7, 35) != 42")

        def loop(k: int) -> None:
            for _ in range(k):
                add(7, 35)
    else:
        noop = contract.noop

        def loop(k: int) -> None:
            for _ in range(k):
                noop()
    return loop


# ── modes ────────────────────────────────────────────────────────────────────


def mode_calls(bundle_dir: str, n: int, rot: int) -> None:
    rt = _runtime()
    rt.load_bundle(bundle_dir)
    iface = _iface(rt)
    a = ffi.new("uint32_t[2]", [7, 35])
    out = ffi.new("uint32_t *")
    err = ffi.new("AbiError *")
    null = ffi.NULL
    pp_call = lib.pp_call
    vm = iface.dispatch.vm
    call, ld = vm.call, vm.loader_data
    inst = ffi.new("GuestContractInstance *")[0]  # the null instance, by value

    def api_mode(fn: int) -> Callable[[int], None]:
        def loop(k: int) -> None:
            for _ in range(k):
                pp_call(iface, null, 0, fn, a, out, null, err)
        return loop

    def fn_pointer(fn: int) -> Callable[[int], None]:
        def loop(k: int) -> None:
            for _ in range(k):
                call(ld, inst, fn, a, out, null, err)
        return loop

    # the pointer called through ctypes, the way upstream's users call vm.call
    import ctypes

    class CLoaderData(ctypes.Structure):
        _fields_ = [("data", ctypes.c_void_p)]

    class CInstance(ctypes.Structure):
        _fields_ = [("data", ctypes.c_void_p), ("contract_id", ctypes.c_uint64)]

    vp = ctypes.c_void_p
    ccall = ctypes.CFUNCTYPE(None, CLoaderData, CInstance, ctypes.c_uint32, vp, vp, vp, vp)(
        int(ffi.cast("uintptr_t", call)))
    cld = CLoaderData(int(ffi.cast("uintptr_t", ld.data)))
    cinst = CInstance()
    pa, po, pe = (int(ffi.cast("uintptr_t", p)) for p in (a, out, err))

    def via_ctypes(fn: int) -> Callable[[int], None]:
        def loop(k: int) -> None:
            for _ in range(k):
                ccall(cld, cinst, fn, pa, po, None, pe)
        return loop

    import pyfloor

    floor_lib = pyfloor.load().lib

    def floor(k: int) -> None:
        f = floor_lib.floor_add
        for _ in range(k):
            f(iface, null, 0, 0, a, out, null, err)

    variants: list[tuple[str, Callable[[int], None] | None, int]] = [
        ("py.add.pp_call", api_mode(FN_ADD), FN_ADD),
        ("py.add.fnptr", fn_pointer(FN_ADD), FN_ADD),
        ("py.add.ctypes", via_ctypes(FN_ADD), FN_ADD),
        ("py.noop.pp_call", api_mode(FN_NOOP), FN_NOOP),
        ("py.noop.fnptr", fn_pointer(FN_NOOP), FN_NOOP),
        ("py.noop.ctypes", via_ctypes(FN_NOOP), FN_NOOP),
        ("py.floor", floor, FN_ADD),
        ("py.add.pythonic", pythonic_loop(rt, "add"), FN_ADD),
        ("py.noop.pythonic", pythonic_loop(rt, "noop"), FN_NOOP),
    ]
    for _key, loop, _fn in variants:  # warm-up
        if loop is not None:
            loop(max(1000, n // 20))
    for key, loop, fn in rotated(variants, rot):
        if loop is None:
            continue  # run.py prints the row as n/a
        out[0] = 0
        err.code = 99
        ns = per_call_ns(loop, n)
        if key.endswith(".pythonic"):
            bad = 0  # checked by the layer: a failed call raises
        else:
            bad = int(err.code != 0 or (fn == FN_ADD and out[0] != 42))
        emit(key, ns, bad)
    rt.close()


def _bundle_dirs(root: str, count: int) -> list[Path]:
    dirs = [Path(root) / f"bench_{i:04d}" for i in range(count)]
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        die(f"missing generated bundle {missing[0]} (benchmarks/run.py creates them)")
    return dirs


def _check(rt: Runtime) -> int:
    iface = _iface(rt)
    a = ffi.new("uint32_t[2]", [7, 35])
    out = ffi.new("uint32_t *")
    err = ffi.new("AbiError *")
    lib.pp_call(iface, ffi.NULL, 0, FN_ADD, a, out, ffi.NULL, err)
    return int(err.code != 0 or out[0] != 42)


def mode_load(root: str, count: int, variant: str) -> None:
    dirs = _bundle_dirs(root, count)
    rt = _runtime()
    if variant == "source":
        manifests = [read_manifest(d) for d in dirs]
        sources = [BundleSource.Path(m.path) for m in manifests]
        rss0 = rss_kib()
        t0 = time.perf_counter_ns()
        for m, s in zip(manifests, sources):
            rt.load_bundle_from_source(m, s)
        t1 = time.perf_counter_ns()
    elif variant == "path":
        paths = [str(d) for d in dirs]
        rss0 = rss_kib()
        t0 = time.perf_counter_ns()
        for p in paths:
            rt.load_bundle(p)
        t1 = time.perf_counter_ns()
    else:
        die(f"unknown load variant {variant}")
    rss1 = rss_kib()
    bad = _check(rt)
    emit(f"py.load.{variant}.ms", (t1 - t0) / 1e6 / count, bad)
    emit(f"py.load.{variant}.rss_kib", (rss1 - rss0) / count, bad)
    rt.close()


def mode_grow(root: str, few: int, many: int) -> None:
    """load_bundle(path) into a runtime that holds MANY - FEW bundles already and into a
    fresh one, FEW loads each, in turns (whatever else the machine does falls on both
    alike): the median ms of each's loads; RSS KiB per bundle while the large runtime
    filled up."""
    paths = [str(d) for d in _bundle_dirs(root, many)]
    small, large = _runtime(), _runtime()
    rss0 = rss_kib()
    for p in paths[:many - few]:
        large.load_bundle(p)
    rss1 = rss_kib()
    t_small, t_large = [], []
    for r in range(few):
        t0 = time.perf_counter_ns()
        small.load_bundle(paths[r])
        t1 = time.perf_counter_ns()
        large.load_bundle(paths[many - few + r])
        t_small.append(t1 - t0)
        t_large.append(time.perf_counter_ns() - t1)
    bad = _check(small) + _check(large)
    emit("py.grow.small.ms", statistics.median(t_small) / 1e6, bad)
    emit("py.grow.large.ms", statistics.median(t_large) / 1e6, bad)
    emit("py.grow.rss_kib", (rss1 - rss0) / (many - few), bad)
    small.close()
    large.close()


def mode_reload(bundle_dir: str, count: int) -> None:
    rt = _runtime(hot_reload=True)
    rt.load_bundle(bundle_dir)
    bad = _check(rt)
    rss0 = rss_kib()
    t0 = time.perf_counter_ns()
    for _ in range(count):
        rt.reload_bundle(bundle_dir)
    t1 = time.perf_counter_ns()
    rss1 = rss_kib()
    bad += _check(rt)
    emit("py.reload.ms", (t1 - t0) / 1e6 / count, bad)
    emit("py.reload.rss_growth_kib", float(rss1 - rss0), bad)
    rt.close()


def mode_hostfn(bundle_dir: str, n: int, rot: int) -> None:
    """ns per guest → Python host function call: loop_sdk(n) of the hostfn bundle calls
    add(u32, u32) of a host contract provided from Python n times (one Python → guest
    call, timed); the floor is C calling a trivial cffi extern "Python" callback."""
    import pyfloor

    from polyplug import HostContract, RuntimeBuilder

    host = HostContract("bench.host", 1)
    host.add("add", lambda a, b: a + b, ["u32", "u32"], "u32")
    rt = RuntimeBuilder().loader(LuaLoader()).host_contract(host).build()
    rt.load_bundle(bundle_dir)
    loop_sdk = rt.contract("bench.hostfn", 1).loop_sdk
    floor = pyfloor.load()

    @floor.ffi.def_extern(name="floor_py_add")
    def floor_py_add(a: int, b: int) -> int:
        return a + b

    sums: dict[str, int] = {}
    variants: list[tuple[str, Callable[[int], None]]] = [
        ("hostfn.py.sdk", lambda k: sums.__setitem__("hostfn.py.sdk", loop_sdk(k))),
        ("hostfn.py.floor", lambda k: sums.__setitem__("hostfn.py.floor",
                                                       floor.lib.floor_callback_loop(k))),
    ]
    for _key, loop in variants:  # warm-up
        loop(max(1000, n // 20))
    for key, loop in rotated(variants, rot):
        emit(key, per_call_ns(loop, n), int(sums.get(key) != n))
    rt.close()


# ── lookups as bundles are added (issue 19) ─────────────────────────────────

SCALE_LUA = """
function polyplug_init()
    return { ["scale.c%(i)05d"] = { contract_version = 1, plugin_name = "scale",
        factory = function() return {} end,
        functions = { [0] = function(_, _, out)
            local ffi = require("ffi")
            ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = %(i)d
        end } } }, { code = 0 }
end
"""


def _scale_bundle(rt: Runtime, i: int) -> None:
    """Bundle scale_<i>: contract scale.c<i>@1, its fn 0 `value` returns i (typed by the
    manifest's signature table, as rt.contract reads it)."""
    name, contract = f"scale_{i:05d}", f"scale.c{i:05d}@1"
    m = ManifestData(id=bundle_id(name), name=name, loader="lua", file="scale.lua", path=".",
                     version="1.0.0",
                     signatures={contract: {"value": signature("value", 0, [], "u32")}})
    rt.load_bundle_from_source(m, BundleSource.Code(SCALE_LUA % {"i": i}))


def mode_scale(sizes: list[int], n: int, rot: int, slices: int = 20) -> None:
    """A runtime per size; every figure is timed in `slices` rounds that each run a slice
    of every figure, so whatever else the machine does falls on all sizes alike; the
    fastest slice counts (other processes only ever add time)."""
    runtimes = []
    loops: list[tuple[str, Callable[[int], None], int]] = []
    for size in sizes:
        rt = _runtime()
        runtimes.append(rt)
        for i in range(size):
            _scale_bundle(rt, i)
        for which, i in (("first", 0), ("last", size - 1)):
            name = f"scale.c{i:05d}"
            cid = guest_contract_id(name, 1)
            bad = int(rt.contract(name, 1).value() != i)

            def by_name(k: int, contract: Any = rt.contract, name: str = name) -> None:
                for _ in range(k):
                    contract(name, 1)

            def by_id(k: int, registry: Any = rt.registry, cid: int = cid) -> None:
                for _ in range(k):
                    registry().find(cid, 1)

            loops.append((f"py.contract.{which}.{size}", by_name, bad))
            loops.append((f"py.find.{which}.{size}", by_id, bad))
    per = max(1, n // slices)
    for _key, loop, _bad in loops:
        loop(per)  # warm-up
    best: dict[str, float] = {}
    for s in range(slices):
        for key, loop, _bad in rotated(loops, rot + s):
            ns = per_call_ns(loop, per)
            best[key] = min(best.get(key, ns), ns)
    for key, _loop, bad in loops:
        emit(key, best[key], bad)
    for rt in runtimes:
        rt.close()


def main(argv: list[str]) -> None:
    if not argv:
        die(__doc__ or "usage")
    mode, rest = argv[0], argv[1:]
    if mode == "calls":
        d, n, rot = args(rest, "", "200000", "0")
        mode_calls(d, int(n), int(rot))
    elif mode == "load":
        root, count, variant = args(rest, "", "100", "source")
        mode_load(root, int(count), variant)
    elif mode == "hostfn":
        d, n, rot = args(rest, "", "200000", "0")
        mode_hostfn(d, int(n), int(rot))
    elif mode == "grow":
        root, few, many = args(rest, "", "100", "10000")
        mode_grow(root, int(few), int(many))
    elif mode == "reload":
        d, count = args(rest, "", "1000")
        mode_reload(d, int(count))
    elif mode == "scale":
        sizes, n, rot = args(rest, "10,1000,10000", "20000", "0")
        mode_scale([int(s) for s in sizes.split(",")], int(n), int(rot))
    else:
        die(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
