/*
 * pp_internal.h — declarations shared between the host's C files (`ppi_` prefix).
 * Nothing here is part of the public API.
 *
 * ── Concurrency protocol ─────────────────────────────────────────────────────
 *
 * This is the one place that says which locks exist, what each protects, and in
 * which order they may be taken.  Debug builds (PP_DEBUG_LOCKS, on in the sanitizer
 * builds) check the order at every acquisition (PPI_ASSERT_MAY_TAKE).
 *
 * Locks, outermost first.  A thread may take a lock only while every lock it holds
 * comes earlier in this list:
 *
 *   1. rt->ops — the flow lock (pthread mutex, recursive).  Serialises load, reload,
 *      unload and close of one runtime.  Held across loader calls, guest init code
 *      and reload-phase callbacks (a guest may load a bundle from init: recursion).
 *   2. VM locks — one ppi_lock per loaded bundle, owned by a thread (pp_lock.c;
 *      the thread counts the VM locks it holds, nested calls included).  Serialises
 *      every use of the bundle's lua_State.  Held while guest code runs; a thread
 *      holds several when a guest calls another bundle.  Taking one is a
 *      compare-and-swap, releasing it plain stores; a waiter that goes to sleep pays
 *      a heavy fence instead (below, and pp_lock.c).  A guest calling another
 *      contract of its own bundle (a nested call, allowed per contract as upstream:
 *      pp_lua_call.c) takes nothing: its thread already owns the VM, and the nested
 *      call releases nothing when it leaves.
 *   3. Leaf locks — rt->lock (runtime bookkeeping), reg->lock (registry, rwlock), a
 *      Lua or native loader's list lock, a host contract's instance lock, the SDK
 *      bytecode cache lock.  They guard data only: while one is held nothing is
 *      called out (no guest, no callback, no loader) and nothing is waited for,
 *      except a try-lock of a VM lock.  fork() takes them all, in the order they
 *      were created, and the child re-creates them free (pp_lock.c): since leaf locks
 *      never nest and their holders wait for nothing, that wait is short.
 *
 * Out of order, one case is allowed and bounded: a guest running inside a call
 * (VM lock held) loads, reloads or unloads a bundle, which takes rt->ops.  That
 * wait is bounded (PPI_NESTED_WAIT_NS) and fails with a typed error.
 *
 * Waiting rules:
 *   - A thread that holds rt->ops or a VM lock never waits without a bound: for a
 *     VM lock it waits at most its call's remaining time, or PPI_NESTED_WAIT_NS.
 *   - Only a thread that holds nothing (an outermost call) waits for a VM lock
 *     without a bound, and only when its call has no time limit; the holder is then
 *     running guest code under the limits of its own call.  Not in the child of a
 *     fork() whose parent had other threads in polyplug (ppi_fork_orphans): a VM lock
 *     or flow lock there may belong to a thread that was not copied, so a wait for
 *     one whose owner tag is such a thread's (or not yet written) gives up after
 *     PPI_NESTED_WAIT_NS (CallTimeout / RuntimeBusy, saying why); a holder that lives
 *     in the child is waited for as anywhere else (ppi_fork_orphan_owner).
 *   - No operation waits for calls to finish.  A retired VM (unloaded, replaced by
 *     a reload, or a failed first load) is closed by whichever thread releases it
 *     last: the retiring thread when the VM is idle, otherwise the call that was
 *     still inside it, on its way out.  pp_runtime_close is the one place that
 *     waits for calls, with a bound and holding no lock.
 *   - A VM is closed (lua_close, which runs __gc finalizers) with no leaf lock and no
 *     lock of that VM held: by the thread that retires or replaces it (unload and
 *     reload, holding rt->ops, which is recursive: a finalizer may load, reload or
 *     unload bundles; loading the bundle that is being unloaded is refused), or by the
 *     last call out of it (perhaps holding an enclosing call's lock of another VM; a
 *     nested call of the same bundle releases nothing, so it never closes the VM).
 *     Closing is bounded: finalizers get PPI_CLOSE_NS, then the watchdog stops them.
 *
 * Handshakes without a lock.  Three places pair a frequent side with a rare one, each
 * side storing a word and then loading the other side's (Dekker's pattern); the
 * frequent side uses the light fence (a compiler barrier) and the rare side the heavy
 * fence ("Asymmetric fences" below), so no call pays a locked instruction for them:
 *   - VM lock release vs a waiter going to sleep: `held` / `sleepers` (pp_lock.c);
 *   - VM lock release vs retiring the VM: `held` / `retired` (pp_lua_call.c);
 *   - a limited call publishing its deadline vs the watchdog going to sleep:
 *     `deadline` / `sleeping` (pp_lua_watch.c).
 * The watchdog's other handshakes are plain sequentially consistent ones on rare
 * paths: closing a VM vs the watchdog arming it, and a call with a cancel token
 * ending vs the watchdog reading the token (pp_lua_watch.c).  Their waits (for the
 * watchdog to finish arming a hook, or reading a token) are bounded: the watchdog
 * holds no lock and waits for nothing there but the hook lock, which is held only
 * around lua_sethook.
 *
 * Lifetimes: everything reachable from an interface pointer or loader_data ever
 * handed out — registry interface blocks, Lua bundle and contract records — stays
 * allocated until pp_runtime_free (retired records go to the runtime's graveyard
 * and answer StaleHandle).  A registry slot that is reused gets a new interface
 * block, so an old pointer never reaches the new occupant.
 *
 * Callbacks: the log callback may run with VM locks held (a guest logging from a
 * call) and on any thread; reload-phase callbacks run with rt->ops held.  Either may
 * call back into the runtime: nested calls are bounded as above; a call back into
 * a VM this thread is already running in runs nested for another contract of that
 * bundle, and is refused (ReentrantCall) for a contract this thread is already
 * running or from JIT-compiled code of the bundle.  A callback that never returns
 * blocks the thread that invoked it, nothing more.
 *
 * Python's GIL (a Python host) comes after every lock above: Python host functions,
 * Python log callbacks and polyplug._fastcall's bytes results (ppi_arena_taker) take
 * it while VM locks are held.  The other way round never happens: every call from
 * Python into the C core releases the GIL first (cffi's default for API-mode calls;
 * fastcall.c explicitly), so no thread waits for rt->ops or a VM lock holding it.
 */
