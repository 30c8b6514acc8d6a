"""Python → native (loader = "native") figures (run by benchmarks/run.py).

    python bench_native.py DIR N ROT

DIR is the built native bench bundle (bench.native@1: fn 0 add, fn 1 no-op, in C).
Each variant makes N calls of add(7, 35) and checks the result; one JSON line per
variant (see benchcommon.emit):

    py.native.pythonic   rt.contract("bench.native", 1).add(7, 35): the call layer
    py.native.pp_call    lib.pp_call(iface, ...) with prepared cffi memory
    py.native.fnptr      the library's function, cast to NativeGuestFn, called by cffi
    py.native.noop.pythonic  the no-op through the call layer
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from benchcommon import args, die, emit, per_call_ns, rotated

from polyplug import NativeLoader, Runtime, ffi, guest_contract_id, lib


def main(argv: list[str]) -> None:
    d, n_text, rot_text = args(argv, "", "200000", "0")
    if not d:
        die(__doc__ or "usage")
    n, rot = int(n_text), int(rot_text)
    rt = Runtime(loaders=[NativeLoader()])
    rt.load_bundle(d)
    contract = rt.contract("bench.native", 1)
    iface = rt.resolve_guest_contract(rt.find_guest_contract(
        guest_contract_id("bench.native", 1), 1))
    a = ffi.new("uint32_t[2]", [7, 35])
    out = ffi.new("uint32_t *")
    err = ffi.new("AbiError *")
    null = ffi.NULL
    add, noop = contract.add, contract.noop
    if add(7, 35) != 42:
        die("bench.native add(7, 35) != 42")
    pp_call = lib.pp_call
    fn = ffi.cast("NativeGuestFn", iface.dispatch.native.functions[0])
    inst = ffi.new("GuestContractInstance *")[0]

    def pythonic(k: int) -> None:
        for _ in range(k):
            add(7, 35)

    def pythonic_noop(k: int) -> None:
        for _ in range(k):
            noop()

    def api_mode(k: int) -> None:
        for _ in range(k):
            pp_call(iface, null, 0, 0, a, out, null, err)

    def fn_pointer(k: int) -> None:
        for _ in range(k):
            fn(inst, a, out, err)

    variants: list[tuple[str, Callable[[int], None], bool]] = [
        ("py.native.pythonic", pythonic, False),
        ("py.native.noop.pythonic", pythonic_noop, False),
        ("py.native.pp_call", api_mode, True),
        ("py.native.fnptr", fn_pointer, True),
    ]
    for _key, loop, _raw in variants:  # warm-up
        loop(max(1000, n // 20))
    for key, loop, raw in rotated(variants, rot):
        out[0] = 0
        err.code = 0
        ns = per_call_ns(loop, n)
        bad: Any = int(raw and (err.code != 0 or out[0] != 42))  # the layer raises instead
        emit(key, ns, bad)
    rt.close()


if __name__ == "__main__":
    main(sys.argv[1:])
