/*
 * pp_internal.h — declarations shared between the host's C files (`ppi_` prefix).
 * Nothing here is part of the public API.
 */
#ifndef PP_INTERNAL_H
#define PP_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>

#include "polyplug.h"

#define PP_COUNTOF(a) (sizeof(a) / sizeof((a)[0]))

#if defined(__GNUC__)
#define PP_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define PP_LIKELY(x) __builtin_expect(!!(x), 1)
#define PP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define PP_PRINTF(fmt, args)
#define PP_LIKELY(x) (x)
#define PP_UNLIKELY(x) (x)
#endif

/* ── errors and strings (pp_util.c) ────────────────────────────────────────── */

/* Fill `err` (if non-NULL) and return `status`.  `bundle`/`aux`/`detail` may be NULL. */
int32_t ppi_fail(pp_error *err, int32_t status, const char *bundle, const char *aux,
                 const char *detail, const char *fmt, ...) PP_PRINTF(6, 7);
/* Copy `src` into a fixed buffer, truncating on a UTF-8 boundary, always NUL-ending. */
void ppi_strlcpy(char *dst, size_t cap, const char *src);
/* Copy a view into a fixed buffer the same way (truncating, NUL-ending). */
void ppi_view_copy(char *dst, size_t cap, StringView v);
/* malloc'd NUL-terminated copy of a view (NULL on OOM; "" for an empty view). */
char *ppi_strndup_view(StringView v);
char *ppi_strdup(const char *s);
StringView ppi_view(const char *s);
bool ppi_view_eq(StringView a, const char *b);
bool ppi_utf8_valid(const uint8_t *s, size_t len);
/* Offset of the first byte that is not well-formed UTF-8 (no overlongs, surrogates or
 * code points past U+10FFFF), or `len` when all of it is. */
size_t ppi_utf8_check(const uint8_t *s, size_t len);
/* Identity of the calling thread, cheap and never 0. */
uintptr_t ppi_thread_tag(void);

/* Growable array helper: ensure room for `need` elements of `elem` bytes. */
bool ppi_grow(void **items, size_t *cap, size_t need, size_t elem);

/* ── the per-VM lock (pp_lock.c) ───────────────────────────────────────────── */

typedef struct ppi_lock {
    _Atomic uint32_t state; /* 0 free, 1 held, 2 held with possible sleepers */
} ppi_lock;

void ppi_lock_acquire_slow(ppi_lock *l);
/* Try for at most `ns` nanoseconds (spinning and yielding, never sleeping). */
bool ppi_lock_acquire_within(ppi_lock *l, uint64_t ns);
void ppi_lock_wake(ppi_lock *l);

static inline void ppi_lock_init(ppi_lock *l) { atomic_init(&l->state, 0); }

static inline void ppi_lock_acquire(ppi_lock *l) {
    uint32_t expected = 0;
    if (PP_LIKELY(atomic_compare_exchange_strong_explicit(&l->state, &expected, 1,
                                                          memory_order_acquire,
                                                          memory_order_relaxed)))
        return;
    ppi_lock_acquire_slow(l);
}

static inline bool ppi_lock_try(ppi_lock *l) {
    uint32_t expected = 0;
    return atomic_compare_exchange_strong_explicit(&l->state, &expected, 1, memory_order_acquire,
                                                   memory_order_relaxed);
}

static inline void ppi_lock_release(ppi_lock *l) {
    if (PP_UNLIKELY(atomic_exchange_explicit(&l->state, 0, memory_order_release) == 2))
        ppi_lock_wake(l);
}

/* ── call limits of the calling thread (pp_hostapi.c) ──────────────────────── */

struct pp_cancel {
    _Atomic uint32_t requested;
};

/* What pp_set_call_limits / pp_call_frame_invoke set for this thread. */
void ppi_thread_call_limits(uint64_t *timeout_ns, pp_cancel **cancel);

/* ── logging funnel (pp_log.c) ─────────────────────────────────────────────── */

typedef struct ppi_log_sink {
    LogFn fn;
    void *user_data;
    uint32_t max_level;
} ppi_log_sink;

void ppi_log_emit(const ppi_log_sink *sink, uint32_t level, StringView scope,
                  StringView message);