#ifndef PP_INTERNAL_H
#define PP_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>

#include "polyplug.h"

#define PP_COUNTOF(a) (sizeof(a) / sizeof((a)[0]))

#if defined(__GNUC__)
#define PP_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define PP_LIKELY(x) __builtin_expect(!!(x), 1)
#define PP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define PP_NOINLINE __attribute__((noinline))
#define PP_COLD __attribute__((noinline, cold))
#define PP_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define PP_PRINTF(fmt, args)
#define PP_NOINLINE
#define PP_COLD
#define PP_ALWAYS_INLINE inline
#define PP_LIKELY(x) (x)
#define PP_UNLIKELY(x) (x)
#endif

/* How long a thread that already holds a lock waits for another one. */
#define PPI_NESTED_WAIT_NS 5000000000ULL
/* How long pp_runtime_free waits for calls still running in the runtime's VMs. */
#define PPI_CLOSE_WAIT_NS 10000000000ULL

/* ── errors and strings (pp_util.c) ────────────────────────────────────────── */

/* Fill `err` (if non-NULL) and return `status`.  `bundle`/`aux`/`detail` may be NULL. */
int32_t ppi_fail(pp_error *err, int32_t status, const char *bundle, const char *aux,
                 const char *detail, const char *fmt, ...) PP_PRINTF(6, 7);
/* Copy `src` into a fixed buffer, truncating on a UTF-8 boundary, always NUL-ending. */
void ppi_strlcpy(char *dst, size_t cap, const char *src);
/* Copy a view into a fixed buffer the same way (truncating, NUL-ending). */
void ppi_view_copy(char *dst, size_t cap, StringView v);
/* malloc'd NUL-terminated copy of a view (NULL on OOM; "" for an empty view). */
/* Sort and freeze a fileset (pp_fileset.c); pp_manifest_doc_set_files calls it. */
void ppi_fileset_seal(pp_fileset *fs);
char *ppi_strndup_view(StringView v);
char *ppi_strdup(const char *s);
StringView ppi_view(const char *s);
bool ppi_view_eq(StringView a, const char *b);
bool ppi_utf8_valid(const uint8_t *s, size_t len);
/* Offset of the first byte that is not well-formed UTF-8 (no overlongs, surrogates or
 * code points past U+10FFFF), or `len` when all of it is. */
size_t ppi_utf8_check(const uint8_t *s, size_t len);
/* CLOCK_MONOTONIC in nanoseconds. */
long long ppi_now_ns(void);
/* The CLOCK_MONOTONIC deadline `timeout_ns` from now; saturates at LLONG_MAX. */
long long ppi_deadline_after(uint64_t timeout_ns);

/* Read a whole regular file.  Never blocks on a FIFO or device: those (and
 * directories) are refused with `*why` = "not a regular file"; other failures give
 * strerror text, ENOENT "file does not exist".  The buffer is malloc'd, NUL-ended. */
bool ppi_read_regular_file(const char *path, char **data, size_t *len, const char **why);

/* The manifest's entry-path rule (pp_manifest.c): `file` must stay inside the bundle
 * directory `dir`, `..` and symlinks resolved (a missing file is taken literally).
 * PathEscape with upstream's text, naming `bundle`, otherwise. */
int32_t ppi_check_entry_path(const char *dir, StringView file, StringView bundle,
                             pp_error *err);

/* Growable array helper: ensure room for `need` elements of `elem` bytes. */
bool ppi_grow(void **items, size_t *cap, size_t need, size_t elem);

/* ── hash maps (pp_map.c) ──────────────────────────────────────────────────── */

/*
 * A map from a pair of 64-bit keys (ids, pairs of ids, pointers; any bit pattern,
 * zero included) to a 64-bit value: open addressing, O(1) expected per operation.
 * Its owner's lock guards it.  A value pointer from ppi_map_get stays valid until
 * the next put, reserve or remove.
 */
