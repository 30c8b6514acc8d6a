/*
 * bench_hostfn.c — guest → C host function, from a compiled Lua loop.
 *
 *   bench_hostfn DIR N ROT     DIR is benchmarks/bundles/hostfn
 *
 * The bundle's loops call add(u32, u32) -> u32 of host contract bench.host@1 N times
 * (one vm.call each, timed from C; the sum is checked).  Keys, ns per host call:
 *   hostfn.c.sdk      a C host contract registered with HostApi.register_host_contract
 *                     (our own native table: one indirect call from the guest), called
 *                     through the SDK's typed method h:add(s, 1)
 *   hostfn.c.ffi      the floor: the same slot called by a hand-written FFI call
 *   hostfn.c.managed  the same add provided with pp_runtime_provide_host_contract (C
 *                     callbacks behind the library's trampolines), typed method
 * Each result is a JSON line (bench_emit).  The host side uses only polyplug.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_host.h"

static StringView sv(const char *s) { return (StringView){(const uint8_t *)s, strlen(s)}; }

/* ── the raw C host contract: our own HostContractInterface ────────────────── */

static void raw_add(void *instance, const void *args, void *out, AbiError *err) {
    (void)instance;
    const uint32_t *a = args;
    *(uint32_t *)out = a[0] + a[1];
    err->code = AbiErrorCode_Ok;
    err->message = (StringView){NULL, 0};
}

static void raw_create(const HostContractInterface *self, const void *args,
                       HostContractInstance *out) {
    (void)self;
    (void)args;
    static int token; /* any non-NULL instance: the functions ignore it */
    out->data = &token;
}

static void raw_destroy(const HostContractInterface *self, HostContractInstance inst) {
    (void)self;
    (void)inst;
}

static const void *raw_table[1];
static HostContractInterface raw_iface;

/* ── the managed one: pp_runtime_provide_host_contract with a C callback ──── */

static uint32_t managed_call(void *user_data, void *instance, uint32_t fn_id, const void *args,
                             void *out) {
    (void)user_data;
    (void)instance;
    (void)fn_id;
    const uint32_t *a = args;
    *(uint32_t *)out = a[0] + a[1];
    return AbiErrorCode_Ok;
}

static uint64_t host_id(void) {
    const char *canonical = "host_contract:bench.host@1";
    return pp_fnv1a64((const uint8_t *)canonical, strlen(canonical));
}

static void provide_raw(pp_runtime *rt) {
    const HostApi *host = pp_runtime_host(rt);
    raw_table[0] = (const void *)(uintptr_t)raw_add;
    memset(&raw_iface, 0, sizeof raw_iface);
    raw_iface.contract_id = host_id();
    raw_iface.contract_version = (Version){1, 0, 0};
    raw_iface.singleton = true;
    raw_iface.dispatch_type = DispatchType_Native;
    raw_iface.create_instance = raw_create;
    raw_iface.destroy_instance = raw_destroy;
    raw_iface.dispatch.native.function_count = 1;
    raw_iface.dispatch.native.functions = raw_table;
    AbiError e = {0, {NULL, 0}};
    host->register_host_contract(host, &raw_iface, &e);
    if (e.code) bench_die("register_host_contract", NULL);
}

static void provide_managed(pp_runtime *rt) {
    static const pp_host_function fns[] = {{"add", 8, 4}};
    pp_host_contract_desc d;
    memset(&d, 0, sizeof d);
    d.name = sv("bench.host");
    d.version = (Version){1, 0, 0};
    d.function_count = 1;
    d.functions = fns;
    d.call = managed_call;
    pp_error err;
    pp_error_clear(&err);
    if (pp_runtime_provide_host_contract(rt, &d, true, NULL, &err) != PP_OK)
        bench_die("pp_runtime_provide_host_contract", &err);
}

/* ── timing ────────────────────────────────────────────────────────────────── */

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* One vm.call of loop fn `fn` with n iterations; ns per iteration, `bad` when the sum
 * or the call is wrong. */
static double run_loop(const GuestContractInterface *iface, uint32_t fn, uint32_t n,
                       uint64_t *bad) {
    uint32_t out = 0;
    AbiError e = {0, {NULL, 0}};
    long long t0 = now_ns();
    pp_call(iface, NULL, 0, fn, &n, &out, NULL, &e);
    long long t1 = now_ns();
    if (e.code != 0 || out != n) {
        fprintf(stderr, "bench_hostfn: fn %u: code %u, sum %u of %u: %.*s\n", fn, e.code, out,
                n, (int)e.message.len, e.message.ptr ? (const char *)e.message.ptr : "");
        (*bad)++;
    }
    return (double)(t1 - t0) / n;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_hostfn DIR N [ROT]\n");
        return 2;
    }
    uint32_t n = (uint32_t)strtoul(argv[2], NULL, 10);
    int rot = argc > 3 ? atoi(argv[3]) : 0;
    pp_runtime *rt = bench_runtime_new(false);
    provide_raw(rt);
    pp_error err;
    pp_error_clear(&err);
    if (pp_runtime_load_path(rt, sv(argv[1]), &err) != PP_OK) bench_die("load hostfn", &err);
    const char *canonical = "guest_contract:bench.hostfn@1";
    GuestContractHandle h;
    if (pp_registry_find(rt, pp_fnv1a64((const uint8_t *)canonical, strlen(canonical)), 1, &h,
                         &err) != PP_OK)
        bench_die("find bench.hostfn@1", &err);
    const GuestContractInterface *iface;
    if (pp_registry_resolve(rt, h, &iface, &err) != PP_OK) bench_die("resolve", &err);

    uint64_t bad = 0;
    uint32_t warm = n / 20 > 1000 ? n / 20 : 1000;
    double sdk = 0, ffi = 0;
    for (int k = 0; k < 2; k++) { /* warm-up, then the rotated pair */
        bool sdk_first = (rot + k) % 2 == 0;
        uint32_t count = k ? n : warm;
        double a = run_loop(iface, sdk_first ? 0 : 1, count, &bad);
        double b = run_loop(iface, sdk_first ? 1 : 0, count, &bad);
        sdk = sdk_first ? a : b;
        ffi = sdk_first ? b : a;
    }
    bench_emit("hostfn.c.sdk", sdk, bad);
    bench_emit("hostfn.c.ffi", ffi, bad);

    provide_managed(rt); /* replaces the raw one; the guest looks it up again */
    uint32_t zero = 0;
    AbiError e = {0, {NULL, 0}};
    pp_call(iface, NULL, 0, 2, &zero, NULL, NULL, &e);
    if (e.code) bench_die("rebind", NULL);
    run_loop(iface, 0, warm, &bad);
    bench_emit("hostfn.c.managed", run_loop(iface, 0, n, &bad), bad);
    pp_runtime_free(rt);
    return bad ? 1 : 0;
}
