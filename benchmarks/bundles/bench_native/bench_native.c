/*
 * bench.native@1: the benchmark's native bundle.  fn 0 add(u32, u32) -> u32, fn 1 no-op:
 * the same two functions as the Lua bench bundle, as C.
 */
#include <string.h>

#include "polyplug_abi.h"

static void add(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    (void)self;
    (void)err;
    const uint32_t *a = args;
    *(uint32_t *)out = a[0] + a[1];
}

static void noop(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    (void)self;
    (void)args;
    (void)out;
    (void)err;
}

static void create(VmLoaderData ld, const HostApi *h, const void *a, GuestContractInstance *o) {
    (void)ld;
    (void)h;
    (void)a;
    o->data = NULL;
}

static void destroy(VmLoaderData ld, const HostApi *h, GuestContractInstance i) {
    (void)ld;
    (void)h;
    (void)i;
}

uint32_t polyplug_abi_version(void);
uint32_t polyplug_abi_version(void) { return POLYPLUG_ABI_VERSION; }

AbiError polyplug_init(const HostApi *host, const BundleInitContext *ctx);
AbiError polyplug_init(const HostApi *host, const BundleInitContext *ctx) {
    (void)ctx;
    static const void *const fns[] = {(const void *)add, (const void *)noop};
    PluginDescriptor desc = {{(const uint8_t *)"bench_native", 12},
                             {(const uint8_t *)"bench.native@1", 14}, {1, 0, 0}};
    GuestContractInterface iface;
    memset(&iface, 0, sizeof iface);
    iface.contract_id = 0xcf3fa4791e2f02dcULL; /* guest_contract_id("bench.native", 1) */
    iface.contract_version = desc.version;
    iface.dispatch_type = DispatchType_Native;
    iface.create_instance = create;
    iface.destroy_instance = destroy;
    iface.dispatch.native.function_count = 2;
    iface.dispatch.native.functions = fns;
    AbiError err = {0, {NULL, 0}};
    host->register_guest_contract(host, &desc, &iface, &err);
    return err;
}