typedef struct ppi_map_entry {
    uint64_t tag; /* 0: empty, else the hash of the keys */
    uint64_t k1, k2;
    uint64_t value;
} ppi_map_entry;

typedef struct ppi_map {
    ppi_map_entry *items;
    size_t len, cap; /* cap: 0 or a power of two */
} ppi_map;

/* The value stored for (k1, k2), or NULL. */
uint64_t *ppi_map_get(const ppi_map *m, uint64_t k1, uint64_t k2);
/* Room for `extra` more keys: that many puts of new keys cannot fail. */
bool ppi_map_reserve(ppi_map *m, size_t extra);
/* Insert or overwrite; false (map unchanged) when out of memory. */
bool ppi_map_put(ppi_map *m, uint64_t k1, uint64_t k2, uint64_t value);
/* False when the key was not there. */
bool ppi_map_remove(ppi_map *m, uint64_t k1, uint64_t k2);
/* Iteration: the next entry from *pos on (0 to start), or NULL at the end.  The map
 * must not change while it is iterated. */
ppi_map_entry *ppi_map_next(const ppi_map *m, size_t *pos);
void ppi_map_free(ppi_map *m);

/* Maps whose values are pointers. */
static inline void *ppi_map_get_ptr(const ppi_map *m, uint64_t k1, uint64_t k2) {
    uint64_t *v = ppi_map_get(m, k1, k2);
    return v ? (void *)(uintptr_t)*v : NULL;
}
static inline bool ppi_map_put_ptr(ppi_map *m, uint64_t k1, uint64_t k2, void *p) {
    return ppi_map_put(m, k1, k2, (uint64_t)(uintptr_t)p);
}

/* ── asymmetric fences and locks (pp_lock.c) ──────────────────────────────── */

/*
 * Asymmetric fences.  Several handshakes below have a hot side (every call) and a
 * rare side (a thread going to sleep, a VM being retired, the watchdog going idle),
 * each side storing one word and then loading the other's (Dekker).  Instead of a
 * full fence on both sides, the hot side pays a compiler barrier (ppi_fence_light)
 * and the rare side makes every thread of the process execute a full fence
 * (ppi_fence_heavy: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)).  What this buys:
 * for every other thread H there is a point P_H in H's program such that H's memory
 * accesses before P_H are visible to the heavy thread once ppi_fence_heavy returns,
 * and H's accesses after P_H see everything the heavy thread stored before calling
 * it (a thread that is not running passes such a point in its context switch).  So
 * if the hot side does "store X; light fence; load Y" and the rare side "store Y;
 * heavy fence; load X", either the hot load comes after P_H and sees Y, or the hot
 * store comes before P_H and the rare load sees X: at least one side sees the
 * other, exactly as with two full fences.  Where membarrier is missing (kernels
 * before 4.14, seccomp) ppi_fence_init leaves both fences full fences
 * (atomic_thread_fence), which is the plain Dekker argument.  The choice is made
 * once, before the first lock exists (ppi_lock_init), and never changes.
 */
extern bool ppi_fence_asymmetric;

void ppi_fence_init(void);
void ppi_fence_heavy(void);

static inline void ppi_fence_light(void) {
    if (PP_LIKELY(ppi_fence_asymmetric))
        atomic_signal_fence(memory_order_seq_cst); /* the compiler's order only */
    else
        atomic_thread_fence(memory_order_seq_cst);
}

/*
 * A VM lock: a futex word, a count of sleeping waiters, and the owning thread.
 * Waiters spin with backoff before they sleep, so same-bundle calls from several
 * threads run in batches instead of paying a wake-up per hand-off.  The uncontended
 * pair is one `lock cmpxchg` (acquire) and plain stores and loads (release): the
 * release does "store held = 0; light fence; load sleepers", a sleeper does
 * "sleepers += 1; heavy fence; try, else futex-wait while held == 1", so a release
 * either wakes the sleeper or the sleeper's try sees the lock free (the argument
 * above; pp_lock.c has the details).
 */
typedef struct ppi_lock {
    _Atomic uint32_t held;     /* 0 free, 1 held: the futex word */
    _Atomic uint32_t sleepers; /* waiters in the sleeping phase */
    _Atomic uintptr_t owner;   /* thread tag of the holder, 0 when free */
} ppi_lock;

void ppi_lock_acquire_slow(ppi_lock *l);
/* Wait at most until `deadline_ns` (CLOCK_MONOTONIC): spin, then sleep.  True once
 * the lock is ours. */
bool ppi_lock_acquire_until(ppi_lock *l, long long deadline_ns);
/* The same without the spinning phase (a waiter that looks at something else between
 * bounded sleeps: a cancel token). */
bool ppi_lock_sleep_until(ppi_lock *l, long long deadline_ns);
void ppi_lock_wake(ppi_lock *l);

static inline void ppi_lock_init(ppi_lock *l) {
    ppi_fence_init(); /* before the first lock: the fence mode never changes under one */
    atomic_init(&l->held, 0);
    atomic_init(&l->sleepers, 0);
    atomic_init(&l->owner, 0);
}

