/*
 * polyplug.h — the host library's public C API (the `pp_` layer) on top of the
 * frozen ABI in polyplug_abi.h.
 *
 * This header is the single truth for the C compiler and for cffi: the Python build
 * preprocesses it with -DPP_CDEF and feeds the result to cdef().  Conventions:
 *
 *   - Fallible functions return a pp_status (PP_OK == 0) and, when given a non-NULL
 *     pp_error*, fill it with the status, a full message and structured fields.
 *     A pp_error is written on failure only; initialise it with pp_error_clear().
 *   - Strings crossing this API are StringView (UTF-8, not NUL-terminated) unless a
 *     parameter says `const char *`.
 *   - Objects have one constructor and one NULL-safe destructor (`pp_x_new/free`).
 *   - Ownership: functions that take ownership say so in their comment.
 *   - Thread safety: every pp_runtime_* / pp_registry_* function may be called from
 *     any thread.  Log and reload callbacks are never invoked with a runtime lock held.
 */
#ifndef POLYPLUG_H
#define POLYPLUG_H

#include "polyplug_abi.h"

#ifndef PP_CDEF
#define PP_API __attribute__((visibility("default")))
#else
#define PP_API
#endif

/* ── status codes and errors ───────────────────────────────────────────────── */

typedef enum pp_status {
#define PP_ERRDEF(name, pyclass, text) PP_##name,
#include "../pp_errors.def"
#undef PP_ERRDEF
    PP_STATUS_COUNT
} pp_status;

/*
 * A failure report.  `message` is the full display text; the other fields carry the
 * structured parts (which ones are set depends on the status; see _errors.py):
 * `bundle` the bundle/contract/path the error is about, `detail` the inner error
 * text (e.g. the Lua message), `aux` a short extra (loader name, source kind).
 */
typedef struct pp_error {
    int32_t status;
    uint32_t abi_code;
    char bundle[256];
    char aux[128];
    char detail[2048];
    char message[3072];
} pp_error;

PP_API void pp_error_clear(pp_error *err);
/* Python class name for a status ("InitFailed"); "RuntimeError" for unknown codes. */
PP_API const char *pp_status_exception(int32_t status);
/* Symbolic name for a status ("PP_ERR_INIT_FAILED"). */
PP_API const char *pp_status_name(int32_t status);

/* ── library facts ─────────────────────────────────────────────────────────── */

PP_API const char *pp_version(void);
PP_API const char *pp_luajit_version(void);
PP_API uint64_t pp_fnv1a64(const uint8_t *data, size_t len);

/* ── manifests and sources (what a loader receives) ────────────────────────── */

typedef struct pp_dependency {
    StringView contract;
    uint64_t contract_id;  /* 0 grants nothing (upstream rule) */
    uint32_t min_version;  /* min_version string parsed as a bare u32 (upstream rule) */
    uint64_t bundle_id;    /* 0 = any provider */
} pp_dependency;

/*
 * A bundle's files held in memory (pp_fileset.c): the exact bytes a host read and
 * verified, so that what runs is what was checked.  Paths are relative to the bundle
 * directory ("lib/util.lua"); pp_fileset_add copies the bytes.  Attaching a fileset to
 * a manifest document seals it: from then on it is immutable and may be shared by
 * threads.  Reference counted: pp_fileset_new returns one reference.
 */
typedef struct pp_fileset pp_fileset;

PP_API pp_fileset *pp_fileset_new(void);
PP_API int32_t pp_fileset_add(pp_fileset *fs, StringView path, StringView data, pp_error *err);
PP_API pp_fileset *pp_fileset_retain(pp_fileset *fs);
PP_API void pp_fileset_release(pp_fileset *fs);
PP_API size_t pp_fileset_len(const pp_fileset *fs);
/* The bytes of `path` (in normal form or not: "./a/../b.lua" finds "b.lua"); valid
 * while the caller holds a reference. */
PP_API bool pp_fileset_get(const pp_fileset *fs, StringView path, StringView *data);

/* A parsed and validated manifest.  Borrowed by every call that takes it. */
typedef struct pp_manifest {
    uint64_t id;
    StringView name;
    StringView loader;
    StringView file;
    StringView path; /* the bundle directory */
    StringView version_text;
    Version version;
    const StringView *provides;
    size_t provides_len;
    const pp_dependency *dependencies;
    size_t dependencies_len;
    bool needs_reinit_on_dep_reload;
    /* The bundle's verified files, or NULL.  When set, a loader reads the entry file
     * and every module from here and nothing from `path` (signed bundles). */
    pp_fileset *files;
} pp_manifest;

