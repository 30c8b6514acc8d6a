/*
 * polyplug_abi.h — the frozen polyplug 0.1.3 C ABI (x86-64 / LP64).
 *
 * Every type, field order, size and enum value here is fixed by upstream 0.1.3:
 * plugins compiled against upstream and Lua guests that ffi.cdef the upstream layout
 * must work unchanged.  Never reorder or resize anything; new host features go in
 * polyplug.h, not here.
 *
 * This file is read three ways: by the C compiler, by cffi (preprocessed with
 * -DPP_CDEF, which hides includes and static assertions), and by the Lua guest SDK
 * (the `abi` module's ffi.cdef is generated from the same preprocessed text).
 * Keep it free of anything cffi or LuaJIT's C parser cannot read outside the
 * PP_CDEF guards: no macros in declarations, no attributes, no initializers.
 */
#ifndef POLYPLUG_ABI_H
#define POLYPLUG_ABI_H

#ifndef PP_CDEF
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#endif

/* ── enumerations (all travel as uint32_t) ─────────────────────────────────── */

enum {
    POLYPLUG_ABI_VERSION = 1
};

typedef enum AbiErrorCode {
    AbiErrorCode_Ok = 0,
    AbiErrorCode_Generic = 1,
    AbiErrorCode_BufferTooSmall = 2,
    AbiErrorCode_Panic = 3,
    AbiErrorCode_NotFound = 4,
    AbiErrorCode_StaleHandle = 5,
    AbiErrorCode_FunctionNotAvailable = 6,
    AbiErrorCode_DuplicateProvider = 7,
    AbiErrorCode_InvalidPointer = 8,
    AbiErrorCode_ReentrantCall = 9,
    AbiErrorCode_HostContractNotFound = 100,
    AbiErrorCode_HostContractVersionMismatch = 101,
    AbiErrorCode_HostContractCallFailed = 102
} AbiErrorCode;

typedef enum LogLevel {
    LogLevel_Error = 1,
    LogLevel_Warn = 2,
    LogLevel_Info = 3,
    LogLevel_Debug = 4,
    LogLevel_Trace = 5
} LogLevel;

typedef enum DispatchType {
    DispatchType_Native = 0,
    DispatchType_VirtualMachine = 1
} DispatchType;

typedef enum Compatibility {
    Compatibility_Strict = 0,
    Compatibility_Relaxed = 1,
    Compatibility_Yolo = 2
} Compatibility;

typedef enum ReloadPhaseType {
    ReloadPhaseType_Preparing = 0,
    ReloadPhaseType_Reloaded = 1,
    ReloadPhaseType_Failed = 2,
    ReloadPhaseType_Unloading = 3
} ReloadPhaseType;

typedef enum SignaturePolicy {
    SignaturePolicy_Off = 0,
    SignaturePolicy_WarnOnly = 1,
    SignaturePolicy_Required = 2
} SignaturePolicy;

typedef enum SupportedLanguage {
    SupportedLanguage_Rust = 0,
    SupportedLanguage_Cpp = 1,
    SupportedLanguage_Dotnet = 2,
    SupportedLanguage_Python = 3,
    SupportedLanguage_Lua = 4,
    SupportedLanguage_JavaScript = 5
} SupportedLanguage;

/* ── primitive helper structs ──────────────────────────────────────────────── */

typedef struct HostApi HostApi;
typedef struct CallArena CallArena;
typedef struct GuestContractInterface GuestContractInterface;
typedef struct HostContractInterface HostContractInterface;

/* Borrowed UTF-8, not NUL-terminated.  {NULL, 0} is the empty view. */
typedef struct StringView {
    const uint8_t *ptr;
    size_t len;
} StringView;

/* Owning buffer; ptr from host->alloc, released with host->free(ptr, cap, 1). */
typedef struct Buffer {
    uint8_t *ptr;
    size_t len;
    size_t cap;
} Buffer;

typedef struct Version {
    uint32_t major;
    uint32_t minor;
    uint32_t patch;
} Version;

typedef struct Ed25519PublicKey {
    uint8_t bytes[32];
} Ed25519PublicKey;

/* `message` is static or runtime-owned; the receiver never frees it. */
typedef struct AbiError {
    uint32_t code;
    StringView message;
} AbiError;