/* Does the calling thread (tag `me`) hold `l`? */
static inline bool ppi_lock_mine(const ppi_lock *l, uintptr_t me) {
    return atomic_load_explicit(&l->owner, memory_order_relaxed) == me;
}

/* Try once; true when the lock was free and is now ours (never recursive).  A
 * locked instruction, so a full fence: retiring a VM relies on it (pp_lua_call.c). */
static inline bool ppi_lock_try(ppi_lock *l, uintptr_t me) {
    uint32_t expected = 0;
    if (!atomic_compare_exchange_strong_explicit(&l->held, &expected, 1, memory_order_seq_cst,
                                                 memory_order_seq_cst))
        return false;
    atomic_store_explicit(&l->owner, me, memory_order_relaxed);
    return true;
}

/* Take a free lock: true when it was free and is now ours (acquire ordering only;
 * ppi_lock_try is the fenced one).  Else the caller waits: ppi_lock_acquire_slow, then
 * stores its tag in `owner` (pp_lua_call.c, acquire_vm_unlimited). */
static inline bool ppi_lock_try_acquire(ppi_lock *l, uintptr_t me) {
    uint32_t expected = 0;
    if (PP_UNLIKELY(!atomic_compare_exchange_strong_explicit(
            &l->held, &expected, 1, memory_order_acquire, memory_order_relaxed)))
        return false;
    atomic_store_explicit(&l->owner, me, memory_order_relaxed);
    return true;
}


/* Release; then the caller may load words a heavy-fenced thread stored before it
 * looked at this lock (ppi_lua_release reads `retired`): the light fence orders them
 * after the release. */
static inline void ppi_lock_release(ppi_lock *l) {
    atomic_store_explicit(&l->owner, 0, memory_order_relaxed);
    atomic_store_explicit(&l->held, 0, memory_order_release);
    ppi_fence_light();
    if (PP_UNLIKELY(atomic_load_explicit(&l->sleepers, memory_order_relaxed)))
        ppi_lock_wake(l);
}

/* ── call limits and cancellation ──────────────────────────────────────────── */

struct pp_cancel {
    _Atomic uint32_t requested;
};

/* ── the per-thread frame (pp_thread.c) ────────────────────────────────────── */

/*
 * One call a thread is inside of, innermost first.  It lives on the C stack of the
 * trampoline that runs the call (pp_lua_call.c).  The limit hook reads the
 * innermost one; nested calls inherit the outer deadline when it is earlier.
 */
typedef struct ppi_call {
    struct ppi_call *outer;
    pp_runtime *rt;          /* the runtime the VM belongs to */
    const void *vm;          /* the VM the call runs in (a Lua bundle record) */
    const void *contract;    /* the contract record, for re-entry checks */
    long long deadline_ns;   /* 0: no time limit; PPI_DEADLINE_PENDING: timeout_ns from
                              * the watchdog's first look (ppi_lua_deadline) */
    uint64_t timeout_ns;     /* the call's own limit; 0 when the deadline is inherited */
    pp_cancel *cancel;       /* NULL: none */
    uint32_t tripped;        /* 0, PP_ABI_CALL_TIMEOUT or PP_ABI_CALL_CANCELLED */
    uint8_t limited;         /* its limits are being watched: PPI_WATCHED, or
                              * PPI_WATCHED_INLINE (pp_lua_watch.c); else 0 */
    bool quiet;              /* the caller gets the error as a value: log it at Debug */
    bool nested;             /* entered a VM this thread already ran (another contract) */
    void *watch_vm;          /* the lua_State it published to the watchdog, or NULL */
    long long watch_mark;    /* a pending deadline's mark in the watch record, or 0 */
} ppi_call;

/* A call's own limit of at least PPI_LAZY_DEADLINE_NS (0.1 s) starts when the
 * watchdog first sees the call (about a tick, 1 ms, after it started), so the call
 * reads no clock: its deadline is PPI_DEADLINE_PENDING until then (pp_lua_watch.c). */
#define PPI_DEADLINE_PENDING (-1LL)
enum { PPI_WATCHED = 1, PPI_WATCHED_INLINE = 2 };
#define PPI_LAZY_DEADLINE_NS 100000000ULL

enum { PPI_MAX_INIT_WINDOWS = 32, PPI_ERROR_TEXT = 1024 };

/*
 * A per-thread record other threads may read: allocated once per thread that enters
 * the host, linked into a push-only list, reused after the thread exits, never freed.
 * `inside` names the runtime whose code the thread is running (pp_runtime_close waits
 * until no thread is inside the runtime it closes); the rest is the watchdog's
 * (pp_lua_watch.c).
 */
