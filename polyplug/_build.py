"""cffi build script (API mode) for ``polyplug._native``.

The cdef is not written by hand: it is ``csrc/include/polyplug.h`` run through the C
preprocessor with ``-DPP_CDEF`` (which hides includes, attributes and static
assertions), so cffi and the C compiler read one header.  The only cffi-specific
declarations are the ``extern "Python"`` callbacks below.

setup.py builds the C core (``build/core/libpolyplug_core.a``) and LuaJIT
(``csrc/luajit/``) before this module's extension is compiled; both are linked in
statically and ``--exclude-libs,ALL`` keeps their symbols out of the extension's
dynamic symbol table.  Both archives and the headers are ``depends`` of the extension,
so ``build_ext`` relinks it whenever one of them changed.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import subprocess

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
CORE_LIB = ROOT / "build" / "core" / "libpolyplug_core.a"
LUAJIT_LIB = CSRC / "luajit" / "lib" / "libluajit.a"

# Python-side callbacks the C host calls (see polyplug/_callbacks.py and polyplug/host.py).
# C is given the *_guarded adapters (and pp_py_host_call_adapter) below, never the
# callbacks themselves: they do not enter Python once the interpreter is exiting.
CALLBACKS = """
extern "Python" void pp_py_log(void *user_data, uint32_t level, StringView scope,
                               StringView message);
extern "Python" void pp_py_on_reload(void *user_data, const ReloadPhase *phase);
extern "Python" int32_t pp_py_load_hook(void *user_data, pp_runtime *rt, StringView path,
                                        pp_error *err);
extern "Python" int32_t pp_py_reload_hook(void *user_data, pp_runtime *rt, StringView path,
                                          pp_error *err);
extern "Python+C" uint32_t pp_py_host_call(uintptr_t user_data, uintptr_t instance,
                                           uint32_t fn_id, uintptr_t args, uintptr_t out);
uint32_t pp_py_host_call_adapter(void *user_data, void *instance, uint32_t fn_id,
                                 const void *args, void *out);
bool pp_py_host_result_string(uintptr_t out, const char *data, size_t len);
extern "Python" void *pp_py_host_create(void *user_data, const void *args);
extern "Python" void pp_py_host_destroy(void *user_data, void *instance);
extern "Python" void pp_py_host_release(void *user_data);
void pp_py_log_guarded(void *user_data, uint32_t level, StringView scope, StringView message);
void pp_py_on_reload_guarded(void *user_data, const ReloadPhase *phase);
int32_t pp_py_load_hook_guarded(void *user_data, pp_runtime *rt, StringView path,
                                pp_error *err);
int32_t pp_py_reload_hook_guarded(void *user_data, pp_runtime *rt, StringView path,
                                  pp_error *err);
void *pp_py_host_create_guarded(void *user_data, const void *args);
void pp_py_host_destroy_guarded(void *user_data, void *instance);
void pp_py_host_release_guarded(void *user_data);
"""


def header_cdef(cc: str | None = None) -> str:
    """The public header as declarations only, ready for ``FFI.cdef``."""
    compiler = shlex.split(cc or os.environ.get("CC", "cc"))
    cmd = [*compiler, "-E", "-P", "-DPP_CDEF", str(CSRC / "include" / "polyplug.h")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise RuntimeError(f"building polyplug needs a C compiler: {compiler[0]!r} not found "
                           "(install gcc or clang, or set CC)") from None
    if proc.returncode != 0:
        raise RuntimeError(f"preprocessing the header failed: {shlex.join(cmd)}\n{proc.stderr}")
    text = proc.stdout
    return "\n".join(line for line in text.splitlines() if line.strip())


ffibuilder = FFI()
ffibuilder.cdef(header_cdef() + CALLBACKS)
# pp_host_call_fn for Python host contracts: every pointer reaches Python as an integer —
# the contract and instance tokens polyplug/host.py handed to C, the argument block and
# the result slot, which struct reads and writes directly — instead of as pointer cdata
# that each call would have to wrap first.
#
# Each callback is entered through pp_python_enter/pp_python_leave (csrc/python/fastcall.c,
# "Python entered from C code at interpreter exit"): from atexit on, C code running on a
# daemon thread (a guest inside a call, holding its bundle's lock) would be ended by
# Python the moment it took the GIL, and that unwinding aborts the process.  Refused, a
# log record or reload notice is dropped, a host function or factory fails and a path
# hook fails with PP_ERR_HOST_EXCEPTION.
ADAPTERS = """
#include <stdio.h>
#include "polyplug.h"
int pp_python_enter(void);
void pp_python_leave(void);
uint32_t pp_py_host_call(uintptr_t user_data, uintptr_t instance, uint32_t fn_id,
                         uintptr_t args, uintptr_t out);