void ppi_logf(pp_runtime *rt, uint32_t level, const char *scope, const char *fmt, ...)
    PP_PRINTF(4, 5);

/* ── registry (pp_registry.c) ──────────────────────────────────────────────── */

/* SURVIVING is a transient mark used only inside ppi_registry_commit_reload. */
enum { PPI_SLOT_EMPTY = 0, PPI_SLOT_PUBLISHED = 1, PPI_SLOT_PENDING = 2, PPI_SLOT_SURVIVING = 3 };

typedef struct ppi_slot {
    GuestContractInterface iface; /* stable address for the runtime's lifetime */
    uint32_t generation;
    uint32_t state;
    uint64_t bundle_id;
    char *contract_name; /* "<name>@<major>" */
    char *plugin_name;
    Version version;
} ppi_slot;

typedef struct ppi_index_entry {
    uint64_t contract_id;
    uint32_t slot;
} ppi_index_entry;

typedef struct ppi_dep_entry {
    uint64_t bundle_id;
    uint64_t contract_id;
} ppi_dep_entry;

typedef struct ppi_count_entry {
    uint64_t contract_id;
    int64_t live;
} ppi_count_entry;

typedef struct ppi_registry {
    pthread_rwlock_t lock;
    ppi_slot **slots;
    size_t slots_len, slots_cap;
    ppi_index_entry *index; /* published slots in publication order */
    size_t index_len, index_cap;
    ppi_dep_entry *deps; /* declared dependencies per bundle */
    size_t deps_len, deps_cap;
    uint64_t *reloading; /* bundles inside a reload window */
    size_t reloading_len, reloading_cap;
    ppi_count_entry *counts; /* live stateful instances per contract id */
    size_t counts_len, counts_cap;
    _Atomic uint64_t revision;
} ppi_registry;

int ppi_registry_init(ppi_registry *reg);
void ppi_registry_destroy(ppi_registry *reg);
/* Validated registration (the HostApi checks ran already).  Returns an AbiErrorCode
 * and fills `err` with the registry's reason. */
uint32_t ppi_registry_register(ppi_registry *reg, uint64_t bundle_id,
                               const PluginDescriptor *desc, const GuestContractInterface *iface,
                               pp_error *err);
GuestContractHandle ppi_registry_find(ppi_registry *reg, uint64_t contract_id,
                                      uint32_t min_major, bool by_bundle, uint64_t bundle_id);
size_t ppi_registry_find_all(ppi_registry *reg, uint64_t contract_id, uint32_t min_major,
                             GuestContractHandle *out, size_t cap);
int32_t ppi_registry_resolve(ppi_registry *reg, GuestContractHandle h,
                             const GuestContractInterface **out, pp_error *err);
int32_t ppi_registry_resolve_locked(ppi_registry *reg, GuestContractHandle h,
                                    const GuestContractInterface **out, pp_error *err);
/* Resolve and copy the interface while the registry lock is held. */
int32_t ppi_registry_resolve_copy(ppi_registry *reg, GuestContractHandle h,
                                  GuestContractInterface *out);
int32_t ppi_registry_handle_info(ppi_registry *reg, GuestContractHandle h, pp_slot_info *out,
                                 pp_error *err);
size_t ppi_registry_invalidate(ppi_registry *reg, uint64_t bundle_id);
void ppi_registry_declare_deps(ppi_registry *reg, uint64_t bundle_id, const pp_manifest *m);
void ppi_registry_drop_deps(ppi_registry *reg, uint64_t bundle_id);
bool ppi_registry_declares(ppi_registry *reg, uint64_t bundle_id, uint64_t contract_id);
/* Does `dependent` declare a dependency on any contract `provider` publishes? */
bool ppi_registry_depends_on(ppi_registry *reg, uint64_t dependent, uint64_t provider);
void ppi_registry_begin_reload(ppi_registry *reg, uint64_t bundle_id);
void ppi_registry_abort_reload(ppi_registry *reg, uint64_t bundle_id);
void ppi_registry_commit_reload(ppi_registry *reg, uint64_t bundle_id);
void ppi_registry_count_instance(ppi_registry *reg, uint64_t contract_id, int64_t delta);
int64_t ppi_registry_live_instances(ppi_registry *reg, uint64_t bundle_id);
void ppi_registry_reset_counts(ppi_registry *reg, uint64_t bundle_id);
size_t ppi_registry_bundle_slots(ppi_registry *reg, uint64_t bundle_id, pp_slot_info *out,
                                 size_t cap);