typedef struct ppi_record {
    _Atomic(pp_runtime *) inside;
    _Atomic(void *) vm;             /* VM of the innermost limited call, or of the last
                                     * one (never a freed VM), or NULL */
    _Atomic long long deadline;     /* of the innermost limited call: CLOCK_MONOTONIC
                                     * ns; 0 = none; < 0 = pending (a mark) */
    _Atomic uint64_t timeout;       /* a pending deadline's limit (deadline < 0) */
    _Atomic(pp_cancel *) cancel;    /* of the innermost limited call, or NULL */
    _Atomic uint32_t pinning;       /* the watchdog is reading `cancel`'s token */
    _Atomic bool in_use;            /* owned by a live thread */
    bool orphan;                    /* a fork() child's: its thread was not copied */
    uintptr_t tag;                  /* its thread's ppi_thread_tag (lock owner tag) */
    uint64_t seq;                   /* pending deadlines published (owner only) */
    struct ppi_record *next;
} ppi_record;

/*
 * What the calling thread is inside of: its calls, the init windows it opened, the
 * flow locks it holds, the limits pp_set_call_limits gave its next calls, and the
 * text behind the AbiError.message of its last failed call.
 */
typedef struct ppi_thread {
    ppi_call *call;                    /* innermost active call, or NULL */
    uint32_t vm_locks;                 /* VM locks held (counting recursion) */
    uint32_t ops_held;                 /* flow locks held, any runtime */
    bool quiet_next;                   /* the next call's failure goes back as a value */
    uint32_t last_code;                /* AbiError code of the last failure without an
                                        * error channel (create_instance) */
    uint64_t next_timeout_ns;          /* pp_set_call_limits */
    pp_cancel *next_cancel;
    struct {
        pp_runtime *rt;
        uint64_t bundle_id;
    } init[PPI_MAX_INIT_WINDOWS];      /* open init windows, innermost last */
    uint32_t init_len;
    uint32_t leaf_held;                /* PP_DEBUG_LOCKS: leaf locks held */
    ppi_record *record;                /* shared record (ppi_my_record) */
    uintptr_t stack_low;               /* lowest usable address of this thread's stack */
    struct ppi_deferred_log *deferred; /* log records held back (pp_log.c), oldest first */
    struct ppi_map *reload_visited;    /* the cascade this thread is reloading, or NULL */
    uint32_t deferred_len, deferred_dropped;
    char error_text[PPI_ERROR_TEXT];   /* AbiError.message of the last failed call */
} ppi_thread;

extern _Thread_local ppi_thread ppi_self_frame;

static inline ppi_thread *ppi_self(void) { return &ppi_self_frame; }

/* Identity of the calling thread (its frame's address), cheap and never 0; a thread
 * that starts after another ended may get the same tag, as with pthread_self. */
static inline uintptr_t ppi_thread_tag(void) { return (uintptr_t)&ppi_self_frame; }

/* This thread's shared record (NULL only if memory ran out), and the list of all. */
ppi_record *ppi_record_attach(ppi_thread *t);
static inline ppi_record *ppi_my_record(void) {
    ppi_thread *t = ppi_self();
    return PP_LIKELY(t->record != NULL) ? t->record : ppi_record_attach(t);
}
ppi_record *ppi_records(void);
/* Set in a fork() child when other threads of the parent had records: a lock may be
 * held by a thread that does not exist in this process (pp_thread.c). */
extern _Atomic bool ppi_fork_orphans;
/* In such a child: may a lock whose owner tag reads `tag` be held by one of those
 * threads (an orphan's tag, or 0: taken but not yet tagged)?  Only then is a wait for
 * it bounded; a holder that lives here is waited for as anywhere else. */
bool ppi_fork_orphan_owner(uintptr_t tag);
/* Mark this thread as running `rt`'s code; returns what to restore with ppi_leave_rt,
 * which must be the thread's last touch of anything the runtime owns. */
static inline pp_runtime *ppi_enter_rt(ppi_record *r, pp_runtime *rt) {
    pp_runtime *prev = atomic_load_explicit(&r->inside, memory_order_relaxed);
    atomic_store_explicit(&r->inside, rt, memory_order_relaxed);
    return prev;
}
static inline void ppi_leave_rt(ppi_record *r, pp_runtime *prev) {
    atomic_store_explicit(&r->inside, prev, memory_order_release);
}

/* Bytes of C stack left below the caller's frame on this thread. */
size_t ppi_cstack_left_slow(void);
static inline size_t ppi_cstack_left(void) {
    uintptr_t low = ppi_self()->stack_low;
    if (PP_UNLIKELY(low <= 1)) return ppi_cstack_left_slow(); /* unknown yet, or unknowable */
    uintptr_t here = (uintptr_t)__builtin_frame_address(0);
    return here > low ? here - low : 0;
}
/* What entering Lua needs in reserve: room for one more level of the deepest C
 * re-entry (string.gsub keeps an 8 KiB buffer on the stack), the error unwind and the
 * traceback handler.  Measured: recursion through coroutines, gsub, sort, print and
 * xpcall stops cleanly with this reserve on 32 KiB threads (Python's minimum), where
 * about 18 KiB are left when a call enters. */
#define PPI_CSTACK_RESERVE (16u * 1024u)

/* The bundle whose init window this thread has open in `rt`, or 0. */
uint64_t ppi_current_init_bundle(pp_runtime *rt);
/* Format the thread's error text; returns it (AbiError.message points here). */
const char *ppi_error_textf(const char *fmt, ...) PP_PRINTF(1, 2);

