/*
 * hostfn_stress.c — host contracts provided from C callbacks, called from several
 * threads while the main thread replaces and withdraws them (tests/test_host_contracts.py
 * runs it plain and under ASan+UBSan).
 *
 * Callers keep interface and instance pointers across replacements and keep calling
 * through them after destroying their instances, as a careless guest would.  What must
 * hold: no callback ever runs after its contract's release; every instance created is
 * destroyed exactly once; release runs exactly once per contract; every call answers
 * Ok or one of the documented codes; nothing crashes or leaks.
 *
 *   hostfn_stress [rounds]      prints "ok contracts=<n> calls=<n> instances=<n>"
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "polyplug.h"

#define THREADS 4
#define INST_MAGIC 0x1234abcdu

typedef struct contract_state {
    _Atomic int released;
    _Atomic long calls, created, destroyed;
} contract_state;

static void die(const char *what) {
    fprintf(stderr, "hostfn_stress: %s\n", what);
    abort();
}

static uint32_t on_call(void *user_data, void *instance, uint32_t fn_id, const void *args,
                        void *out) {
    contract_state *c = user_data;
    if (atomic_load(&c->released)) die("a call reached a released contract");
    if (!instance || *(const uint32_t *)instance != INST_MAGIC) die("a call on a dead instance");
    atomic_fetch_add(&c->calls, 1);
    if (fn_id == 1) return pp_host_error(AbiErrorCode_HostContractCallFailed, "no", 2, NULL, 0);
    uint32_t v;
    memcpy(&v, args, sizeof v);
    v += 1;
    memcpy(out, &v, sizeof v);
    return AbiErrorCode_Ok;
}

static void *on_create(void *user_data, const void *args) {
    (void)args;
    contract_state *c = user_data;
    if (atomic_load(&c->released)) die("create on a released contract");
    uint32_t *inst = malloc(sizeof *inst);
    if (!inst) die("out of memory");
    *inst = INST_MAGIC;
    atomic_fetch_add(&c->created, 1);
    return inst;
}

static void on_destroy(void *user_data, void *instance) {
    contract_state *c = user_data;
    if (atomic_load(&c->released)) die("destroy after release");
    uint32_t *inst = instance;
    if (*inst != INST_MAGIC) die("an instance destroyed twice");
    *inst = 0;
    free(inst);
    atomic_fetch_add(&c->destroyed, 1);
}

static void on_release(void *user_data) {
    contract_state *c = user_data;
    if (atomic_exchange(&c->released, 1)) die("released twice");
    if (atomic_load(&c->created) != atomic_load(&c->destroyed))
        die("released with instances not destroyed");
}

static const HostApi *g_host;
static uint64_t g_id;
static _Atomic int g_stop;
static _Atomic long g_bad;
static _Atomic long g_rounds_seen; /* caller iterations done */
static _Atomic long g_logged;

/* Host-function failures are logged: count them instead of printing. */
static void on_log(void *user_data, uint32_t level, StringView scope, StringView message) {
    (void)user_data;
    (void)level;
    (void)scope;
    (void)message;
    atomic_fetch_add(&g_logged, 1);
}

static void call_through(const HostContractInterface *iface, HostContractInstance inst,
                         uint32_t fn) {
    uint32_t arg = 41, out = 0;
    AbiError err = {0, {NULL, 0}};
    NativeHostFn f = (NativeHostFn)(uintptr_t)iface->dispatch.native.functions[fn];
    f(inst.data, &arg, &out, &err);
    switch (err.code) {
    case AbiErrorCode_Ok:
        if (fn != 0 || out != 42) atomic_fetch_add(&g_bad, 1);
        break;
    case AbiErrorCode_HostContractCallFailed: /* fn 1 fails on purpose */
        if (fn != 1) atomic_fetch_add(&g_bad, 1);
        break;
    case AbiErrorCode_HostContractNotFound:    /* withdrawn or replaced */
    case AbiErrorCode_FunctionNotAvailable:    /* the instance was destroyed */
        break;
    default:
        atomic_fetch_add(&g_bad, 1);
    }
}

static void *caller(void *arg) {
    (void)arg;
    const HostContractInterface *old_iface = NULL;
    HostContractInstance old_inst = {NULL};
    while (!atomic_load(&g_stop)) {
        const HostContractInterface *iface =
            g_host->resolve_host_contract_interface(g_host, g_id, 0);
        if (!iface) continue;
        HostContractInstance inst = g_host->get_host_contract(g_host, g_id, 0);
        if (!inst.data) continue; /* withdrawn between the two lookups */
        for (uint32_t i = 0; i < 8; i++) call_through(iface, inst, i & 1);
        iface->destroy_instance(iface, inst);
        /* a careless guest: calls through what it destroyed, and an old interface */
        call_through(iface, inst, 0);
        if (old_iface) call_through(old_iface, old_inst, 0);
        old_iface = iface;
        old_inst = inst;
        atomic_fetch_add(&g_rounds_seen, 1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 2000;
    pp_error err;
    pp_error_clear(&err);
    RuntimeConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.log = on_log;
    cfg.log_max_level = LogLevel_Error;
    pp_runtime *rt = pp_runtime_new(&cfg, &err);
    if (!rt) die(err.message);
    g_host = pp_runtime_host(rt);
    static const pp_host_function fns[] = {{"inc", 4, 4}, {"fail", 0, 0}};
    pp_host_contract_desc d;
    memset(&d, 0, sizeof d);
    d.name = (StringView){(const uint8_t *)"stress.c", 8};
    d.version.major = 1;
    d.function_count = 2;
    d.functions = fns;
    d.call = on_call;
    d.create = on_create;
    d.destroy = on_destroy;
    d.release = on_release;
    contract_state *states = calloc((size_t)rounds, sizeof *states);
    if (!states) die("out of memory");
    d.user_data = &states[0];
    const HostContractInterface *iface = NULL;
    if (pp_runtime_provide_host_contract(rt, &d, false, &iface, &err) != PP_OK) die(err.message);
    g_id = iface->contract_id;
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&threads[i], NULL, caller, NULL) != 0) die("pthread_create");
    for (int r = 1; r < rounds; r++) {
        /* let the callers get at this contract (bounded: a stalled caller ends the wait) */
        long seen = atomic_load(&g_rounds_seen);
        for (int spin = 0; spin < 100000 && atomic_load(&g_rounds_seen) < seen + THREADS; spin++)
            sched_yield();
        d.user_data = &states[r];
        if (r % 7 == 0) pp_runtime_withdraw_host_contract(rt, g_id, NULL);
        if (pp_runtime_provide_host_contract(rt, &d, true, NULL, &err) != PP_OK)
            die(err.message);
    }
    atomic_store(&g_stop, 1);
    for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
    if (pp_runtime_close(rt, 10000000000ULL, &err) != PP_OK) die(err.message);
    long calls = 0, instances = 0;
    for (int r = 0; r < rounds; r++) {
        if (!atomic_load(&states[r].released)) die("a contract was never released");
        calls += atomic_load(&states[r].calls);
        instances += atomic_load(&states[r].created);
    }
    pp_runtime_free(rt);
    free(states);
    if (atomic_load(&g_bad)) die("a call answered an unexpected code");
    if (atomic_load(&g_logged) == 0) die("no failure was logged");
    printf("ok contracts=%d calls=%ld instances=%ld\n", rounds, calls, instances);
    return 0;
}
