/*
 * The native test plugin: contract native.math@1 with native dispatch.  Compile-time
 * switches (-D...) make the variants the tests need: another version tag, an extra
 * contract, and every way the loader protocol can fail.  tests/native_plugins.py lists
 * the variants; tests build them with tests/cbuild.py (build_shared).
 *
 *   fn 0  add(u32 a, u32 b) -> u32
 *   fn 1  tag() -> u32                 PLUG_TAG: which build answered (reload tests)
 *   fn 2  fail()                       code 300, "native failure"
 *   fn 3  greet(string) -> string      "Hello, <name>!" (instance buffer, else per thread)
 *   fn 4  count() -> u64               per-instance counter; FunctionNotAvailable without
 *   fn 5  lua_add(u32, u32) -> u32     calls fn 0 of the Lua contract mixed.lua@1
 *   fn 6  statics() -> u64             a counter in the library's statics: per load
 *   fn 7  spin(u32 us) -> u32          busy-waits `us` microseconds, returns PLUG_TAG
 *   fn 8  context() -> string          "<ctx.bundle_id in hex> <ctx.bundle_path>" seen by init
 *
 * Switches: PLUG_TAG (default 1), PLUG_ABI_VERSION (1), PLUG_NO_ABI_SYMBOL,
 * PLUG_NO_INIT (init exported under another name), PLUG_INIT_CODE (0) and PLUG_INIT_MSG, PLUG_EXTRA (also registers
 * native.extra@1, fn 0 -> 77), PLUG_NULL_ENTRY (registers a table with a NULL entry),
 * PLUG_UNDEFINED (needs a symbol nothing defines), PLUG_NO_CONTRACTS.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "polyplug_abi.h"

#ifndef PLUG_TAG
#define PLUG_TAG 1
#endif
#ifndef PLUG_ABI_VERSION
#define PLUG_ABI_VERSION 1
#endif
#ifndef PLUG_INIT_CODE
#define PLUG_INIT_CODE 0
#endif

/* Statics belong to one load: every load opens its own copy of the library. */
static const HostApi *g_host;
static uint64_t g_statics;
static char g_context[1100];

typedef struct plug_instance {
    uint64_t count;
    char greeting[256];
} plug_instance;

/* Instances are numbered (data = 1, 2, ...: transcripts print them) and their state is
 * allocated with host->alloc.  Creating and destroying them happens on one thread in
 * the tests. */
enum { MAX_INSTANCES = 64 };
static plug_instance *g_instances[MAX_INSTANCES];

static plug_instance *instance_of(GuestContractInstance self) {
    uintptr_t id = (uintptr_t)self.data;
    return id >= 1 && id <= MAX_INSTANCES ? g_instances[id - 1] : NULL;
}

static StringView sv(const char *s) {
    StringView v = {(const uint8_t *)s, strlen(s)};
    return v;
}

static void fail_with(AbiError *err, uint32_t code, const char *msg) {
    err->code = code;
    err->message = sv(msg);
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x00000100000001b3ULL;
    return h;
}

static void fn_add(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    (void)self;
    (void)err;
    const uint32_t *a = args;
    *(uint32_t *)out = a[0] + a[1];
}

static void fn_tag(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    (void)self;
    (void)args;
    (void)err;
    *(uint32_t *)out = PLUG_TAG;
}

static void fn_fail(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    (void)self;
    (void)args;
    (void)out;
    fail_with(err, 300, "native failure");
}

static void fn_greet(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    static _Thread_local char stateless[256];
    const StringView *name = args;
    plug_instance *inst = instance_of(self);
    char *buf = inst ? inst->greeting : stateless;
    size_t n = name->len < 200 ? name->len : 200;
    if (n && !name->ptr) {
        fail_with(err, AbiErrorCode_InvalidPointer, "greet: null name");
        return;
    }
    memcpy(buf, "Hello, ", 7);
    if (n) memcpy(buf + 7, name->ptr, n);
    memcpy(buf + 7 + n, "!", 2);
    /* the result points at memory that stays valid until this thread's (or this
     * instance's) next greet */
    *(StringView *)out = sv(buf);
}

static void fn_count(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    (void)args;
    plug_instance *inst = instance_of(self);
    if (!inst) {
        fail_with(err, AbiErrorCode_FunctionNotAvailable, "count needs an instance");
        return;
    }
    *(uint64_t *)out = ++inst->count;
}

/* Call fn 0 of mixed.lua@1 (a Lua contract) through the host: the dispatch formula. */
static void fn_lua_add(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    (void)self;
    GuestContractHandle h = g_host->find_guest_contract(g_host, fnv1a("guest_contract:mixed.lua@1"), 1);
    const GuestContractInterface *iface =
        h.index == UINT32_MAX ? NULL : g_host->resolve_guest_contract(g_host, h);
    if (!iface) {
        fail_with(err, AbiErrorCode_NotFound, "mixed.lua@1 is not loaded");
        return;
    }
    GuestContractInstance none = {NULL, 0};
    if (iface->dispatch_type == DispatchType_VirtualMachine) {
        iface->dispatch.vm.call(iface->dispatch.vm.loader_data, none, 0, args, out, NULL, err);
    } else {
        NativeGuestFn fn;
        memcpy(&fn, &iface->dispatch.native.functions[0], sizeof fn);
        fn(none, args, out, err);
    }
}