/* Lock-order checks (debug builds). */
#ifdef PP_DEBUG_LOCKS
void ppi_assert_may_take(int level, const char *what);
void ppi_leaf_taken(void);
void ppi_leaf_released(void);
#define PPI_ASSERT_MAY_TAKE(level, what) ppi_assert_may_take(level, what)
#define PPI_LEAF_TAKEN() ppi_leaf_taken()
#define PPI_LEAF_RELEASED() ppi_leaf_released()
#else
#define PPI_ASSERT_MAY_TAKE(level, what) ((void)0)
#define PPI_LEAF_TAKEN() ((void)0)
#define PPI_LEAF_RELEASED() ((void)0)
#endif
enum { PPI_LEVEL_OPS = 1, PPI_LEVEL_VM = 2, PPI_LEVEL_LEAF = 3 };

/* Leaf-lock wrappers: the order check, then the lock. */
void ppi_mutex_lock(pthread_mutex_t *m);
/* Create and destroy leaf locks through these: fork() takes every leaf lock first, so
 * a child never inherits one held by a thread that was not copied (pp_lock.c). */
int ppi_leaf_mutex_init(pthread_mutex_t *m);
/* The same for a mutex initialised statically (PTHREAD_MUTEX_INITIALIZER). */
int ppi_leaf_mutex_adopt(pthread_mutex_t *m);
void ppi_leaf_mutex_destroy(pthread_mutex_t *m);
int ppi_leaf_rwlock_init(pthread_rwlock_t *l);
void ppi_leaf_rwlock_destroy(pthread_rwlock_t *l);
void ppi_mutex_unlock(pthread_mutex_t *m);
void ppi_rdlock(pthread_rwlock_t *l);
void ppi_wrlock(pthread_rwlock_t *l);
void ppi_rwunlock(pthread_rwlock_t *l);

/* ── logging funnel (pp_log.c) ─────────────────────────────────────────────── */

typedef struct ppi_log_sink {
    LogFn fn;
    void *user_data;
    uint32_t max_level;
} ppi_log_sink;

/* Deliver a record.  With little C stack left inside a call (a guest deep in
 * recursion, a finalizer), the record is held back and delivered when the thread's
 * outermost call ends (ppi_log_flush_deferred): a log callback — Python's above all —
 * needs far more stack than the C-stack guard keeps in reserve. */
void ppi_log_emit(const ppi_log_sink *sink, uint32_t level, StringView scope,
                  StringView message);
void ppi_log_flush_deferred(void);
void ppi_logf(pp_runtime *rt, uint32_t level, const char *scope, const char *fmt, ...)
    PP_PRINTF(4, 5);

/* ── registry (pp_registry.c) ──────────────────────────────────────────────── */

/*
 * One registration's interface.  Immutable once published and never freed before
 * the registry: resolve hands out &block->iface, and that pointer stays valid (and
 * keeps calling the same loader record) whatever happens to the slot later.
 */
typedef struct ppi_iface {
    GuestContractInterface iface;
    struct ppi_iface *next_all; /* every block, for the registry's destructor */
} ppi_iface;

/* SURVIVING is a transient mark used only inside ppi_registry_commit_window. */
enum { PPI_SLOT_EMPTY = 0, PPI_SLOT_PUBLISHED = 1, PPI_SLOT_PENDING = 2, PPI_SLOT_SURVIVING = 3 };

/* The end of a slot list, and "no slot". */
#define PPI_NO_SLOT UINT32_MAX

typedef struct ppi_slot {
    /* read without the lock by ppi_registry_lookup */
    _Atomic(ppi_iface *) published; /* NULL unless the slot is PUBLISHED */
    _Atomic uint32_t generation;    /* bumped every time the slot is vacated */
    /* the rest: reg->lock */
    uint32_t state;
    /* neighbours in the owner bundle's list (its published slots, or its pending
     * ones) and in the contract's provider list (published slots only) */
    uint32_t bundle_prev, bundle_next;
    uint32_t provider_prev, provider_next;
    ppi_iface *block;               /* the slot's registration (also while PENDING) */
    uint64_t bundle_id;
    uint64_t contract_id;
    Version version;
    char *contract_name;            /* "<name>@<major>" */
    char *plugin_name;
} ppi_slot;

enum { PPI_SLOT_CHUNK_BITS = 8, PPI_SLOT_CHUNK = 1u << PPI_SLOT_CHUNK_BITS,
       PPI_SLOT_CHUNKS = 16384 };

/* A doubly linked list of slots, oldest first. */
typedef struct ppi_slot_list {
    uint32_t head, tail;
} ppi_slot_list;

/* What the registry knows about one bundle (or the host, bundle 0).  It exists while
 * the bundle has a slot, a declared dependency or an open window. */
typedef struct ppi_reg_bundle {
    ppi_slot_list published; /* in publication order */
    ppi_slot_list pending;   /* registrations inside the open window */
    uint64_t *deps;          /* declared dependency contract ids, each once */
    size_t deps_len, deps_cap;
    bool window;             /* a load or reload window is open */
} ppi_reg_bundle;

