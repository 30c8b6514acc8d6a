/*
 * pp_thread.c — the per-thread frame: what the calling thread is inside of.
 *
 * One _Thread_local record replaces what used to be half a dozen scattered
 * thread-locals: the calls this thread is running (innermost first, each with its
 * deadline and cancel token), the init windows it opened, the flow locks and VM
 * locks it holds, the limits pp_set_call_limits gave its next calls, its stack bounds,
 * and the text behind its last AbiError.
 * Nothing here is shared between threads, so nothing here needs a lock.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pp_internal.h"

_Thread_local ppi_thread ppi_self_frame;

/* ── shared records ──────────────────────────────────────────────────────────── */

static _Atomic(ppi_record *) g_records;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_key; /* hands a thread's record back when the thread exits */
static bool g_key_ok;

static void release_record(void *p) {
    ppi_record *r = p;
    atomic_store(&r->inside, NULL);
    atomic_store(&r->deadline, 0);
    atomic_store(&r->cancel, NULL);
    atomic_store(&r->vm, NULL);
    atomic_store(&r->in_use, false);
}

/* ── fork ────────────────────────────────────────────────────────────────────── */

_Atomic bool ppi_fork_orphans;

/* In the child of a fork(): only the forking thread lives on.  If another thread had a
 * record then, it may have held a VM lock or a flow lock, which nobody here will ever
 * release: from now on every wait for one is bounded (pp_internal.h, waiting rules). */
static void after_fork_child(void) {
    const ppi_record *own = ppi_self()->record;
    for (ppi_record *r = atomic_load(&g_records); r; r = r->next)
        if (r != own && atomic_load(&r->in_use)) {
            r->orphan = true; /* in_use stays set: never handed to a new thread */
            atomic_store(&ppi_fork_orphans, true);
        }
}

bool ppi_fork_orphan_owner(uintptr_t tag) {
    if (tag == 0) return true;
    for (const ppi_record *r = atomic_load(&g_records); r; r = r->next)
        if (r->orphan && r->tag == tag) return true;
    return false;
}

static void make_key(void) {
    g_key_ok = pthread_key_create(&g_key, release_record) == 0;
    pthread_atfork(NULL, NULL, after_fork_child);
}

ppi_record *ppi_records(void) { return atomic_load(&g_records); }

ppi_record *ppi_record_attach(ppi_thread *t) {
    if (t->record) return t->record;
    pthread_once(&g_key_once, make_key);
    if (!g_key_ok) return NULL;
    ppi_record *r = NULL;
    for (ppi_record *x = atomic_load(&g_records); x && !r; x = x->next) {
        bool free_slot = false;
        if (atomic_compare_exchange_strong(&x->in_use, &free_slot, true)) r = x;
    }
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return NULL;
        atomic_init(&r->in_use, true);
        ppi_record *head = atomic_load(&g_records);
        do r->next = head;
        while (!atomic_compare_exchange_weak(&g_records, &head, r));
    }
    r->tag = (uintptr_t)t;
    pthread_setspecific(g_key, r);
    t->record = r;
    return r;
}

/* ── init windows ──────────────────────────────────────────────────────────── */

int32_t pp_runtime_begin_init(pp_runtime *rt, uint64_t bundle_id, pp_error *err) {
    if (!rt) return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL, "null runtime");
    ppi_thread *t = ppi_self();
    if (t->init_len == PPI_MAX_INIT_WINDOWS)
        return ppi_fail(err, PP_ERR_INIT_FAILED, NULL, NULL, NULL,
                        "bundle loads are nested more than %d deep on this thread (a bundle's "
                        "init loads a bundle whose init loads a bundle ...)",
                        PPI_MAX_INIT_WINDOWS);
    t->init[t->init_len].rt = rt;
    t->init[t->init_len].bundle_id = bundle_id;
    t->init_len++;
    return PP_OK;
}

void pp_runtime_end_init(pp_runtime *rt) {
    ppi_thread *t = ppi_self();
    for (uint32_t i = t->init_len; i-- > 0;) {
        if (t->init[i].rt != rt) continue;
        memmove(&t->init[i], &t->init[i + 1], (t->init_len - i - 1) * sizeof t->init[0]);
        t->init_len--;
        return;
    }
}

uint64_t ppi_current_init_bundle(pp_runtime *rt) {
    const ppi_thread *t = ppi_self();
    for (uint32_t i = t->init_len; i-- > 0;)
        if (t->init[i].rt == rt) return t->init[i].bundle_id;
    return 0;
}

/* ── the C stack ───────────────────────────────────────────────────────────── */

/* The lowest address of this thread's stack, from the thread's attributes (for the
 * main thread glibc derives them from the stack rlimit); 0 when unknown. */
static uintptr_t stack_low(void) {
    pthread_attr_t attr;
    void *addr = NULL;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) != 0) return 0;
    int rc = pthread_attr_getstack(&attr, &addr, &size);
    size_t guard = 0;
    pthread_attr_getguardsize(&attr, &guard);
    pthread_attr_destroy(&attr);
    if (rc != 0 || !addr) return 0;
    return (uintptr_t)addr + guard;
}

size_t ppi_cstack_left_slow(void) {
    ppi_thread *t = ppi_self();
    if (PP_UNLIKELY(t->stack_low == 0)) {
        t->stack_low = stack_low();
        if (t->stack_low == 0) t->stack_low = 1; /* unknown bounds: never refuse */
    }
    if (t->stack_low == 1) return SIZE_MAX;
    uintptr_t here = (uintptr_t)__builtin_frame_address(0);
    return here > t->stack_low ? here - t->stack_low : 0;
}

/* ── error text ────────────────────────────────────────────────────────────── */

const char *ppi_error_textf(const char *fmt, ...) {
    ppi_thread *t = ppi_self();
    char tmp[PPI_ERROR_TEXT];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    ppi_strlcpy(t->error_text, sizeof t->error_text, tmp); /* a UTF-8 boundary */
    return t->error_text;
}

/* ── call limits for raw vm.call users ─────────────────────────────────────── */

void pp_set_call_limits(uint64_t timeout_ns, pp_cancel *cancel) {
    ppi_thread *t = ppi_self();
    t->next_timeout_ns = timeout_ns;
    t->next_cancel = cancel;
}