/* ── handles and instances ─────────────────────────────────────────────────── */

/* {0xFFFFFFFF, 0} is the null ("not found") handle. */
typedef struct GuestContractHandle {
    uint32_t index;
    uint32_t generation;
} GuestContractHandle;

/* data == NULL: the stateless / default instance. */
typedef struct GuestContractInstance {
    void *data;
    uint64_t contract_id;
} GuestContractInstance;

typedef struct HostContractInstance {
    void *data;
} HostContractInstance;

typedef struct VmLoaderData {
    void *data;
} VmLoaderData;

/* Caller-owned result arrays: free with host->free(items, len * sizeof(T), align). */
typedef struct ArrayGuestContractHandle {
    GuestContractHandle *items;
    size_t len;
    size_t align;
} ArrayGuestContractHandle;

typedef struct ArrayU64 {
    uint64_t *items;
    size_t len;
    size_t align;
} ArrayU64;

typedef struct DependencyInfo {
    uint64_t contract_id;
    uint32_t min_version;
    uint64_t bundle_id;
} DependencyInfo;

typedef struct ArrayDependencyInfo {
    DependencyInfo *items;
    size_t len;
    size_t align;
} ArrayDependencyInfo;

typedef struct ArrayEd25519PublicKey {
    const Ed25519PublicKey *items;
    size_t len;
    size_t align;
} ArrayEd25519PublicKey;

/* ── dispatch ──────────────────────────────────────────────────────────────── */

typedef void (*VmCallFn)(VmLoaderData loader_data, GuestContractInstance instance,
                         uint32_t fn_id, const void *args, void *out, CallArena *arena,
                         AbiError *out_err);

/* Every entry of NativeDispatch.functions of a guest contract has this type. */
typedef void (*NativeGuestFn)(GuestContractInstance instance, const void *args, void *out,
                              AbiError *out_err);

/* The entries of a native host contract's NativeDispatch.functions: upstream's
 * polyplugc-generated guest callers call them with `instance` = the data of the
 * HostContractInstance that HostApi.get_host_contract returned.  (A typedef only: no
 * layout changes.) */
typedef void (*NativeHostFn)(void *instance, const void *args, void *out, AbiError *out_err);

typedef struct NativeDispatch {
    uint32_t function_count;
    const void *const *functions;
} NativeDispatch;

typedef struct VmDispatch {
    VmCallFn call;
    VmLoaderData loader_data;
} VmDispatch;

typedef union DispatchMechanisms {
    NativeDispatch native;
    VmDispatch vm;
} DispatchMechanisms;

typedef void (*GuestCreateInstanceFn)(VmLoaderData loader_data, const HostApi *host,
                                      const void *args, GuestContractInstance *out_instance);
typedef void (*GuestDestroyInstanceFn)(VmLoaderData loader_data, const HostApi *host,
                                       GuestContractInstance instance);

struct GuestContractInterface {
    uint64_t contract_id;
    Version contract_version;
    uint32_t dispatch_type;
    GuestCreateInstanceFn create_instance;
    GuestDestroyInstanceFn destroy_instance;
    DispatchMechanisms dispatch;
};

typedef void (*HostCreateInstanceFn)(const HostContractInterface *self, const void *args,
                                     HostContractInstance *out);
typedef void (*HostDestroyInstanceFn)(const HostContractInterface *self,
                                      HostContractInstance inst);

struct HostContractInterface {
    uint64_t contract_id;
    Version contract_version;
    bool singleton;
    uint32_t dispatch_type;
    void *runtime;
    void *user_data;
    HostCreateInstanceFn create_instance;
    HostDestroyInstanceFn destroy_instance;
    DispatchMechanisms dispatch;
};

/* ── init and registration ─────────────────────────────────────────────────── */

typedef struct BundleInitContext {
    uint64_t bundle_id;
    StringView bundle_path;
} BundleInitContext;

/* contract_name is the canonical "<name>@<major>"; name is the human plugin name. */
typedef struct PluginDescriptor {
    StringView name;
    StringView contract_name;
    Version version;
} PluginDescriptor;

/* ── runtime configuration and reload notifications ────────────────────────── */