/* A set of bundle ids in an array (the bundles that declared one contract). */
typedef struct ppi_id_array {
    uint64_t *ids;
    size_t len, cap;
} ppi_id_array;

/*
 * Every lookup is O(1) expected, every walk is over what it asks for: a contract's
 * providers, a bundle's slots, a contract's declarers.  Nothing walks all slots or
 * all bundles except the destructor.
 */
typedef struct ppi_registry {
    pthread_rwlock_t lock;
    /* slots live in fixed chunks that never move (lock-free lookup) */
    ppi_slot *chunks[PPI_SLOT_CHUNKS];
    _Atomic uint32_t slots_len;
    uint32_t *free_slots; /* min-heap of the empty slots below slots_len */
    size_t free_len, free_cap;
    ppi_iface *blocks;   /* every interface block ever published */
    ppi_map providers;   /* contract id → ppi_slot_list of its published slots */
    ppi_map mixed;       /* contract ids whose providers disagree on the contract name
                          * (an id collision published through a window): present or not */
    ppi_map pairs;       /* (bundle id, contract id) → published << 32 | pending slot */
    ppi_map bundles;     /* bundle id → ppi_reg_bundle * */
    ppi_map deps;        /* (bundle id, contract id) declared → index in its declarers */
    ppi_map declarers;   /* contract id → ppi_id_array * of the bundles declaring it */
    ppi_map counts;      /* contract id → live stateful instances (absent: none) */
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
/* The interface behind a live handle, without taking the lock; NULL when the handle
 * is invalid or stale (`invalid` tells which). */
const GuestContractInterface *ppi_registry_lookup(ppi_registry *reg, GuestContractHandle h,
                                                  bool *invalid);
int32_t ppi_registry_resolve(ppi_registry *reg, GuestContractHandle h,
                             const GuestContractInterface **out, pp_error *err);
int32_t ppi_registry_handle_info(ppi_registry *reg, GuestContractHandle h, pp_slot_info *out,
                                 pp_error *err);
size_t ppi_registry_invalidate(ppi_registry *reg, uint64_t bundle_id);
void ppi_registry_declare_deps(ppi_registry *reg, uint64_t bundle_id, const pp_manifest *m);
void ppi_registry_drop_deps(ppi_registry *reg, uint64_t bundle_id);
bool ppi_registry_declares(ppi_registry *reg, uint64_t bundle_id, uint64_t contract_id);
/* Does `dependent` declare a dependency on any contract `provider` publishes? */
bool ppi_registry_depends_on(ppi_registry *reg, uint64_t dependent, uint64_t provider);
/* The bundles that declared a dependency on a contract `provider` publishes (the
 * provider itself included if it did; an id repeats once per such contract): fills
 * up to `cap`, returns the total. */
size_t ppi_registry_dependents(ppi_registry *reg, uint64_t provider, uint64_t *out,
                               size_t cap);
/* Load and reload windows: registrations of `bundle_id` stay pending (invisible)
 * until commit publishes them all at once; abort drops them.  Begin fails only when
 * memory runs out. */
bool ppi_registry_begin_window(ppi_registry *reg, uint64_t bundle_id);
void ppi_registry_abort_window(ppi_registry *reg, uint64_t bundle_id);
void ppi_registry_commit_window(ppi_registry *reg, uint64_t bundle_id);
void ppi_registry_count_instance(ppi_registry *reg, uint64_t contract_id, int64_t delta);
/* The same, skipped when *retired is set, read under the registry's lock: a bundle's
 * unload sets its retired flag before ppi_registry_reset_counts takes that lock, so an
 * instance created while the bundle unloads is either counted and then reset, or never
 * counted (a check before taking the lock could count it after the reset). */
void ppi_registry_count_instance_unless(ppi_registry *reg, uint64_t contract_id, int64_t delta,
                                        const _Atomic bool *retired);
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
    struct ppi_bundle *prev, *next; /* the runtime's bundles, in load order */
} ppi_bundle;

typedef struct ppi_host_contract {
    const HostContractInterface *iface;
    HostContractInstance cached;
} ppi_host_contract;

/* Memory that must outlive every pointer handed out: freed with the runtime. */
typedef struct ppi_grave {
    void *ptr;
    void (*free_fn)(void *ptr);
} ppi_grave;

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

    /* The flow lock (level 1): serialises load/reload/unload/close. */
    pthread_mutex_t ops;
    _Atomic uintptr_t ops_owner; /* thread tag of its holder, 0 when free */
    uint32_t ops_depth;          /* its holder's recursion depth */
    /* Set once by pp_runtime_close: every later operation fails with RuntimeClosed. */
    _Atomic bool closed;
    /* Guest VMs of this runtime that are not closed yet (pp_runtime_close waits). */
    _Atomic long open_vms;

    /* `lock` (leaf) guards the fields below. */
    pthread_mutex_t lock;
    pp_loader **loaders;
    size_t loaders_len, loaders_cap;
    ppi_bundle *first, *last; /* loaded bundles, oldest first */
    ppi_map bundles;          /* bundle id → ppi_bundle * */
    ppi_map unloading;        /* ids being unloaded right now (their VMs closing) */
    size_t manifest_bundles;  /* how many of them have a manifest */
    ppi_host_contract *host_contracts;
    size_t host_contracts_len, host_contracts_cap;
    char *last_error;
    size_t last_error_len;
    pp_path_hook load_hook, reload_hook;
    void *hook_user_data;
    ppi_grave *graves;
    size_t graves_len, graves_cap;
};