typedef enum pp_source_kind {
    PP_SOURCE_PATH = 0,  /* data = bundle directory; entry = manifest.file inside it */
    PP_SOURCE_CODE = 1,  /* data = Lua source text */
    PP_SOURCE_BYTES = 2  /* data = raw bytes, must be UTF-8 */
} pp_source_kind;

typedef struct pp_source {
    uint32_t kind;
    StringView data;
} pp_source;

/* ── loaders (our C interface; upstream's is a Rust trait object) ──────────── */

typedef struct pp_runtime pp_runtime;
typedef struct pp_loader pp_loader;

typedef struct pp_loader_vtable {
    const char *name; /* matched against manifest `loader`; static storage */
    bool supports_hot_reload;
    /* Acquire the source, run the guest's init inside the bundle's init window
     * (pp_runtime_begin_init / end_init) and register its contracts.  On failure
     * nothing it registered may stay registered. */
    int32_t (*load)(void *self, pp_runtime *rt, const pp_manifest *m, const pp_source *src,
                    pp_error *err);
    /* Re-read the bundle from m->path and register the new contracts; the runtime
     * has opened a reload window, so registrations are pending until it commits. */
    int32_t (*reload)(void *self, pp_runtime *rt, const pp_manifest *m, pp_error *err);
    /* Reclaim everything held for the bundle; its contracts are already retired. */
    void (*unload)(void *self, pp_runtime *rt, uint64_t bundle_id);
    /* Bytes the bundle's guest heap holds, or -1 (may be NULL). */
    int64_t (*memory)(void *self, pp_runtime *rt, uint64_t bundle_id);
    /* Free `self`; called when the last reference to the loader goes away. */
    void (*destroy)(void *self);
} pp_loader_vtable;

/* Wrap a loader implementation; returns a reference count of 1 (NULL on OOM).
 * `vtable` must outlive the loader. */
PP_API pp_loader *pp_loader_new(const pp_loader_vtable *vtable, void *self);
PP_API pp_loader *pp_loader_retain(pp_loader *loader);
PP_API void pp_loader_release(pp_loader *loader);
PP_API const char *pp_loader_name(const pp_loader *loader);
PP_API bool pp_loader_supports_hot_reload(const pp_loader *loader);
/* Run the loader's load directly against `rt` (no manifest bookkeeping). */
PP_API int32_t pp_loader_load(pp_loader *loader, pp_runtime *rt, const pp_manifest *m,
                              const pp_source *src, pp_error *err);

/* ── the LuaJIT loader ─────────────────────────────────────────────────────── */

typedef enum pp_lua_sandbox {
    PP_LUA_SANDBOX_NONE = 0,      /* every standard library, like upstream */
    PP_LUA_SANDBOX_RESTRICTED = 1 /* no io, debug, os (but clocks), loadlib, C modules */
} pp_lua_sandbox;

typedef struct pp_lua_config {
    uint64_t call_timeout_ns; /* default per-call time limit; 0 = none */
    uint64_t memory_limit;    /* bytes a bundle's VM may allocate beyond start-up; 0 = none */
    uint32_t sandbox;         /* pp_lua_sandbox */
} pp_lua_config;

/* A new Lua loader ("lua"); cfg may be NULL (no limits, full libraries).
 * Reference count 1. */
PP_API pp_loader *pp_lua_loader_new(const pp_lua_config *cfg);

/* ── the native loader ─────────────────────────────────────────────────────── */

/*
 * Loads C shared-library bundles (`loader = "native"`): the artifact exports
 *   uint32_t polyplug_abi_version(void);            returning POLYPLUG_ABI_VERSION
 *   AbiError polyplug_init(const HostApi *host, const BundleInitContext *ctx);
 * and registers NativeDispatch contracts from init.  Every load and reload opens its
 * own copy of the artifact (so a reload runs the new build, and each load has its own
 * statics); a library is closed only by pp_runtime_free, because interface pointers
 * callers cached point straight into it.  Native code cannot be interrupted: call
 * timeouts and memory limits do not apply to it.
 */
