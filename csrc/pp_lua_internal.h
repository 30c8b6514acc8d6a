/*
 * pp_lua_internal.h — shared between the Lua loader's files:
 *
 *   pp_lua_vm.c      building a bundle's lua_State: libraries, SDK, limits, allocator
 *   pp_lua_init.c    reading the entry file and running the polyplug_init protocol
 *   pp_lua_call.c    the vm.call / create_instance / destroy_instance trampolines
 *   pp_lua_bundle.c  bundle and contract records, load / reload / unload, the vtable
 *
 * Object model.  A `lua_bundle` record lives from load until its runtime is freed
 * (after unload it is a tombstone in the runtime's graveyard); its `lua_contract`
 * records are what interfaces' loader_data point at, so every interface pointer ever
 * handed out stays safe to call: a retired record answers StaleHandle.  The VM
 * itself (`L`) is replaced by a reload and closed once no call is inside it.
 *
 * Locking: the bundle's `lock` (a VM lock, level 2 of pp_internal.h) guards `L`,
 * every record's Lua references, `fn_count` writes and `next_instance`; `retired`
 * is written once (ppi_lua_retire) and read under the lock or right after releasing
 * it (the hand-over in pp_lua_call.c).
 */
#ifndef PP_LUA_INTERNAL_H
#define PP_LUA_INTERNAL_H

#include "lua.h"
#include "pp_internal.h"

/* Every bundle VM keeps these values at the bottom of its stack: the traceback
 * handler, the arena_alloc closure, and the instance maker
 * (function(instances, id, factory, host) that runs a factory and stores its result,
 * so creating an instance allocates only inside a protected call).  A nested call
 * (another contract of a bundle whose VM this thread is already running) works above
 * the running guest's frame and gets them with ppi_lua_push_helper. */
enum {
    PPI_STACK_TRACEBACK = 1,
    PPI_STACK_ARENA_ALLOC = 2,
    PPI_STACK_MAKE_INSTANCE = 3,
    PPI_STACK_BASE = 3
};

typedef struct lua_contract {
    struct lua_bundle *bundle;
    char *name; /* bare contract name, the registrations key */
    uint64_t contract_id;
    uint32_t major;
    _Atomic uint32_t fn_count; /* 0 once retired */
    bool retired;              /* removed by a reload, or its bundle unloaded */
    int *fn_refs;              /* registry refs of functions[0..fn_count) */
    int factory_ref;           /* registry ref of the factory */
    int default_ref;           /* registry ref of the default impl */
    int instances_ref;         /* registry ref of the id -> impl table */
    uint64_t next_instance;    /* never reset: ids stay unique across reloads */
    struct lua_contract *next;
} lua_contract;

typedef struct lua_bundle {
    ppi_lock lock;            /* the VM lock */
    lua_State *L;             /* NULL once the VM is closed */
    _Atomic bool retired;     /* unloaded or a failed first load: calls are refused */
    struct lua_loader *loader;
    pp_runtime *rt;
    uint64_t id;
    char *name;
    uint64_t call_timeout_ns; /* the loader's defaults, copied */
    uint64_t memory_limit;
    _Atomic int64_t memory_snapshot; /* GC heap bytes at the last idle query */
    lua_contract *contracts;  /* live and retired records */
} lua_bundle;

typedef struct lua_loader {
    pthread_mutex_t lock; /* leaf: guards `bundles` */
    ppi_map bundles;      /* loaded bundles of every runtime: (runtime, id) → lua_bundle * */
    pp_lua_config config;
} lua_loader;

/* ── pp_lua_vm.c ──────────────────────────────────────────────────────────── */

/* Addresses travel into Lua as numbers (exact below 2^53). */
static inline void ppi_lua_push_pointer(lua_State *L, const void *p) {
    lua_pushnumber(L, (lua_Number)(uintptr_t)p);
}
/* The traceback message handler every lua_pcall of the loader uses. */
int ppi_lua_traceback(lua_State *L);
/* The error value on top of the stack as text (never NULL). */
const char *ppi_lua_error_text(lua_State *L);