typedef struct ReloadPhase {
    uint32_t phase_type;
    uint64_t bundle_id;
    StringView bundle_name;
    StringView reason;
} ReloadPhase;

typedef void (*OnReloadFn)(void *user_data, const ReloadPhase *phase);
typedef void (*LogFn)(void *user_data, uint32_t level, StringView scope, StringView message);

typedef struct RuntimeConfig {
    uint32_t compatibility;
    bool hot_reload_enabled;
    OnReloadFn on_reload;
    void *on_reload_user_data;
    LogFn log;
    void *log_user_data;
    uint32_t log_max_level;
    uint32_t signature_policy;
    ArrayEd25519PublicKey trusted_keys;
} RuntimeConfig;

/* ── per-call arena ────────────────────────────────────────────────────────── */

typedef struct ArenaOverflowBlock {
    struct ArenaOverflowBlock *next;
    size_t capacity;
    size_t used;
} ArenaOverflowBlock;

struct CallArena {
    uint8_t *cur;
    uint8_t *end;
    uint8_t *base;
    const HostApi *host;
    ArenaOverflowBlock *first_overflow;
};

/* ── the host API table (21 function pointers + reserved, 184 bytes) ──────── */

struct HostApi {
    void *runtime;
    void (*register_guest_contract)(const HostApi *self, const PluginDescriptor *descriptor,
                                    const GuestContractInterface *iface, AbiError *out_err);
    uint8_t *(*alloc)(const HostApi *self, size_t size, size_t align);
    void (*free)(const HostApi *self, uint8_t *ptr, size_t size, size_t align);
    GuestContractHandle (*find_guest_contract)(const HostApi *self, uint64_t contract_id,
                                               uint32_t min_major);
    ArrayGuestContractHandle (*find_all_guest_contracts)(const HostApi *self,
                                                         uint64_t contract_id,
                                                         uint32_t min_major);
    const GuestContractInterface *(*resolve_guest_contract)(const HostApi *self,
                                                            GuestContractHandle handle);
    HostContractInstance (*get_host_contract)(const HostApi *self, uint64_t contract_id,
                                              uint32_t packed_min_version);
    const HostContractInterface *(*resolve_host_contract_interface)(
        const HostApi *self, uint64_t contract_id, uint32_t packed_min_version);
    ArrayU64 (*list_bundles)(const HostApi *self);
    ArrayDependencyInfo (*get_dependencies)(const HostApi *self);
    void (*load_bundle)(const HostApi *self, const uint8_t *path, size_t path_len,
                        AbiError *out_err);
    void (*reload_bundle)(const HostApi *self, const uint8_t *path, size_t path_len,
                          AbiError *out_err);
    void (*register_host_contract)(const HostApi *self, const HostContractInterface *iface,
                                   AbiError *out_err);
    void (*register_loader)(const HostApi *self, void *loader_ptr, AbiError *out_err);
    size_t (*get_last_error)(const HostApi *self, uint8_t *buf, size_t buf_len);
    size_t (*get_error_len)(const HostApi *self);
    void (*unload_bundle)(const HostApi *self, uint64_t bundle_id, AbiError *out_err);
    void (*log)(const HostApi *self, uint32_t level, StringView scope, StringView message);
    void (*create_guest_instance)(const HostApi *self, const GuestContractInterface *iface,
                                  const void *args, GuestContractInstance *out_instance);
    void (*destroy_guest_instance)(const HostApi *self, const GuestContractInterface *iface,
                                   GuestContractInstance instance);
    const uint64_t *(*revision_counter)(const HostApi *self);
    const void *reserved;
};