typedef struct pp_native_config {
    /* Directory for the per-load copies of the artifacts (a private subdirectory is
     * made per load and removed when the library is closed); NULL = $TMPDIR or /tmp.
     * It must allow executable mappings (not mounted noexec). */
    const char *copy_dir;
} pp_native_config;

/* A new native loader ("native"); cfg may be NULL.  Reference count 1. */
PP_API pp_loader *pp_native_loader_new(const pp_native_config *cfg);

/* ── call limits: timeouts and cancellation ────────────────────────────────── */

/* polyplug-for-Python's own AbiError codes (runtime-reserved range 0-255). */
enum {
    PP_ABI_CALL_TIMEOUT = 200,   /* the call ran past its time limit and was stopped */
    PP_ABI_CALL_CANCELLED = 201, /* a cancel token stopped the call */
    PP_ABI_OUT_OF_MEMORY = 202   /* the bundle's memory limit stopped the call */
};

/* A cancel token: trigger it from any thread to stop calls that carry it. */
typedef struct pp_cancel pp_cancel;
PP_API pp_cancel *pp_cancel_new(void);
PP_API void pp_cancel_free(pp_cancel *token);
PP_API void pp_cancel_request(pp_cancel *token);
PP_API void pp_cancel_clear(pp_cancel *token);
PP_API bool pp_cancel_requested(const pp_cancel *token);

/* Limits for the calls this thread makes into Lua bundles from now on: timeout_ns
 * overrides the loader's default when non-zero; `cancel` may be NULL.  (C hosts using
 * the raw vm.call set these; pp_call_frame carries its own.) */
PP_API void pp_set_call_limits(uint64_t timeout_ns, pp_cancel *cancel);

/* ── runtime ───────────────────────────────────────────────────────────────── */

/* Upstream's two exported entry points.  NULL config = defaults. */
PP_API const HostApi *polyplug_runtime_create(const RuntimeConfig *config);
PP_API void polyplug_runtime_destroy(const HostApi *host);

/* Same as polyplug_runtime_create, with a reason on failure.  NULL config = defaults
 * (Strict, no hot reload, stderr logging at Warn). */
PP_API pp_runtime *pp_runtime_new(const RuntimeConfig *config, pp_error *err);
/*
 * Close a runtime: from now on every load, reload, unload and call fails
 * (RuntimeClosed / StaleHandle); every bundle is unloaded and its VM closed.  A VM
 * with a call still running in it closes when that call returns: close waits for
 * that at most `wait_ns` and then fails with RuntimeBusy (the runtime stays closed;
 * call it again to wait again).  Idempotent.
 */
PP_API int32_t pp_runtime_close(pp_runtime *rt, uint64_t wait_ns, pp_error *err);
/* Close (waiting up to 10 s for running calls) and free the runtime.  NULL-safe.
 * Only when calls are still running after that is the memory left allocated: guest
 * code inside them may still use the runtime. */
PP_API void pp_runtime_free(pp_runtime *rt);
PP_API const HostApi *pp_runtime_host(pp_runtime *rt);
PP_API pp_runtime *pp_runtime_from_host(const HostApi *host);
PP_API bool pp_runtime_hot_reload_enabled(const pp_runtime *rt);
PP_API uint32_t pp_runtime_compatibility(const pp_runtime *rt);

/* Register a loader under its name; the runtime takes a reference of its own. */
PP_API int32_t pp_runtime_add_loader(pp_runtime *rt, pp_loader *loader, pp_error *err);

/* Load a bundle from an already parsed, validated manifest (upstream §8 steps 4-10). */
PP_API int32_t pp_runtime_load(pp_runtime *rt, const pp_manifest *m, const pp_source *src,
                               pp_error *err);
/* Hot-reload a loaded bundle from disk (upstream §9), firing the reload phases. */
PP_API int32_t pp_runtime_reload(pp_runtime *rt, const pp_manifest *m, pp_error *err);
/* Unload a bundle (upstream §10). */
PP_API int32_t pp_runtime_unload(pp_runtime *rt, uint64_t bundle_id, pp_error *err);

/*
 * HostApi.load_bundle/reload_bundle take a path.  Without hooks they run
 * pp_runtime_load_path / pp_runtime_reload_path; the Python driver installs hooks so a
 * bundle a guest loads gets the same bookkeeping (signatures, signature policy) as one
 * Python loads.  A hook must not raise or longjmp.
 */