static void fn_statics(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    (void)self;
    (void)args;
    (void)err;
    *(uint64_t *)out = ++g_statics;
}

static void fn_spin(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    (void)self;
    (void)err;
    uint32_t us = *(const uint32_t *)args;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000 < (long)us);
    *(uint32_t *)out = PLUG_TAG;
}

static void fn_context(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    (void)self;
    (void)args;
    (void)err;
    *(StringView *)out = sv(g_context);
}

static void fn_extra(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    (void)self;
    (void)args;
    (void)err;
    *(uint32_t *)out = 77;
}

static void create(VmLoaderData ld, const HostApi *host, const void *args,
                   GuestContractInstance *out) {
    (void)ld;
    (void)args;
    out->data = NULL; /* NULL: creation failed */
    out->contract_id = fnv1a("guest_contract:native.math@1");
    for (uintptr_t i = 0; i < MAX_INSTANCES; i++) {
        if (g_instances[i]) continue;
        plug_instance *inst = (plug_instance *)host->alloc(host, sizeof *inst, 8);
        if (!inst) return;
        memset(inst, 0, sizeof *inst);
        g_instances[i] = inst;
        out->data = (void *)(i + 1);
        return;
    }
}

static void destroy(VmLoaderData ld, const HostApi *host, GuestContractInstance self) {
    (void)ld;
    plug_instance *inst = instance_of(self);
    if (!inst) return;
    g_instances[(uintptr_t)self.data - 1] = NULL;
    host->free(host, (uint8_t *)inst, sizeof *inst, 8);
}

static void destroy_nothing(VmLoaderData ld, const HostApi *host, GuestContractInstance inst) {
    (void)ld;
    (void)host;
    (void)inst;
}

static void create_stateless(VmLoaderData ld, const HostApi *host, const void *args,
                             GuestContractInstance *out) {
    (void)ld;
    (void)host;
    (void)args;
    out->data = NULL;
    out->contract_id = 0;
}

#ifdef PLUG_UNDEFINED
extern int plug_symbol_nothing_defines(void);
int plug_needs_it(void);
int plug_needs_it(void) { return plug_symbol_nothing_defines(); }
#endif

#ifndef PLUG_NO_ABI_SYMBOL
uint32_t polyplug_abi_version(void);
uint32_t polyplug_abi_version(void) { return PLUG_ABI_VERSION; }
#endif

static const void *const math_fns[] = {
    (const void *)fn_add,   (const void *)fn_tag,    (const void *)fn_fail,
    (const void *)fn_greet, (const void *)fn_count,  (const void *)fn_lua_add,
    (const void *)fn_statics, (const void *)fn_spin,   (const void *)fn_context,
#ifdef PLUG_NULL_ENTRY
    NULL,
#endif
};
static const void *const extra_fns[] = {(const void *)fn_extra};

static AbiError register_one(const HostApi *host, const char *contract, const char *canon,
                             const void *const *fns, uint32_t count, bool stateful) {
    PluginDescriptor desc;
    memset(&desc, 0, sizeof desc);
    desc.name = sv("native-test-plugin");
    desc.contract_name = sv(canon);
    desc.version.major = 1;
    GuestContractInterface iface; /* registration copies it: the stack is fine */
    memset(&iface, 0, sizeof iface);
    iface.contract_id = fnv1a(contract);
    iface.contract_version.major = 1;
    iface.dispatch_type = DispatchType_Native;
    iface.create_instance = stateful ? create : create_stateless;
    iface.destroy_instance = stateful ? destroy : destroy_nothing;
    iface.dispatch.native.function_count = count;
    iface.dispatch.native.functions = fns;
    AbiError e;
    memset(&e, 0, sizeof e);
    host->register_guest_contract(host, &desc, &iface, &e);
    return e;
}

#ifdef PLUG_NO_INIT /* a typo: the loader finds no polyplug_init */
#define polyplug_init polyplug_initialize
#endif
AbiError polyplug_init(const HostApi *host, const BundleInitContext *ctx);
AbiError polyplug_init(const HostApi *host, const BundleInitContext *ctx) {
    g_host = host;
    int n = ctx->bundle_path.len < 1000 ? (int)ctx->bundle_path.len : 1000;
    snprintf(g_context, sizeof g_context, "%016llx %.*s", (unsigned long long)ctx->bundle_id, n,
             (const char *)ctx->bundle_path.ptr);
    AbiError e;
    memset(&e, 0, sizeof e);
#ifdef PLUG_NO_CONTRACTS
    const bool register_math = false;
#else
    const bool register_math = true;
#endif
    if (register_math)
        e = register_one(host, "guest_contract:native.math@1", "native.math@1", math_fns,
                         (uint32_t)(sizeof math_fns / sizeof math_fns[0]), true);
    if (e.code) return e;
#ifdef PLUG_EXTRA
    e = register_one(host, "guest_contract:native.extra@1", "native.extra@1", extra_fns, 1,
                     false);
    if (e.code) return e;
#else
    (void)extra_fns;
#endif
    e.code = PLUG_INIT_CODE;
#ifdef PLUG_INIT_MSG
    e.message = sv(PLUG_INIT_MSG);
#endif
    return e;
}
