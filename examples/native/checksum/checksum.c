/*
 * checksum — a native polyplug bundle: contract example.checksum@1, written in C.
 *
 *   fn 0  fnv1a(data: string) -> u64     FNV-1a 64 of the bytes
 *   fn 1  crc32(data: string) -> u32     CRC-32 (the one zlib and PNG use)
 *   fn 2  hex(value: u64) -> string      16 lowercase hex digits
 *   fn 3  update(data: string) -> u64    on an instance: FNV-1a 64 of all data fed to it
 *
 * Build:  make      (cc -shared -fPIC with polyplug.get_include() on the include path)
 * Try:    python -m polyplug call examples/native/checksum example.checksum@1 fnv1a hello
 *
 * Every function has the native slot signature
 *   void fn(GuestContractInstance self, const void *args, void *out, AbiError *err)
 * and reads its arguments from `args` laid out like a C struct of the declared types (a
 * string is a StringView), writes its result to `out`, and reports a failure by setting
 * err->code (and err->message, a string that stays valid).
 */
#include <stdio.h>
#include <string.h>

#include "polyplug_abi.h"

/* One load of this library serves one runtime (the loader opens a copy per load), so
 * statics are per runtime; still, functions may run on several threads at once. */
static const HostApi *host;

static StringView text(const char *s) {
    StringView v = {(const uint8_t *)s, strlen(s)};
    return v;
}

static uint64_t fnv1a_step(uint64_t h, StringView data) {
    for (size_t i = 0; i < data.len; i++) h = (h ^ data.ptr[i]) * 0x00000100000001b3ULL;
    return h;
}

static void fnv1a(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    (void)self;
    (void)err;
    *(uint64_t *)out = fnv1a_step(0xcbf29ce484222325ULL, *(const StringView *)args);
}

static void crc32(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    (void)self;
    (void)err;
    const StringView *data = args;
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < data->len; i++) {
        crc ^= data->ptr[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
    }
    *(uint32_t *)out = ~crc;
}

static void hex(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    (void)self;
    (void)err;
    /* A string result must outlive the call: a per-thread buffer stays valid until this
     * thread's next call of hex (the Python call layer copies it at once). */
    static _Thread_local char buf[17];
    snprintf(buf, sizeof buf, "%016llx", (unsigned long long)*(const uint64_t *)args);
    *(StringView *)out = text(buf);
}

/* Instances: create_instance allocates the running state, destroy_instance frees it. */
typedef struct running {
    uint64_t hash;
} running;

static void update(GuestContractInstance self, const void *args, void *out, AbiError *err) {
    running *r = self.data;
    if (!r) {
        err->code = AbiErrorCode_FunctionNotAvailable;
        err->message = text("update needs an instance (create one first)");
        return;
    }
    r->hash = fnv1a_step(r->hash, *(const StringView *)args);
    *(uint64_t *)out = r->hash;
}

static void create(VmLoaderData unused, const HostApi *h, const void *args,
                   GuestContractInstance *out) {
    (void)unused;
    (void)args;
    running *r = (running *)h->alloc(h, sizeof *r, 8);
    if (r) r->hash = 0xcbf29ce484222325ULL;
    out->data = r; /* NULL reports the failure */
}

static void destroy(VmLoaderData unused, const HostApi *h, GuestContractInstance inst) {
    (void)unused;
    if (inst.data) h->free(h, inst.data, sizeof(running), 8);
}

/* ── the two symbols the native loader looks for ──────────────────────────── */

uint32_t polyplug_abi_version(void);
uint32_t polyplug_abi_version(void) { return POLYPLUG_ABI_VERSION; }

AbiError polyplug_init(const HostApi *h, const BundleInitContext *ctx);
AbiError polyplug_init(const HostApi *h, const BundleInitContext *ctx) {
    (void)ctx;
    host = h;
    static const void *const functions[] = {(const void *)fnv1a, (const void *)crc32,
                                            (const void *)hex, (const void *)update};
    PluginDescriptor desc = {text("checksum"), text("example.checksum@1"), {1, 0, 0}};
    GuestContractInterface iface; /* registration copies it */
    memset(&iface, 0, sizeof iface);
    /* guest_contract_id("example.checksum", 1) = FNV-1a 64 of this text */
    iface.contract_id = fnv1a_step(0xcbf29ce484222325ULL,
                                   text("guest_contract:example.checksum@1"));
    iface.contract_version = desc.version;
    iface.dispatch_type = DispatchType_Native;
    iface.create_instance = create;
    iface.destroy_instance = destroy;
    iface.dispatch.native.function_count = 4;
    iface.dispatch.native.functions = functions;
    AbiError err = {0, {NULL, 0}};
    host->register_guest_contract(host, &desc, &iface, &err);
    if (err.code == 0)
        host->log(host, LogLevel_Debug, text("guest.checksum"), text("example.checksum@1 ready"));
    return err; /* non-zero: the load fails and nothing stays registered */
}