typedef int32_t (*pp_path_hook)(void *user_data, pp_runtime *rt, StringView path,
                                pp_error *err);
PP_API void pp_runtime_set_path_hooks(pp_runtime *rt, pp_path_hook load, pp_path_hook reload,
                                      void *user_data);

/* ── manifest.toml: reading and validation (pp_manifest.c, pp_toml.c) ────────── */

/*
 * A manifest document owns everything its pp_manifest view points at; free it with
 * pp_manifest_doc_free.  Reading type-checks every key the runtime knows; validation
 * (upstream's steps, the version, and the entry file staying inside the bundle
 * directory with symlinks resolved) is a separate call, and so are the checks whose
 * outcome depends on the runtime's compatibility mode:
 *   PP_CHECK_KEYS             unknown keys (with a did-you-mean) and signature tables
 *                             for contracts `provides` does not list;
 *   PP_CHECK_FUNCTION_COUNTS  a [function_count] entry for every `provides` entry.
 * Strict fails on the first finding, Relaxed records warnings (pp_manifest_doc_warning),
 * Yolo checks nothing (upstream 0.1.3 ignores unknown keys).
 */
typedef struct pp_manifest_doc pp_manifest_doc;

enum { PP_CHECK_KEYS = 1, PP_CHECK_FUNCTION_COUNTS = 2 };
/* pp_manifest_doc_parse flag: the text was generated from a manifest built in code, so
 * messages name no line and column and errors name the bundle directory. */
enum { PP_MANIFEST_GENERATED = 1 };

/* Read `<path>/manifest.toml`; `path` is the bundle directory or a file inside it. */
PP_API int32_t pp_manifest_doc_read(StringView path, pp_manifest_doc **out, pp_error *err);
/* Parse manifest text for the bundle directory `dir` (nothing is read from disk): the
 * text of `<dir>/manifest.toml` as a host read it, or generated (see the flag). */
PP_API int32_t pp_manifest_doc_parse(StringView text, StringView dir, uint32_t flags,
                                     pp_manifest_doc **out, pp_error *err);
PP_API void pp_manifest_doc_free(pp_manifest_doc *doc);
PP_API const pp_manifest *pp_manifest_doc_view(const pp_manifest_doc *doc);
/* Upstream's validation steps 1-7, then the version, then the entry path. */
PP_API int32_t pp_manifest_doc_validate(pp_manifest_doc *doc, pp_error *err);
/* Only the entry-path containment check (it depends on other files, which change). */
PP_API int32_t pp_manifest_doc_check_entry(const pp_manifest_doc *doc, pp_error *err);
/* PP_CHECK_* checks under a compatibility mode; replaces the recorded warnings. */
PP_API int32_t pp_manifest_doc_check(pp_manifest_doc *doc, uint32_t checks,
                                     uint32_t compatibility, pp_error *err);
PP_API size_t pp_manifest_doc_warning_count(const pp_manifest_doc *doc);
PP_API const char *pp_manifest_doc_warning(const pp_manifest_doc *doc, size_t i);
/* Every field of the manifest (the signature tables too) as one JSON object, for the
 * Python driver; valid until the document is freed. */
PP_API const char *pp_manifest_doc_json(pp_manifest_doc *doc, size_t *len);
/* Does the file the document was read from still have the identity it had then (same
 * inode, size, modification and change times)?  False for a parsed text.  Lets a host
 * keep documents and re-read only what changed. */
PP_API bool pp_manifest_doc_is_current(const pp_manifest_doc *doc);
/* Load the bundle from `files` instead of its directory (see pp_fileset): the
 * document takes a reference and seals the set; NULL detaches.  The manifest text
 * should come from the same set (pp_manifest_doc_parse of its manifest.toml). */
PP_API void pp_manifest_doc_set_files(pp_manifest_doc *doc, pp_fileset *files);

/* The key checks under the runtime's mode (Relaxed warnings go to its log), then
 * validation, then the host contracts the manifest requires ([[dependency]] kind =
 * "host_contract": PP_ERR_HOST_CONTRACT_MISSING unless provided at that version).  These runtime entry points leave the document as it is, so threads may
 * share one (the doc API above is for one thread at a time). */
PP_API int32_t pp_runtime_check_manifest(pp_runtime *rt, pp_manifest_doc *doc, pp_error *err);
/* The function-count check under the runtime's mode, then pp_runtime_load with the
 * document's manifest; `src` NULL loads from the bundle directory. */