/* A fresh VM with [traceback, arena_alloc, instance maker] on its stack; NULL with
 * `err` filled.  `files` (may be NULL) are a signed bundle's verified files: its
 * modules are loaded from them, never from `dir`.  It counts as one of rt's open VMs until ppi_lua_vm_close. */
lua_State *ppi_lua_vm_new(pp_runtime *rt, const char *dir, pp_fileset *files,
                          const char *bundle, const pp_lua_config *cfg, pp_error *err);
/* Close a VM nobody can reach any more.  Its __gc finalizers run here, watched: past
 * PPI_CLOSE_NS they are stopped, so closing is bounded whatever the guest does. */
void ppi_lua_vm_close(pp_runtime *rt, lua_State *L);
#define PPI_CLOSE_NS 1000000000LL
/* Push the value the VM keeps at stack slot `slot` (PPI_STACK_*), from any frame;
 * allocates nothing. */
void ppi_lua_push_helper(lua_State *L, int slot);
/* A full collection (after an out-of-memory error), protected against finalizers;
 * leaves the stack as it was. */
void ppi_lua_vm_collect(lua_State *L);
/* Did the memory limit refuse an allocation since the last ask?  (Clears the mark.) */
bool ppi_lua_vm_take_refused(lua_State *L);
/* Bytes held by the VM's garbage-collected heap. */
int64_t ppi_lua_vm_memory(lua_State *L);

/* Have the watchdog watch `call` (which must be this thread's innermost call) when it
 * has a deadline or a cancel token; ppi_lua_limits_end ends that (pp_lua_watch.c). */
void ppi_lua_watch_begin(lua_State *L, ppi_call *call);
void ppi_lua_watch_end(lua_State *L, ppi_call *call);
extern _Atomic uint32_t ppi_watch_sleeping;
extern _Atomic bool ppi_watch_running;
void ppi_watch_wake(void);

/* The common limited call inline: an outermost call with a pending deadline and no
 * token, the watchdog running.  It publishes itself with plain stores; its end clears
 * the deadline and leaves any hook armed meanwhile to limit_hook, which removes a hook
 * that fires in a call not out of time (pp_lua_watch.c, 2. and 4.). */
static inline bool ppi_lua_watch_simple(const ppi_call *call, const ppi_record *w) {
    return call->deadline_ns == PPI_DEADLINE_PENDING && !call->cancel && !call->outer && w &&
           atomic_load_explicit(&ppi_watch_running, memory_order_relaxed);
}

static inline void ppi_lua_limits_begin(lua_State *L, ppi_call *call) {
    if (PP_LIKELY(!call->deadline_ns && !call->cancel)) return;
    ppi_record *w = ppi_self()->record;
    if (!ppi_lua_watch_simple(call, w)) {
        ppi_lua_watch_begin(L, call);
        return;
    }
    long long mark = -(long long)(++w->seq & (uint64_t)LLONG_MAX);
    call->limited = PPI_WATCHED_INLINE;
    call->watch_vm = L;
    call->watch_mark = mark;
    atomic_store_explicit(&w->timeout, call->timeout_ns, memory_order_relaxed);
    atomic_store_explicit(&w->vm, (void *)L, memory_order_relaxed);
    atomic_store_explicit(&w->deadline, mark, memory_order_release);
    ppi_fence_light();
    if (PP_UNLIKELY(atomic_load_explicit(&ppi_watch_sleeping, memory_order_relaxed)))
        ppi_watch_wake();
}