static void pp_py_log(void *, uint32_t, StringView, StringView);
static void pp_py_on_reload(void *, const ReloadPhase *);
static int32_t pp_py_load_hook(void *, pp_runtime *, StringView, pp_error *);
static int32_t pp_py_reload_hook(void *, pp_runtime *, StringView, pp_error *);
static void *pp_py_host_create(void *, const void *);
static void pp_py_host_destroy(void *, void *);
static void pp_py_host_release(void *);

static uint32_t pp_py_host_call_adapter(void *user_data, void *instance, uint32_t fn_id,
                                        const void *args, void *out) {
    uint32_t r = pp_python_enter()
        ? pp_py_host_call((uintptr_t)user_data, (uintptr_t)instance, fn_id, (uintptr_t)args,
                          (uintptr_t)out)
        : (uint32_t)AbiErrorCode_HostContractCallFailed;
    pp_python_leave();
    return r;
}
static void pp_py_log_guarded(void *user_data, uint32_t level, StringView scope,
                              StringView message) {
    if (pp_python_enter()) pp_py_log(user_data, level, scope, message);
    pp_python_leave();
}
static void pp_py_on_reload_guarded(void *user_data, const ReloadPhase *phase) {
    if (pp_python_enter()) pp_py_on_reload(user_data, phase);
    pp_python_leave();
}
static int32_t pp_py_exiting(pp_error *err) {
    if (err) {
        err->status = PP_ERR_HOST_EXCEPTION;
        err->abi_code = AbiErrorCode_Generic;
        snprintf(err->message, sizeof err->message, "%s",
                 "the Python interpreter is exiting: no bundle is loaded from Python now");
    }
    return PP_ERR_HOST_EXCEPTION;
}
static int32_t pp_py_load_hook_guarded(void *user_data, pp_runtime *rt, StringView path,
                                       pp_error *err) {
    int32_t r = pp_python_enter() ? pp_py_load_hook(user_data, rt, path, err)
                                  : pp_py_exiting(err);
    pp_python_leave();
    return r;
}
static int32_t pp_py_reload_hook_guarded(void *user_data, pp_runtime *rt, StringView path,
                                         pp_error *err) {
    int32_t r = pp_python_enter() ? pp_py_reload_hook(user_data, rt, path, err)
                                  : pp_py_exiting(err);
    pp_python_leave();
    return r;
}
static void *pp_py_host_create_guarded(void *user_data, const void *args) {
    void *r = pp_python_enter() ? pp_py_host_create(user_data, args) : NULL;
    pp_python_leave();
    return r;
}
static void pp_py_host_destroy_guarded(void *user_data, void *instance) {
    if (pp_python_enter()) pp_py_host_destroy(user_data, instance);
    pp_python_leave();
}
static void pp_py_host_release_guarded(void *user_data) {
    if (pp_python_enter()) pp_py_host_release(user_data);
    pp_python_leave();
}
static bool pp_py_host_result_string(uintptr_t out, const char *data, size_t len) {
    return pp_host_result_string((void *)out, data, len);
}
"""

# The Pythonic call layer's hot path, a second module in the same shared object
# (polyplug._fastcall, loaded by polyplug/_ffi.py): it calls the core directly.
# setuptools takes source paths only relative to setup.py's directory (the build's
# working directory).
FASTCALL = CSRC / "python" / "fastcall.c"
FASTCALL_SOURCE = FASTCALL.relative_to(ROOT).as_posix()

ffibuilder.set_source(
    "polyplug._native",
    ADAPTERS,
    sources=[FASTCALL_SOURCE],
    include_dirs=[str(CSRC / "include")],
    extra_objects=[str(CORE_LIB), str(LUAJIT_LIB)],
    depends=[str(p) for p in (CORE_LIB, LUAJIT_LIB, CSRC / "pp_errors.def", FASTCALL,
                              *sorted((CSRC / "include").glob("*.h")))],
    libraries=["m", "dl", "pthread"],
    extra_compile_args=["-O2", "-Werror=incompatible-pointer-types",
                        "-Werror=implicit-function-declaration"],
    # --wrap: LuaJIT's CPU detection asked once per process (csrc/pp_lua_vm.c)
    extra_link_args=["-Wl,--exclude-libs,ALL", "-Wl,--wrap=lj_vm_cpuid"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