PP_API int32_t pp_runtime_load_manifest(pp_runtime *rt, pp_manifest_doc *doc,
                                        const pp_source *src, pp_error *err);
/* Read, check and load the bundle at `path` (HostApi.load_bundle without a hook).
 * A C host cannot verify bundle signatures: with SignaturePolicy_Required this fails,
 * with WarnOnly it logs a warning. */
PP_API int32_t pp_runtime_load_path(pp_runtime *rt, StringView path, pp_error *err);
/* Read, check and hot-reload the bundle at `path`; a failure before the reload fires a
 * Failed phase, like the runtime's own failures. */
PP_API int32_t pp_runtime_reload_path(pp_runtime *rt, StringView path, pp_error *err);

/* Any TOML document as JSON (tables in document order): the parser on its own, for
 * tests and tools.  Free the text with pp_toml_json_free. */
PP_API int32_t pp_toml_to_json(StringView text, char **json, size_t *len, pp_error *err);
PP_API void pp_toml_json_free(char *json);

/* Fire a Failed reload phase for a reload that failed before reaching the runtime
 * (e.g. the new manifest did not validate). */
PP_API void pp_runtime_notify_reload_failed(pp_runtime *rt, uint64_t bundle_id,
                                            StringView bundle_name, StringView reason);

/* Emit a record through the runtime's log funnel (level clamped to 1..5). */
PP_API void pp_runtime_log(pp_runtime *rt, uint32_t level, StringView scope,
                           StringView message);

/* The init-bundle attribution window: registrations made by this thread between
 * begin and end belong to `bundle_id`.  Windows nest (a stack per thread). */
PP_API int32_t pp_runtime_begin_init(pp_runtime *rt, uint64_t bundle_id, pp_error *err);
PP_API void pp_runtime_end_init(pp_runtime *rt);

/* Bytes held by a loaded bundle's guest heap (Lua GC heap); -1 if unknown. */
PP_API int64_t pp_runtime_bundle_memory(pp_runtime *rt, uint64_t bundle_id);

/* Bundles currently loaded: fills up to `cap` ids (in load order), returns the total
 * count. */
PP_API size_t pp_runtime_bundle_ids(pp_runtime *rt, uint64_t *out, size_t cap);
/* Is `bundle_id` one of them? */
PP_API bool pp_runtime_has_bundle(pp_runtime *rt, uint64_t bundle_id);

/* ── registry ──────────────────────────────────────────────────────────────── */

PP_API int32_t pp_registry_find(pp_runtime *rt, uint64_t contract_id, uint32_t min_major,
                                GuestContractHandle *out, pp_error *err);
/* Like pp_registry_find, but only slots owned by `bundle_id`. */
PP_API int32_t pp_registry_find_by_bundle(pp_runtime *rt, uint64_t bundle_id,
                                          uint64_t contract_id, uint32_t min_major,
                                          GuestContractHandle *out, pp_error *err);
PP_API int32_t pp_registry_resolve(pp_runtime *rt, GuestContractHandle handle,
                                   const GuestContractInterface **out, pp_error *err);
/* Retire every slot owned by `bundle_id` (generation bump); returns how many. */
PP_API int32_t pp_registry_invalidate_bundle(pp_runtime *rt, uint64_t bundle_id,
                                             size_t *retired, pp_error *err);
/* Facts about a live slot, for listings: owner bundle and descriptor names. */
typedef struct pp_slot_info {
    uint64_t bundle_id;
    uint64_t contract_id;
    Version version;
    char contract_name[256];
    char plugin_name[256];
} pp_slot_info;
/* Facts about the live slot behind `handle` (InvalidHandle / StaleHandle otherwise). */
PP_API int32_t pp_registry_handle_info(pp_runtime *rt, GuestContractHandle handle,
                                       pp_slot_info *out, pp_error *err);
/* Fill up to `cap` infos for slots owned by `bundle_id`; returns the total count. */
PP_API size_t pp_registry_bundle_slots(pp_runtime *rt, uint64_t bundle_id, pp_slot_info *out,
                                       size_t cap);

/* ── host contracts: capabilities the host gives its guests (pp_hostfn.c) ─── */

