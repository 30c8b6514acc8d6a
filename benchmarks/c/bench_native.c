/*
 * bench_native.c — C → native dispatch figures (loader = "native").
 *
 *   bench_native DIR N ROT      every variant once, N calls each, in an order rotated
 *                               by ROT (round-robin across repeats)
 *
 * DIR is the built native bench bundle (benchmarks/bundles/bench_native with its
 * library).  It is loaded by path with the native loader; every variant calls add with
 * args {i, 35} and checks each result.  Each figure is a JSON line on stdout
 * {"key": ..., "value": ns per call, "bad": wrong results}:
 *
 *   native.plain     the floor: an indirect call of a C add with the native slot's
 *                    signature, defined in this program
 *   native.cached    the library's add through a function pointer cached once
 *   native.dispatch  the registry's dispatch, per call: the interface resolved once,
 *                    then iface->dispatch.native.functions[0](...) (the formula)
 *   native.pp_call   pp_call(iface, ...) (dispatch type, id bound, err reset)
 *   native.handle    pp_call_handle(rt, index, generation, ...) (the handle checked)
 *   native.noop.dispatch  the no-op through the formula
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "polyplug.h"

/* ns since an arbitrary point (CLOCK_MONOTONIC) */
#include <time.h>
static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void plain_add(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    (void)self;
    (void)err;
    const uint32_t *a = args;
    *(uint32_t *)out = a[0] + a[1];
}

/* read through volatile so the compiler cannot see (and inline) the target */
static NativeGuestFn volatile g_plain = plain_add;

typedef struct ctx {
    pp_runtime *rt;
    const GuestContractInterface *iface;
    GuestContractHandle handle;
    NativeGuestFn cached;
} ctx;

static ctx g;

typedef uint64_t (*loop_fn)(uint64_t n);

#define LOOP_BODY(CALL, CHECK)                                  \
    uint64_t bad = 0;                                           \
    GuestContractInstance none = {NULL, 0};                     \
    (void)none;                                                 \
    for (uint64_t i = 0; i < n; i++) {                          \
        uint32_t args[2] = {(uint32_t)i, 35}, out = 0;          \
        AbiError err = {0, {NULL, 0}};                          \
        CALL;                                                   \
        bad += err.code != 0 || (CHECK && out != (uint32_t)i + 35); \
    }                                                           \
    return bad;

static uint64_t loop_plain(uint64_t n) {
    NativeGuestFn f = g_plain;
    LOOP_BODY(f(none, args, &out, &err), 1)
}

static uint64_t loop_cached(uint64_t n) {
    NativeGuestFn f = g.cached;
    LOOP_BODY(f(none, args, &out, &err), 1)
}

static uint64_t loop_dispatch(uint64_t n) {
    LOOP_BODY(((NativeGuestFn)(uintptr_t)g.iface->dispatch.native.functions[0])(none, args, &out,
                                                                              &err),
              1)
}

static uint64_t loop_noop_dispatch(uint64_t n) {
    LOOP_BODY(((NativeGuestFn)(uintptr_t)g.iface->dispatch.native.functions[1])(none, args, &out,
                                                                              &err),
              0)
}

static uint64_t loop_pp_call(uint64_t n) {
    LOOP_BODY(pp_call(g.iface, NULL, 0, 0, args, &out, NULL, &err), 1)
}

static uint64_t loop_handle(uint64_t n) {
    LOOP_BODY(pp_call_handle(g.rt, g.handle.index, g.handle.generation, NULL, 0, 0, args, &out,
                             NULL, &err),
              1)
}

static const struct {
    const char *key;
    loop_fn loop;
} VARIANTS[] = {
    {"native.plain", loop_plain},       {"native.cached", loop_cached},
    {"native.dispatch", loop_dispatch}, {"native.noop.dispatch", loop_noop_dispatch},
    {"native.pp_call", loop_pp_call},   {"native.handle", loop_handle},
};
enum { NVARIANTS = sizeof VARIANTS / sizeof VARIANTS[0] };

static void die(const char *what, const pp_error *err) {
    fprintf(stderr, "bench_native: %s%s%s\n", what, err ? ": " : "", err ? err->message : "");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: bench_native DIR N ROT\n");
        return 2;
    }
    uint64_t n = strtoull(argv[2], NULL, 10);
    int rot = atoi(argv[3]);
    pp_error err;
    pp_error_clear(&err);
    g.rt = pp_runtime_new(NULL, &err);
    if (!g.rt) die("pp_runtime_new", &err);
    pp_loader *native = pp_native_loader_new(NULL);
    if (pp_runtime_add_loader(g.rt, native, &err)) die("add_loader", &err);
    pp_loader_release(native);
    StringView dir = {(const uint8_t *)argv[1], strlen(argv[1])};
    if (pp_runtime_load_path(g.rt, dir, &err)) die("load", &err);
    const char *canon = "guest_contract:bench.native@1";
    uint64_t cid = pp_fnv1a64((const uint8_t *)canon, strlen(canon));
    if (pp_registry_find(g.rt, cid, 1, &g.handle, &err)) die("find", &err);
    if (pp_registry_resolve(g.rt, g.handle, &g.iface, &err)) die("resolve", &err);
    memcpy(&g.cached, &g.iface->dispatch.native.functions[0], sizeof g.cached);
    for (int i = 0; i < NVARIANTS; i++) VARIANTS[i].loop(n / 20 + 1000); /* warm up */
    for (int k = 0; k < NVARIANTS; k++) {
        int i = (k + rot) % NVARIANTS;
        uint64_t t0 = now_ns();
        uint64_t bad = VARIANTS[i].loop(n);
        uint64_t t1 = now_ns();
        printf("{\"key\": \"%s\", \"value\": %.4f, \"bad\": %llu}\n", VARIANTS[i].key,
               (double)(t1 - t0) / (double)n, (unsigned long long)bad);
    }
    pp_runtime_free(g.rt);
    return 0;
}
