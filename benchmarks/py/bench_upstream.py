"""The same figures for upstream polyplug 0.1.3 (run by benchmarks/run.py --upstream).

Runs with the python of build/upstream-venv (polyplug==0.1.3,
polyplug-loaders-lua==0.1.3, cffi), with POLYPLUG_LIB pointing at the libpolyplug.so
inside that wheel.  The C figures call upstream's vm.call pointer from the same C
loops as ours (benchmarks/c/bench_loops.c built as a .so, given as BENCH_LOOPS_SO),
after loading the bundle through upstream's Python API, as reference-behaviour.md §5
row c did.

    python bench_upstream.py dispatch DIR N ROT
    python bench_upstream.py allocs DIR N          (with LD_PRELOAD=alloc_count.so)
    python bench_upstream.py gc DIR N
    python bench_upstream.py threads DIR DIR2 N ROT
    python bench_upstream.py calls DIR N ROT
    python bench_upstream.py load ROOT COUNT
    python bench_upstream.py reload DIR COUNT

Keys are the ones bench_dispatch / bench_ours print; run.py files them as upstream's.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from typing import Callable

from benchcommon import args, die, emit, per_call_ns, rotated, rss_kib

import polyplug

if "site-packages" not in (polyplug.__file__ or ""):
    die(f"imported the wrong polyplug ({polyplug.__file__}); run with the upstream venv")

from polyplug_abi import (
    AbiError,
    GuestContractHandle,
    GuestContractInstance,
    GuestContractInterface,
    HostApi,
    RuntimeConfig,
    guest_contract_id,
)
from polyplug_loaders_lua import register_lua_loader

# Upstream picks its cffi backend whenever cffi is importable (F8); cffi is in this
# venv only for the cffi-ABI call figure, so keep upstream on its faster ctypes
# backend, the one a plain `pip install` gets.
sys.modules["polyplug.runtime"]._cffi_available = False

FN_ADD, FN_NOOP, FN_GC_BYTES, FN_GC_CTL = 0, 1, 2, 3
CID = guest_contract_id("bench", 1)
IFACE_CALL_OFFSET, IFACE_LOADER_DATA_OFFSET = 40, 48  # GuestContractInterface.dispatch.vm

_loops: ctypes.CDLL | None = None


def loops() -> ctypes.CDLL:
    """benchmarks/c/bench_loops.c as a shared object (ctypes)."""
    global _loops
    if _loops is None:
        path = os.environ.get("BENCH_LOOPS_SO")
        if not path:
            die("BENCH_LOOPS_SO is not set")
        so = ctypes.CDLL(path)
        vp, u32, u64, dp = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_void_p
        so.bench_flat_loop.argtypes = [vp, vp, vp, u64, u32, u32, ctypes.c_int, vp, u64,
                                       ctypes.c_int, dp]
        so.bench_flat_loop.restype = None
        so.bench_flat_gc_bytes.argtypes = [vp, vp, u32, u64]
        so.bench_flat_gc_bytes.restype = ctypes.c_double
        so.bench_flat_threads.argtypes = [vp, vp, ctypes.c_int, u64, dp]
        so.bench_flat_threads.restype = None
        so.bench_flat_arena_new.argtypes = [vp, u64]
        so.bench_flat_arena_new.restype = vp
        so.bench_flat_plain_add.argtypes = []
        so.bench_flat_plain_add.restype = vp
        _loops = so
    return _loops


class Upstream:
    """An upstream runtime with the Lua loader and some bundles loaded."""

    def __init__(self, hot_reload: bool = False) -> None:
        self.rt = polyplug.Runtime(config=RuntimeConfig(hot_reload_enabled=hot_reload))
        register_lua_loader(self.rt)
        self.host = HostApi.from_address(self.rt.host)

    def load(self, path: str) -> None:
        self.rt.load_bundle(path)

    def ifaces(self) -> list[int]:
        """Addresses of every bench@1 interface, in load order.

        Uses HostApi.find_all_guest_contracts directly and copies the handles before
        freeing the array (upstream's Runtime.find_all_by_contract reads them after
        the free: friction F4)."""
        arr = self.host.find_all_guest_contracts(self.rt.host, CID, 1)
        handles = []
        for i in range(arr.len):
            base = arr.items + 8 * i
            handles.append((ctypes.c_uint32.from_address(base).value,
                            ctypes.c_uint32.from_address(base + 4).value))
        if arr.items:
            self.host.free(self.rt.host, arr.items, 8 * arr.len, arr.align)
        out = []
        for index, gen in handles:
            h = GuestContractHandle(index, gen)
            out.append(self.rt.resolve_guest_contract(h))
        return out

    def iface(self) -> int:
        return self.rt.resolve_guest_contract(self.rt.find_guest_contract(CID, 1))

    @staticmethod
    def vm(iface: int) -> tuple[int, int]:
        """(vm.call address, loader_data) of an interface."""
        call = ctypes.c_void_p.from_address(iface + IFACE_CALL_OFFSET).value
        data = ctypes.c_void_p.from_address(iface + IFACE_LOADER_DATA_OFFSET).value
        return call, data

    def instance(self, iface: int) -> tuple[int, int]:
        inst = GuestContractInstance()
        self.host.create_guest_instance(self.rt.host, iface, None, ctypes.addressof(inst))
        if not inst.data:
            die("upstream create_guest_instance returned no instance")
        return inst.data, inst.contract_id


def _loop(call: int, data: int, inst: tuple[int, int], fn: int, expect: int, check: int,
          arena: int | None, n: int, count_allocs: bool) -> tuple[float, float, int]:
    out = (ctypes.c_double * 3)()
    loops().bench_flat_loop(call, data, inst[0], inst[1], fn, expect, check, arena, n,
                            int(count_allocs), out)
    return out[0], out[1], int(out[2])


def _dispatch_variants(up: Upstream) -> list[tuple[str, tuple]]:
    iface = up.iface()
    call, data = up.vm(iface)
    null = (None, 0)
    inst = up.instance(iface)
    arena = loops().bench_flat_arena_new(up.rt.host, 4096)
    v = []
    for fname, fn, check in (("add", FN_ADD, 1), ("noop", FN_NOOP, 0)):
        v.append((f"c.{fname}.null", (call, data, null, fn, 0, check, None)))
        v.append((f"c.{fname}.inst", (call, data, inst, fn, 0, check, None)))
        v.append((f"c.{fname}.null.arena", (call, data, null, fn, 0, check, arena)))
        v.append((f"c.{fname}.inst.arena", (call, data, inst, fn, 0, check, arena)))
    v.append(("c.unknown_fn", (call, data, null, 99, 6, 0, None)))
    v.append(("c.plain_fn", (loops().bench_flat_plain_add(), None, null, FN_ADD, 0, 1, None)))
    return v


def mode_dispatch(bundle_dir: str, n: int, rot: int) -> None:
    up = Upstream()
    up.load(bundle_dir)
    variants = _dispatch_variants(up)
    for _key, v in variants:  # warm-up
        _loop(*v, n // 20 + 1000, False)
    for key, v in rotated(variants, rot):
        ns, _allocs, bad = _loop(*v, n, False)
        emit(key, ns, bad)


def mode_allocs(bundle_dir: str, n: int) -> None:
    up = Upstream()
    up.load(bundle_dir)
    for key, v in _dispatch_variants(up):
        _loop(*v, 1000, False)
        _ns, allocs, bad = _loop(*v, n, True)
        if allocs < 0:
            die("allocs mode needs LD_PRELOAD=alloc_count.so")
        emit(key + ".allocs", allocs, bad)


def mode_gc(bundle_dir: str, n: int) -> None:
    up = Upstream()
    up.load(bundle_dir)
    call, data = up.vm(up.iface())
    for key, fn in (("c.add.null.gc_bytes", FN_ADD), ("c.noop.null.gc_bytes", FN_NOOP)):
        loops().bench_flat_gc_bytes(call, data, fn, 1000)
        emit(key, loops().bench_flat_gc_bytes(call, data, fn, n))


def mode_threads(dir_a: str, dir_b: str, n: int, rot: int) -> None:
    up = Upstream()
    up.load(dir_a)
    up.load(dir_b)
    ifaces = up.ifaces()
    if len(ifaces) != 2:
        die(f"expected 2 bench@1 providers, found {len(ifaces)}")
    (ca, da), (cb, db) = up.vm(ifaces[0]), up.vm(ifaces[1])
    rows = [("threads.1", [(ca, da)]), ("threads.2x2", [(ca, da), (cb, db)]),
            ("threads.2x1", [(ca, da), (ca, da)])]

    def run(targets: list[tuple[int, int]], count: int) -> tuple[float, int]:
        k = len(targets)
        calls = (ctypes.c_void_p * k)(*[t[0] for t in targets])
        datas = (ctypes.c_void_p * k)(*[t[1] for t in targets])
        out = (ctypes.c_double * 2)()
        loops().bench_flat_threads(calls, datas, k, count, out)
        return out[0], int(out[1])

    for _key, targets in rows:
        run(targets, n // 20 + 1000)
    for key, targets in rotated(rows, rot):
        ns, bad = run(targets, n)
        emit(key, ns, bad)


def mode_calls(bundle_dir: str, n: int, rot: int) -> None:
    up = Upstream()
    up.load(bundle_dir)
    iface = up.iface()
    gi = GuestContractInterface.from_address(iface)
    vm = gi.dispatch.vm
    a = (ctypes.c_uint32 * 2)(7, 35)
    out = ctypes.c_uint32()
    err = AbiError()
    pa, po, pe = ctypes.addressof(a), ctypes.addressof(out), ctypes.addressof(err)
    inst = GuestContractInstance()

    def ctypes_loop(fn: int) -> Callable[[int], None]:
        call, ld = vm.call, vm.loader_data

        def loop(k: int) -> None:
            for _ in range(k):
                call(ld, inst, fn, pa, po, None, pe)
        return loop

    import cffi

    ffi = cffi.FFI()
    ffi.cdef("""
        typedef struct { void *data; } VmLoaderData;
        typedef struct { void *data; uint64_t contract_id; } GuestContractInstance;
        typedef struct { uint32_t code; const uint8_t *ptr; size_t len; } AbiError;
    """)
    call_addr, data = up.vm(iface)
    cfn = ffi.cast("void(*)(VmLoaderData, GuestContractInstance, uint32_t, const void *, "
                   "void *, void *, AbiError *)", call_addr)
    cld = ffi.new("VmLoaderData *", [ffi.cast("void *", data)])[0]
    cinst = ffi.new("GuestContractInstance *")[0]
    ca = ffi.new("uint32_t[2]", [7, 35])
    cout = ffi.new("uint32_t *")
    cerr = ffi.new("AbiError *")

    def cffi_loop(fn: int) -> Callable[[int], None]:
        def loop(k: int) -> None:
            for _ in range(k):
                cfn(cld, cinst, fn, ca, cout, ffi.NULL, cerr)
        return loop

    def check_ctypes(fn: int) -> int:
        return int(err.code != 0 or (fn == FN_ADD and out.value != 42))

    def check_cffi(fn: int) -> int:
        return int(cerr.code != 0 or (fn == FN_ADD and cout[0] != 42))

    variants: list[tuple[str, Callable[[int], None], Callable[[int], int], int]] = [
        ("py.add.ctypes", ctypes_loop(FN_ADD), check_ctypes, FN_ADD),
        ("py.add.fnptr", cffi_loop(FN_ADD), check_cffi, FN_ADD),
        ("py.noop.ctypes", ctypes_loop(FN_NOOP), check_ctypes, FN_NOOP),
        ("py.noop.fnptr", cffi_loop(FN_NOOP), check_cffi, FN_NOOP),
    ]
    for _key, loop, _check, _fn in variants:
        loop(max(1000, n // 20))
    for key, loop, check, fn in rotated(variants, rot):
        out.value = 0
        cout[0] = 0
        emit(key, per_call_ns(loop, n), check(fn))


def mode_load(root: str, count: int) -> None:
    paths = [os.path.join(root, f"bench_{i:04d}") for i in range(count)]
    up = Upstream()
    rss0 = rss_kib()
    t0 = time.perf_counter_ns()
    for p in paths:
        up.load(p)
    t1 = time.perf_counter_ns()
    rss1 = rss_kib()
    emit("py.load.path.ms", (t1 - t0) / 1e6 / count, 0)
    emit("py.load.path.rss_kib", (rss1 - rss0) / count, 0)


def mode_reload(bundle_dir: str, count: int) -> None:
    up = Upstream(hot_reload=True)
    up.load(bundle_dir)
    rss0 = rss_kib()
    t0 = time.perf_counter_ns()
    for _ in range(count):
        up.rt.reload_bundle(bundle_dir)
    t1 = time.perf_counter_ns()
    rss1 = rss_kib()
    call, data = up.vm(up.iface())
    _ns, _a, bad = _loop(call, data, (None, 0), FN_ADD, 0, 1, None, 10, False)
    emit("py.reload.ms", (t1 - t0) / 1e6 / count, bad)
    emit("py.reload.rss_growth_kib", float(rss1 - rss0), bad)


def main(argv: list[str]) -> None:
    if not argv:
        die(__doc__ or "usage")
    mode, rest = argv[0], argv[1:]
    if mode == "dispatch":
        d, n, rot = args(rest, "", "1000000", "0")
        mode_dispatch(d, int(n), int(rot))
    elif mode == "allocs":
        d, n = args(rest, "", "1000000")
        mode_allocs(d, int(n))
    elif mode == "gc":
        d, n = args(rest, "", "100000")
        mode_gc(d, int(n))
    elif mode == "threads":
        da, db, n, rot = args(rest, "", "", "1000000", "0")
        mode_threads(da, db, int(n), int(rot))
    elif mode == "calls":
        d, n, rot = args(rest, "", "200000", "0")
        mode_calls(d, int(n), int(rot))
    elif mode == "load":
        root, count = args(rest, "", "100")
        mode_load(root, int(count))
    elif mode == "reload":
        d, count = args(rest, "", "1000")
        mode_reload(d, int(count))
    else:
        die(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