/*
 * A host contract is a named, versioned set of functions the *host* implements and
 * guests call (upstream: HostApi.register_host_contract / get_host_contract /
 * resolve_host_contract_interface; ids are host_contract_id(name, major)).  Guests call
 * a native host contract's functions as NativeHostFn(instance.data, args, out, &err),
 * which is what upstream's polyplugc-generated callers do.
 *
 * HostApi.register_host_contract takes a HostContractInterface you build yourself
 * (your own functions, one indirect call from the guest).  pp_runtime_provide_host_
 * contract builds and owns it for you from callbacks, and adds what the raw ABI lacks:
 * withdraw and replace, per-instance objects, error messages guests can read, results
 * that outlive the call, and safety for guests that keep a pointer too long: after a
 * withdraw, calls through the old interface answer HostContractNotFound (100) instead of
 * reaching your callbacks, and the interface stays valid memory until pp_runtime_free.
 */
typedef struct pp_host_function {
    const char *name; /* for messages ("get"); NULL: "fn <id>" */
    size_t args_size; /* bytes of the argument block; 0: args may be NULL */
    size_t out_size;  /* bytes of the result slot; 0: no result, out may be NULL */
} pp_host_function;

/* One function call: `instance` is what `create` returned (NULL for a singleton).
 * Return 0 (Ok) or an AbiError code; say why with pp_host_error. */
typedef uint32_t (*pp_host_call_fn)(void *user_data, void *instance, uint32_t fn_id,
                                    const void *args, void *out);
/* A per-instance contract's constructor (get_host_contract calls it for every guest
 * that asks): the new instance, or NULL on failure (say why with pp_host_error). */
typedef void *(*pp_host_create_fn)(void *user_data, const void *args);
/* Free an instance: runs once no call on it is running any more. */
typedef void (*pp_host_destroy_fn)(void *user_data, void *instance);
/* The contract was withdrawn (or replaced, or the runtime closed) and no call is
 * running in it any more: every instance has been destroyed, nothing of this contract
 * calls back again, user_data may go. */
typedef void (*pp_host_release_fn)(void *user_data);

enum { PP_HOST_MAX_FUNCTIONS = 256 };

typedef struct pp_host_contract_desc {
    StringView name;                  /* bare contract name, UTF-8, no '@' ("app.kv") */
    Version version;                  /* the major enters the id; guests may ask for a minor */
    uint32_t function_count;          /* 0..PP_HOST_MAX_FUNCTIONS; ids 0..count-1 */
    const pp_host_function *functions; /* function_count entries (copied), or NULL */
    pp_host_call_fn call;             /* required */
    pp_host_create_fn create;         /* NULL: a singleton (one shared instance) */
    pp_host_destroy_fn destroy;       /* may be NULL */
    pp_host_release_fn release;       /* may be NULL */
    void *user_data;
} pp_host_contract_desc;

/*
 * Provide a host contract.  `replace`: take the place of the contract registered under
 * the same id (which is withdrawn); otherwise that is PP_ERR_HOST_CONTRACT_EXISTS.
 * `out` (may be NULL) receives the interface guests see.  After pp_runtime_close every
 * contract provided here is withdrawn.
 */
PP_API int32_t pp_runtime_provide_host_contract(pp_runtime *rt, const pp_host_contract_desc *desc,
                                                bool replace, const HostContractInterface **out,
                                                pp_error *err);
/* Withdraw the host contract registered under `contract_id` (provided here or through
 * HostApi.register_host_contract; with `only` not NULL: only if it is that interface):
 * lookups stop finding it at once; for one provided here, calls already running
 * finish, later ones answer HostContractNotFound, then `release` runs.  False when
 * nothing was withdrawn. */
PP_API bool pp_runtime_withdraw_host_contract(pp_runtime *rt, uint64_t contract_id,
                                              const HostContractInterface *only);
/* The host contract registered under `contract_id` (any version), or NULL; unlike
 * HostApi.resolve_host_contract_interface it leaves the last error alone. */
PP_API const HostContractInterface *pp_runtime_find_host_contract(pp_runtime *rt,
                                                                  uint64_t contract_id);

/* Inside a host function (or a create callback): fail with `code` and a message the
 * guest receives in AbiError.message (copied; valid until this thread's next call),
 * `detail` (e.g. a traceback) only goes to the log with it.  Returns `code`. */
PP_API uint32_t pp_host_error(uint32_t code, const char *message, size_t message_len,
                              const char *detail, size_t detail_len);