static inline void ppi_lua_limits_end(lua_State *L, ppi_call *call) {
    if (PP_LIKELY(!call->limited)) return;
    if (call->limited == PPI_WATCHED_INLINE && !call->tripped) {
        /* published inline: outermost, no token, so nothing to restore */
        call->limited = 0;
        atomic_store_explicit(&ppi_self()->record->deadline, 0, memory_order_relaxed);
        return;
    }
    ppi_lua_watch_end(L, call);
}
/* `call`'s deadline (CLOCK_MONOTONIC ns; 0: none), fixed now if it was pending. */
long long ppi_lua_deadline(ppi_call *call);
/* The watchdog half of ppi_lua_limits_end, without touching the VM (it is being freed). */
void ppi_lua_limits_release(ppi_call *call);
/* `L` is being freed: no watch record may name it any more, and the watchdog is not
 * arming it (pp_lua_watch.c, 1.).  Waits at most for one arming by the watchdog. */
void ppi_lua_watch_forget(lua_State *L);
#ifdef PP_DEBUG_LOCKS
/* Debug builds: `L` is a new VM the watchdog may arm until it is forgotten. */
void ppi_lua_watch_born(lua_State *L);
#endif

/* ── pp_lua_init.c ────────────────────────────────────────────────────────── */

/* A registration read from the guest's table, references held in the new VM. */
typedef struct lua_pending {
    char *name;
    char *plugin_name;
    uint32_t major;
    uint32_t fn_count;
    int *fn_refs;
    int factory_ref, default_ref, instances_ref;
} lua_pending;

typedef struct lua_init_result {
    pp_runtime *rt;
    lua_State *L;
    lua_pending *items; /* sorted by name */
    size_t len;
} lua_init_result;

/* Build a VM, run the entry chunk and polyplug_init, and read the registrations.
 * Must run inside the bundle's init window; the loader's call timeout bounds it. */
int32_t ppi_lua_run_init(pp_runtime *rt, const pp_lua_config *config, const pp_manifest *m,
                         const pp_source *src, const char *bundle, lua_init_result *res,
                         pp_error *err);
/* Free the result; close its VM too when `close_vm`. */
void ppi_lua_init_result_free(lua_init_result *r, bool close_vm);
/* InitFailed with `detail` as the inner error text. */
int32_t ppi_lua_init_failed(pp_error *err, const char *bundle, const char *detail);

/* ── pp_lua_call.c ────────────────────────────────────────────────────────── */

/* Push `call` as this thread's innermost call: its deadline is now + timeout_ns (0:
 * none; PPI_DEADLINE_PENDING for a long limit), or the enclosing call's deadline when
 * that is earlier; its cancel token is `cancel`, else the enclosing call's. */
void ppi_lua_call_push(ppi_call *call, pp_runtime *rt, const void *vm, const void *contract,
                       uint64_t timeout_ns, pp_cancel *cancel);
/* Pop it; when the outermost call ends, deliver the log records held back during it. */
void ppi_lua_call_pop(ppi_call *call);

void ppi_lua_vm_call(VmLoaderData loader_data, GuestContractInstance instance, uint32_t fn_id,
                     const void *args, void *out, CallArena *arena, AbiError *out_err);
void ppi_lua_create_instance(VmLoaderData loader_data, const HostApi *host, const void *args,
                             GuestContractInstance *out_instance);
void ppi_lua_destroy_instance(VmLoaderData loader_data, const HostApi *host,
                              GuestContractInstance instance);
/* Retire a bundle's VM: refuse new calls, and close it now if idle, else when the
 * last call leaves it.  Never waits. */
void ppi_lua_retire(lua_bundle *b);
/* Close b's VM if b is retired and nobody holds its lock (pp_lua_call.c). */
void ppi_lua_reap(lua_bundle *b);
/* Release b's VM lock; if b is retired, close its VM when this was the last holder.
 * Every release of a bundle's VM lock goes through here. */
static inline void ppi_lua_release(lua_bundle *b) {
    ppi_lock_release(&b->lock); /* ends with the light fence: `retired` is read after */
    if (PP_UNLIKELY(atomic_load_explicit(&b->retired, memory_order_relaxed))) ppi_lua_reap(b);
}
/* How long reload waits for a call in the bundle when no call timeout applies. */
#define PPI_LUA_BUSY_WAIT_NS 10000000000ULL

#endif /* PP_LUA_INTERNAL_H */