void ppi_set_last_error(pp_runtime *rt, const char *msg);
/* Keep `ptr` until the runtime is freed, then free_fn(ptr). */
void ppi_runtime_bury(pp_runtime *rt, void *ptr, void (*free_fn)(void *ptr));
/* A guest VM of `rt` came up / went away (pp_runtime_close waits for zero). */
void ppi_runtime_vm_opened(pp_runtime *rt);
void ppi_runtime_vm_closed(pp_runtime *rt);
/* Take / release the flow lock.  A thread that holds VM locks waits at most
 * PPI_NESTED_WAIT_NS (false: not taken, `err` filled). */
bool ppi_ops_lock(pp_runtime *rt, const char *what, pp_error *err);
/* The same with an explicit bound (`wait_ns` > 0). */
bool ppi_ops_lock_within(pp_runtime *rt, const char *what, uint64_t wait_ns, pp_error *err);
void ppi_ops_unlock(pp_runtime *rt);
/* Record that `loader` put `bundle_id` into `rt` (takes a loader reference). */
int32_t ppi_runtime_adopt(pp_runtime *rt, pp_loader *loader, uint64_t bundle_id,
                          const pp_manifest *m, pp_error *err);
/* Drop the bookkeeping entry of a bundle without callbacks; returns the loader
 * reference it held (or NULL). */
pp_loader *ppi_runtime_forget(pp_runtime *rt, uint64_t bundle_id);
/* The bookkeeping entry of a loaded bundle, or NULL; rt->lock held. */
ppi_bundle *ppi_runtime_bundle_locked(pp_runtime *rt, uint64_t bundle_id);
void ppi_fill_host_api(HostApi *api, pp_runtime *rt);
/* HostApi.register_guest_contract with the reason in `e` (for the runtime's own
 * loaders: no shared last-error channel in between). */
int32_t ppi_register_guest(pp_runtime *rt, const PluginDescriptor *desc,
                           const GuestContractInterface *iface, pp_error *e);
/* The runtime's host-contract list (pp_hostapi.c).  Publish `iface`, or with `replace`
 * put it in the place of the one registered under the same id (*replaced: that one, or
 * NULL); a duplicate without `replace` is PP_ERR_HOST_CONTRACT_EXISTS. */
int32_t ppi_host_publish(pp_runtime *rt, const HostContractInterface *iface, bool replace,
                         const HostContractInterface **replaced, pp_error *err);
/* Take the host contract registered under `contract_id` out of the list (when `only`
 * is not NULL: only if it is that one); returns it (NULL when there is none).  Its
 * memory is the registrant's business. */
const HostContractInterface *ppi_host_unpublish(pp_runtime *rt, uint64_t contract_id,
                                                const HostContractInterface *only);
/* Withdraw every host contract provided with pp_runtime_provide_host_contract
 * (pp_hostfn.c; pp_runtime_close calls it). */
void ppi_hostfn_withdraw_all(pp_runtime *rt);
/* The Lua loader's vm.call trampoline (its instances are counted by the loader). */
VmCallFn ppi_lua_vm_call_fn(void);
/* The failure of a closed runtime. */
int32_t ppi_closed_error(pp_error *err, const char *what);

/* ── call arenas that hand their large allocations to their caller ─────────── */

/*
 * While a thread's ppi_arena_taker_current points at a taker, pp_arena_alloc offers
 * every request of that taker's arena for at least `min_size` bytes that the bump
 * region cannot hold to take() first; NULL declines (the overflow chain serves it as
 * usual).  Taken memory is the taker's: it must stay valid until the caller that owns
 * the arena is done with the call's results, and pp_arena_used does not count it.
 * Only the thread that set the pointer sees it, so an arena address a guest kept
 * and used later, or on another thread, gets ordinary overflow blocks.
 * polyplug._fastcall uses this to let a guest write a large bytes result straight
 * into the bytes object the call returns (fastcall.c, "large bytes results").
 */
typedef struct ppi_arena_taker {
    const CallArena *arena;
    size_t min_size;
    void *(*take)(struct ppi_arena_taker *self, size_t size, size_t align);
} ppi_arena_taker;

extern _Thread_local ppi_arena_taker *ppi_arena_taker_current;

/* ── embedded Lua SDK (generated pp_sdk_embed.c) ───────────────────────────── */

typedef struct ppi_embedded_module {
    const char *name;
    const char *source;
    size_t len;
} ppi_embedded_module;

extern const ppi_embedded_module ppi_sdk_modules[];
extern const size_t ppi_sdk_modules_len;

#endif /* PP_INTERNAL_H */