/* ── layout checks: the sizes and offsets upstream 0.1.3 asserts ───────────── */
#ifndef PP_CDEF
#define PP_ABI_ASSERT_SIZE(T, n) _Static_assert(sizeof(T) == (n), #T " must be " #n " bytes")
#define PP_ABI_ASSERT_OFF(T, f, n) \
    _Static_assert(offsetof(T, f) == (n), #T "." #f " must sit at offset " #n)
PP_ABI_ASSERT_SIZE(StringView, 16);
PP_ABI_ASSERT_SIZE(Buffer, 24);
PP_ABI_ASSERT_SIZE(Version, 12);
PP_ABI_ASSERT_SIZE(Ed25519PublicKey, 32);
PP_ABI_ASSERT_SIZE(AbiError, 24);
PP_ABI_ASSERT_OFF(AbiError, message, 8);
PP_ABI_ASSERT_SIZE(GuestContractHandle, 8);
PP_ABI_ASSERT_SIZE(GuestContractInstance, 16);
PP_ABI_ASSERT_SIZE(HostContractInstance, 8);
PP_ABI_ASSERT_SIZE(VmLoaderData, 8);
PP_ABI_ASSERT_SIZE(ArrayGuestContractHandle, 24);
PP_ABI_ASSERT_SIZE(ArrayU64, 24);
PP_ABI_ASSERT_SIZE(DependencyInfo, 24);
PP_ABI_ASSERT_OFF(DependencyInfo, bundle_id, 16);
PP_ABI_ASSERT_SIZE(NativeDispatch, 16);
PP_ABI_ASSERT_SIZE(VmDispatch, 16);
PP_ABI_ASSERT_SIZE(DispatchMechanisms, 16);
PP_ABI_ASSERT_SIZE(GuestContractInterface, 56);
PP_ABI_ASSERT_OFF(GuestContractInterface, contract_version, 8);
PP_ABI_ASSERT_OFF(GuestContractInterface, dispatch_type, 20);
PP_ABI_ASSERT_OFF(GuestContractInterface, create_instance, 24);
PP_ABI_ASSERT_OFF(GuestContractInterface, destroy_instance, 32);
PP_ABI_ASSERT_OFF(GuestContractInterface, dispatch, 40);
PP_ABI_ASSERT_SIZE(HostContractInterface, 80);
PP_ABI_ASSERT_OFF(HostContractInterface, singleton, 20);
PP_ABI_ASSERT_OFF(HostContractInterface, dispatch_type, 24);
PP_ABI_ASSERT_OFF(HostContractInterface, runtime, 32);
PP_ABI_ASSERT_OFF(HostContractInterface, user_data, 40);
PP_ABI_ASSERT_OFF(HostContractInterface, create_instance, 48);
PP_ABI_ASSERT_OFF(HostContractInterface, destroy_instance, 56);
PP_ABI_ASSERT_OFF(HostContractInterface, dispatch, 64);
PP_ABI_ASSERT_SIZE(BundleInitContext, 24);
PP_ABI_ASSERT_SIZE(PluginDescriptor, 48);
PP_ABI_ASSERT_OFF(PluginDescriptor, version, 32);
PP_ABI_ASSERT_SIZE(ReloadPhase, 48);
PP_ABI_ASSERT_OFF(ReloadPhase, bundle_name, 16);
PP_ABI_ASSERT_OFF(ReloadPhase, reason, 32);
PP_ABI_ASSERT_SIZE(RuntimeConfig, 72);
PP_ABI_ASSERT_OFF(RuntimeConfig, hot_reload_enabled, 4);
PP_ABI_ASSERT_OFF(RuntimeConfig, on_reload, 8);
PP_ABI_ASSERT_OFF(RuntimeConfig, log, 24);
PP_ABI_ASSERT_OFF(RuntimeConfig, log_max_level, 40);
PP_ABI_ASSERT_OFF(RuntimeConfig, signature_policy, 44);
PP_ABI_ASSERT_OFF(RuntimeConfig, trusted_keys, 48);
PP_ABI_ASSERT_SIZE(ArenaOverflowBlock, 24);
PP_ABI_ASSERT_SIZE(CallArena, 40);
PP_ABI_ASSERT_OFF(CallArena, host, 24);
PP_ABI_ASSERT_OFF(CallArena, first_overflow, 32);
PP_ABI_ASSERT_SIZE(HostApi, 184);
PP_ABI_ASSERT_OFF(HostApi, load_bundle, 88);
PP_ABI_ASSERT_OFF(HostApi, get_last_error, 120);
PP_ABI_ASSERT_OFF(HostApi, log, 144);
PP_ABI_ASSERT_OFF(HostApi, revision_counter, 168);
PP_ABI_ASSERT_OFF(HostApi, reserved, 176);
#undef PP_ABI_ASSERT_SIZE
#undef PP_ABI_ASSERT_OFF
#endif /* PP_CDEF */

#endif /* POLYPLUG_ABI_H */