/* Inside a host function: write a StringView result into `out` over a copy of `data`
 * that stays valid until this thread's next host-function call.  False: out of memory. */
PP_API bool pp_host_result_string(void *out, const char *data, size_t len);

/* ── per-call arenas ───────────────────────────────────────────────────────── */

/* A HostApi bound to no runtime, valid for the whole process: alloc/free use the
 * process heap, every runtime operation reports an error.  Arenas that may outlive a
 * runtime take their overflow blocks from it. */
PP_API const HostApi *pp_detached_host(void);

/* Initialise `arena` over caller memory [buf, buf+cap) with overflow from `host`. */
PP_API void pp_arena_init(CallArena *arena, const HostApi *host, uint8_t *buf, size_t cap);
/* A heap arena with a `cap`-byte bump region; free with pp_arena_free. */
PP_API CallArena *pp_arena_new(const HostApi *host, size_t cap);
PP_API void pp_arena_free(CallArena *arena);
/* upstream's CallArena::alloc: NULL if size == 0 or align is not a power of two. */
PP_API void *pp_arena_alloc(CallArena *arena, size_t size, size_t align);
/* Rewind the bump region; keep overflow blocks for reuse. */
PP_API void pp_arena_reset(CallArena *arena);
/* Free the overflow blocks (not the bump region). */
PP_API void pp_arena_release(CallArena *arena);
/* Bytes handed out since the last reset (bump region + overflow). */
PP_API size_t pp_arena_used(const CallArena *arena);

/* Number of callable functions behind an interface: the native table's count, the
 * Lua loader's count for its own interfaces, -1 when it cannot be known. */
PP_API int64_t pp_function_count(const GuestContractInterface *iface);

/* ── calls ─────────────────────────────────────────────────────────────────── */

/* Dispatch through an interface (VM or native) the way upstream's formula says.
 * A NULL interface writes InvalidPointer. */
PP_API void pp_call(const GuestContractInterface *iface, void *instance_data,
                    uint64_t instance_contract_id, uint32_t fn_id, const void *args, void *out,
                    CallArena *arena, AbiError *out_err);

/*
 * Call through a registry handle {index, generation}: the handle is checked (stale ->
 * StaleHandle, written to out_err), `arena` (may be NULL) is reset first, then the
 * call runs as pp_call.  Returns out_err->code.  This is the Python layer's fast path.
 */
PP_API uint32_t pp_call_handle(pp_runtime *rt, uint32_t index, uint32_t generation,
                               void *instance_data, uint64_t instance_contract_id,
                               uint32_t fn_id, const void *args, void *out, CallArena *arena,
                               AbiError *out_err);

/*
 * A prepared call: everything pp_call_handle takes, in one block the caller fills
 * once and reuses (only `args` contents change between calls).  Invoking it costs a
 * single argument crossing, which is what makes the Python call layer cheap.
 */
typedef struct pp_call_frame {
    pp_runtime *rt;
    uint32_t index;
    uint32_t generation;
    void *instance_data;
    uint64_t instance_contract_id;
    uint32_t fn_id;
    const void *args;
    void *out;
    CallArena *arena;
    uint64_t timeout_ns; /* 0 = the loader's default */
    pp_cancel *cancel;   /* may be NULL */
    AbiError err;
} pp_call_frame;

/* pp_call_handle with the frame's fields; returns frame->err.code.  A failure is
 * logged at Debug (the caller receives it as a value), not at Error. */
PP_API uint32_t pp_call_frame_invoke(pp_call_frame *frame);

/*
 * Create a guest instance through a registry handle, checked like pp_call_handle.
 * Unlike HostApi.create_guest_instance, a failure says why: the AbiError code
 * (StaleHandle, ReentrantCall, CallTimeout, a factory's Generic error ...) is
 * returned and out_err->message holds the text (valid until the next call on this
 * thread).  `out` receives the instance ({NULL, 0} on failure).
 */
PP_API uint32_t pp_instance_create(pp_runtime *rt, uint32_t index, uint32_t generation,
                                   const void *args, GuestContractInstance *out,
                                   AbiError *out_err);
/* Destroy an instance made through the same handle; a stale handle is a no-op (the
 * instance died with its bundle's VM). */
PP_API void pp_instance_destroy(pp_runtime *rt, uint32_t index, uint32_t generation,
                                GuestContractInstance instance);

#endif /* POLYPLUG_H */
