"""The Python floors, in one cffi API-mode module built once into build/bench/pyfloor/
(cached):

* ``floor_add``: a trivial C function with pp_call's signature, so "Python → vm.call"
  can be compared with what cffi itself costs for a call of that shape;
* ``floor_callback_loop(n)``: C calling a trivial ``extern "Python"`` callback
  ``floor_py_add(a, b)`` n times, so "guest → Python host function" can be compared with
  what a cffi callback costs by itself (the caller registers ``floor_py_add``)."""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "bench" / "pyfloor"

CDEF = """
void floor_add(const void *iface, void *instance_data, uint64_t instance_contract_id,
               uint32_t fn_id, const void *args, void *out, void *arena, void *out_err);
extern "Python" uint32_t floor_py_add(uint32_t a, uint32_t b);
uint32_t floor_callback_loop(uint32_t n);
"""

SOURCE = """
#include <stdint.h>
#include <stddef.h>
typedef struct { uint32_t code; const uint8_t *ptr; size_t len; } floor_err;
void floor_add(const void *iface, void *instance_data, uint64_t instance_contract_id,
               uint32_t fn_id, const void *args, void *out, void *arena, void *out_err) {
    (void)iface; (void)instance_data; (void)instance_contract_id; (void)arena;
    const uint32_t *a = args;
    if (fn_id == 0) *(uint32_t *)out = a[0] + a[1];
    floor_err *e = out_err;
    e->code = 0; e->ptr = NULL; e->len = 0;
}
static uint32_t floor_py_add(uint32_t a, uint32_t b);
uint32_t floor_callback_loop(uint32_t n) {
    uint32_t s = 0;
    for (uint32_t i = 0; i < n; i++) s = floor_py_add(s, 1);
    return s;
}
"""


MODULE = "_pp_bench_floor_" + hashlib.sha256((CDEF + SOURCE).encode()).hexdigest()[:10]


def load():
    """The compiled module (``.ffi``, ``.lib``), building it on first use."""
    OUT.mkdir(parents=True, exist_ok=True)
    if str(OUT) not in sys.path:
        sys.path.insert(0, str(OUT))
    try:
        return importlib.import_module(MODULE)
    except ImportError:
        pass
    import cffi

    builder = cffi.FFI()
    builder.cdef(CDEF)
    builder.set_source(MODULE, SOURCE, extra_compile_args=["-O2"])
    builder.compile(tmpdir=str(OUT), verbose=False)
    importlib.invalidate_caches()
    return importlib.import_module(MODULE)


if __name__ == "__main__":
    print(load().__file__)
