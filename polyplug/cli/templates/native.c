/*
 * $name — a native polyplug bundle: contract $contract@1, written in C.
 *
 *   fn 0  hello(name: string) -> string     "Hello, <name>!"
 *
 * Build:  make          (cc -shared -fPIC -O2 -o lib$module.so $module.c)
 *
 * Every function is called as fn(self, args, out, err):
 *   self  the instance create_instance made (self.data is NULL for a call without one)
 *   args  the arguments, laid out like a C struct of the declared types (a string is a
 *         StringView: pointer and length, not NUL-terminated)
 *   out   where the result goes
 *   err   set err->code (and err->message, text that stays valid) to fail the call
 * Native code runs as it is: no time limit stops it, and a crash here is a crash of
 * the host process.
 */
#include <string.h>

#include "polyplug_abi.h"

#define CONTRACT_ID ${contract_id}ULL /* guest_contract_id("$contract", 1) */

/* Statics are per load (the loader opens its own copy of the library for each load),
 * but several threads may call at once. */
static const HostApi *host;

static StringView text(const char *s) {
    StringView v = {(const uint8_t *)s, strlen(s)};
    return v;
}

typedef struct greeter {
    char greeting[256];
} greeter;

static void hello(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    /* A string result must outlive the call: the instance's buffer, or one per thread
     * for calls without an instance (valid until that thread's next hello). */
    static _Thread_local char per_thread[256];
    char *buf = self.data ? ((greeter *)self.data)->greeting : per_thread;
    StringView name = *(const StringView *)args;
    if (name.len == 0) name = text("world");
    if (name.len > 200) {
        err->code = AbiErrorCode_Generic;
        err->message = text("hello: the name is longer than 200 bytes");
        return;
    }
    memcpy(buf, "Hello, ", 7);
    memcpy(buf + 7, name.ptr, name.len);
    memcpy(buf + 7 + name.len, "!", 1);
    StringView greeting = {(const uint8_t *)buf, name.len + 8};
    host->log(host, LogLevel_Debug, text("guest.$module"), greeting);
    *(StringView *)out = greeting;
}

static void create(VmLoaderData unused, const HostApi *h, const void *args,
                   GuestContractInstance *out) {
    (void)unused;
    (void)args;
    out->data = h->alloc(h, sizeof(greeter), 8); /* NULL: creation failed */
    out->contract_id = CONTRACT_ID;
}

static void destroy(VmLoaderData unused, const HostApi *h, GuestContractInstance inst) {
    (void)unused;
    if (inst.data) h->free(h, inst.data, sizeof(greeter), 8);
}

uint32_t polyplug_abi_version(void);
uint32_t polyplug_abi_version(void) { return POLYPLUG_ABI_VERSION; }

AbiError polyplug_init(const HostApi *h, const BundleInitContext *ctx);
AbiError polyplug_init(const HostApi *h, const BundleInitContext *ctx) {
    (void)ctx; /* ctx->bundle_id, ctx->bundle_path: valid during this call only */
    host = h;
    static const void *const functions[] = {(const void *)hello};
    PluginDescriptor desc = {text("$name"), text("$contract@1"), {1, 0, 0}};
    GuestContractInterface iface; /* registration copies it */
    memset(&iface, 0, sizeof iface);
    iface.contract_id = CONTRACT_ID;
    iface.contract_version = desc.version;
    iface.dispatch_type = DispatchType_Native;
    iface.create_instance = create;
    iface.destroy_instance = destroy;
    iface.dispatch.native.function_count = 1;
    iface.dispatch.native.functions = functions;
    AbiError err = {0, {NULL, 0}};
    host->register_guest_contract(host, &desc, &iface, &err);
    return err; /* not Ok: the load fails and nothing stays registered */
}