/* ── loaders (pp_loader.c) ─────────────────────────────────────────────────── */

struct pp_loader {
    const pp_loader_vtable *vt;
    void *self;
    _Atomic long refs;
};

/* ── runtime (pp_runtime.c) ────────────────────────────────────────────────── */

/* What the runtime knows about a bundle a loader put into it. */
typedef struct ppi_bundle {
    uint64_t id;
    pp_loader *loader; /* owned reference */
    bool has_manifest; /* false for direct pp_loader_load() bundles */
    /* deep copy of the manifest (strings owned) */
    char *name, *loader_name, *file, *path, *version_text;
    Version version;
    char **provides;
    size_t provides_len;
    pp_dependency *deps;
    char **dep_contracts;
    size_t deps_len;
    bool needs_reinit_on_dep_reload;
} ppi_bundle;

typedef struct ppi_init_frame {
    uintptr_t thread;
    uint64_t bundle_id;
} ppi_init_frame;

typedef struct ppi_host_contract {
    const HostContractInterface *iface;
    HostContractInstance cached;
} ppi_host_contract;

struct pp_runtime {
    HostApi api; /* first member: &rt->api is the HostApi* handed out */
    ppi_log_sink log;
    uint32_t compatibility;
    bool hot_reload_enabled;
    OnReloadFn on_reload;
    void *on_reload_user_data;
    uint32_t signature_policy;
    Ed25519PublicKey *trusted_keys;
    size_t trusted_keys_len;

    ppi_registry reg;

    /* `ops` serialises load/reload/unload (recursive: a guest may load from init). */
    pthread_mutex_t ops;
    /* `lock` guards the fields below; never held while calling out. */
    pthread_mutex_t lock;
    pp_loader **loaders;
    size_t loaders_len, loaders_cap;
    ppi_bundle *bundles;
    size_t bundles_len, bundles_cap;
    ppi_init_frame *init;
    size_t init_len, init_cap;
    _Atomic size_t init_active;
    ppi_host_contract *host_contracts;
    size_t host_contracts_len, host_contracts_cap;
    char *last_error;
    size_t last_error_len;
    pp_path_hook load_hook, reload_hook;
    void *hook_user_data;

    /* Checked calls in flight (pp_call_handle), counted per epoch: unload flips the
     * epoch and waits for the old one to drain before a loader frees anything. */
    _Atomic unsigned call_epoch;
    _Atomic size_t calls_in_flight[2];
    pthread_mutex_t drain_lock;
};

void ppi_set_last_error(pp_runtime *rt, const char *msg);

/* Checked-call bookkeeping (see pp_runtime.calls_in_flight). */
unsigned ppi_calls_enter(pp_runtime *rt);
void ppi_calls_leave(pp_runtime *rt, unsigned epoch);
/* Is this thread inside a checked call into `rt`? */
bool ppi_calls_active_on_thread(pp_runtime *rt);
/* Wait until every checked call that started before now has finished. */
void ppi_calls_drain(pp_runtime *rt);
/* The bundle whose init window is open on this thread, or 0. */
uint64_t ppi_current_init_bundle(pp_runtime *rt);
/* Record that `loader` put `bundle_id` into `rt` (takes a loader reference). */
int32_t ppi_runtime_adopt(pp_runtime *rt, pp_loader *loader, uint64_t bundle_id,
                          const pp_manifest *m, pp_error *err);
/* Drop the bookkeeping entry of a bundle without callbacks; returns the loader
 * reference it held (or NULL). */
pp_loader *ppi_runtime_forget(pp_runtime *rt, uint64_t bundle_id);
void ppi_fill_host_api(HostApi *api, pp_runtime *rt);

/* ── embedded Lua SDK (generated pp_sdk_embed.c) ───────────────────────────── */

typedef struct ppi_embedded_module {
    const char *name;
    const char *source;
    size_t len;
} ppi_embedded_module;

extern const ppi_embedded_module ppi_sdk_modules[];
extern const size_t ppi_sdk_modules_len;

#endif /* PP_INTERNAL_H */
