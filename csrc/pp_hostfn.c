/*
 * pp_hostfn.c — host contracts built from callbacks (pp_runtime_provide_host_contract):
 * the native function table guests call, instances, withdraw and replace, and the
 * per-thread error text and result memory of host functions.
 *
 * What a guest holds, and what keeps it safe:
 *   - the HostContractInterface (&hc->iface) and the function table: valid until
 *     pp_runtime_free (the record is buried in the runtime's graveyard);
 *   - an instance pointer (HostContractInstance.data): an hf_inst record of the
 *     contract, also valid until pp_runtime_free.  A destroyed record goes to the
 *     contract's free list and may serve a later instance of the same contract, so a
 *     pointer kept past destroy_instance reaches either an error or that instance —
 *     never freed memory, never another contract.
 *
 * Reference counts ("last one out"): a contract and each instance count the calls
 * inside them plus one for being alive.  Withdrawing (destroying) sets HF_RETIRED, so
 * no new call gets in, and drops the alive reference; whoever drops the count to zero
 * runs the finalizer: destroy for an instance, destroy of the remaining instances and
 * then release for a contract.  Nothing waits for calls, and callbacks never run while
 * a lock is held.
 *
 * The function table: a native slot gets no fn_id (NativeHostFn), so slot i is a tiny
 * trampoline that passes i on.  PP_HOST_MAX_FUNCTIONS of them are generated below and
 * shared by every contract; the instance pointer leads to the contract.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pp_internal.h"

#define HF_RETIRED 0x80000000u
#define HF_INST_MAGIC 0x7070686f7374696eULL /* "pphostin" */

typedef struct hf_inst {
    uint64_t magic;             /* HF_INST_MAGIC for every record ever handed out */
    struct pp_host_contract *hc;
    void *user;                 /* what `create` returned; NULL for the singleton */
    _Atomic uint32_t refs;      /* calls inside + 1 while alive; HF_RETIRED once destroyed */
    struct hf_inst *next_all;   /* every record of the contract (hc->lock) */
    struct hf_inst *next_free;  /* destroyed and finalized records (hc->lock) */
} hf_inst;

struct pp_host_contract {
    HostContractInterface iface; /* first member: what guests see */
    pp_runtime *rt;
    char *label;                 /* "app.kv@1" */
    char *scope;                 /* "host.app.kv": the log scope of its failures */
    uint32_t fn_count;
    pp_host_function *fns;       /* fn_count copies (names owned), or NULL */
    pp_host_call_fn call;
    pp_host_create_fn create;
    pp_host_destroy_fn destroy;
    pp_host_release_fn release;
    void *user;
    _Atomic uint32_t refs;       /* calls inside + 1 while provided; HF_RETIRED once withdrawn */
    pthread_mutex_t lock;        /* leaf: the two instance lists */
    hf_inst single;              /* the instance of a singleton */
    hf_inst *all, *free_list;
};
typedef struct pp_host_contract pp_host_contract;

/* ── reference counts ──────────────────────────────────────────────────────── */

static bool hf_ref(_Atomic uint32_t *refs) {
    uint32_t v = atomic_load_explicit(refs, memory_order_relaxed);
    do {
        if (v & HF_RETIRED) return false;
    } while (!atomic_compare_exchange_weak_explicit(refs, &v, v + 1, memory_order_acquire,
                                                    memory_order_relaxed));
    return true;
}

/* Drop one reference; true when that was the last one of a retired object. */
static bool hf_unref(_Atomic uint32_t *refs) {
    return atomic_fetch_sub_explicit(refs, 1, memory_order_acq_rel) == (HF_RETIRED | 1u);
}

/* No new references from now on; drop the alive one.  True when nothing is inside
 * (the caller finalizes); false when a call still is (it finalizes on its way out) or
 * the object was retired before. */
static bool hf_retire(_Atomic uint32_t *refs) {
    uint32_t old = atomic_fetch_or_explicit(refs, HF_RETIRED, memory_order_acq_rel);
    if (old & HF_RETIRED) return false;
    return hf_unref(refs);
}

/* ── the thread's host-call frames, error text and result memory ───────────── */

typedef struct hf_frame {
    struct hf_frame *outer;
    const pp_host_contract *hc;
    const char *fn_name; /* NULL: "fn <fn_id>" */
    uint32_t fn_id;      /* UINT32_MAX: the create callback */
    bool reported;       /* pp_host_error ran for this frame */
} hf_frame;

static _Thread_local hf_frame *hf_top;
static _Thread_local uint8_t *hf_scratch;
static _Thread_local size_t hf_scratch_cap;

static pthread_once_t hf_once = PTHREAD_ONCE_INIT;
static pthread_key_t hf_key; /* frees a thread's result memory when it exits */
static bool hf_key_ok;
static const void *hf_table[PP_HOST_MAX_FUNCTIONS];

static void hf_frame_push(hf_frame *f, const pp_host_contract *hc, const char *fn_name,
                          uint32_t fn_id) {
    f->outer = hf_top;
    f->hc = hc;
    f->fn_name = fn_name;
    f->fn_id = fn_id;
    f->reported = false;
    hf_top = f;
}

static void hf_frame_pop(hf_frame *f) { hf_top = f->outer; }

/* "host function app.kv@1.get", "host function app.kv@1 fn 3" or "host contract
 * app.kv@1 create_instance". */
static void hf_what(const hf_frame *f, char *buf, size_t cap) {
    if (f->fn_id == UINT32_MAX)
        snprintf(buf, cap, "host contract %s create_instance", f->hc->label);
    else if (f->fn_name)
        snprintf(buf, cap, "host function %s.%s", f->hc->label, f->fn_name);
    else
        snprintf(buf, cap, "host function %s fn %u", f->hc->label, f->fn_id);
}

static const char *hf_report(hf_frame *f, const char *message, size_t message_len,
                             const char *detail, size_t detail_len);

/* A failure of the contract outside a call (creating an instance), reported like one. */
static const char *hf_fail_create(const pp_host_contract *hc, const char *message) {
    hf_frame f;
    hf_frame_push(&f, hc, NULL, UINT32_MAX);
    const char *text = hf_report(&f, message, strlen(message), NULL, 0);
    hf_frame_pop(&f);
    return text;
}

/* The failure of the current frame: into the thread's error text (what the guest's
 * AbiError.message shows) and, with `detail`, to the runtime's log at Error. */
static const char *hf_report(hf_frame *f, const char *message, size_t message_len,
                             const char *detail, size_t detail_len) {
    char what[512];
    hf_what(f, what, sizeof what);
    int mlen = message_len > INT_MAX ? INT_MAX : (int)message_len;
    const char *text = ppi_error_textf("%s failed: %.*s", what, mlen, message ? message : "");
    f->reported = true;
    size_t tlen = strlen(text);
    size_t dlen = detail ? detail_len : 0;
    char *line = malloc(tlen + 1 + dlen + 1);
    if (!line) {
        ppi_log_emit(&f->hc->rt->log, LogLevel_Error, ppi_view(f->hc->scope), ppi_view(text));
        return text;
    }
    memcpy(line, text, tlen);
    size_t n = tlen;
    if (dlen) {
        line[n++] = '\n';
        memcpy(line + n, detail, dlen);
        n += dlen;
    }
    line[n] = '\0';
    ppi_log_emit(&f->hc->rt->log, LogLevel_Error, ppi_view(f->hc->scope),
                 (StringView){(const uint8_t *)line, n});
    free(line);
    return text;
}

uint32_t pp_host_error(uint32_t code, const char *message, size_t message_len,
                       const char *detail, size_t detail_len) {
    if (!message) message_len = 0;
    if (hf_top)
        hf_report(hf_top, message, message_len, detail, detail_len);
    else
        ppi_error_textf("%.*s", message_len > INT_MAX ? INT_MAX : (int)message_len,
                        message ? message : "");
    return code;
}

/* The thread is exiting: its result memory goes (TLS is still this thread's here). */
static void hf_free_scratch(void *p) {
    free(p);
    hf_scratch = NULL;
    hf_scratch_cap = 0;
}

static void hf_init(void);

bool pp_host_result_string(void *out, const char *data, size_t len) {
    if (!out) return false;
    StringView v = {NULL, 0};
    if (len) {
        if (!data) return false;
        /* a big buffer is given back when small results follow */
        bool shrink = hf_scratch_cap > (1u << 20) && len <= (64u << 10);
        if (len > hf_scratch_cap || shrink) {
            pthread_once(&hf_once, hf_init);
            size_t cap = len < 256 ? 256 : len;
            uint8_t *p = realloc(hf_scratch, cap);
            if (!p) return false;
            hf_scratch = p;
            hf_scratch_cap = cap;
            if (hf_key_ok) pthread_setspecific(hf_key, p);
        }
        memcpy(hf_scratch, data, len);
        v.ptr = hf_scratch;
        v.len = len;
    }
    memcpy(out, &v, sizeof v); /* `out` may be any caller memory: no alignment assumed */
    return true;
}

static void set_call_error(AbiError *out_err, uint32_t code, const char *msg) {
    if (!out_err) return;
    out_err->code = code;
    out_err->message = msg ? ppi_view(msg) : (StringView){NULL, 0};
}

/* ── finalizers ────────────────────────────────────────────────────────────── */

static void hf_contract_final(pp_host_contract *hc);

/* A destroyed instance with nothing inside: destroy it and keep the record for reuse. */
static void hf_inst_final(pp_host_contract *hc, hf_inst *in) {
    if (hc->destroy) hc->destroy(hc->user, in->user);
    in->user = NULL;
    ppi_mutex_lock(&hc->lock);
    in->next_free = hc->free_list;
    hc->free_list = in;
    ppi_mutex_unlock(&hc->lock);
}

/* A withdrawn contract with nothing inside: no call, create or destroy can get in any
 * more, so the lists are ours without the lock. */
static void hf_contract_final(pp_host_contract *hc) {
    for (hf_inst *in = hc->all; in; in = in->next_all)
        if (hf_retire(&in->refs) && hc->destroy) hc->destroy(hc->user, in->user);
    if (hc->release) hc->release(hc->user);
}

static void hf_withdraw(pp_host_contract *hc) {
    if (hf_retire(&hc->refs)) hf_contract_final(hc);
}

/* ── the native table ──────────────────────────────────────────────────────── */

__attribute__((noinline)) static void hf_dispatch(void *instance, uint32_t fn_id,
                                                  const void *args, void *out,
                                                  AbiError *out_err) {
    hf_inst *in = instance;
    if (PP_UNLIKELY(!in)) {
        set_call_error(out_err, AbiErrorCode_InvalidPointer,
                       "host function called with a null instance: pass the data of the "
                       "instance HostApi.get_host_contract returned");
        return;
    }
    if (PP_UNLIKELY(in->magic != HF_INST_MAGIC)) {
        set_call_error(out_err, AbiErrorCode_InvalidPointer,
                       "host function called with an instance that is not one of its "
                       "contract's (get it from HostApi.get_host_contract)");
        return;
    }
    pp_host_contract *hc = in->hc;
    ppi_record *r = ppi_my_record();
    if (PP_UNLIKELY(!r)) {
        set_call_error(out_err, AbiErrorCode_Generic, "host function: out of memory");
        return;
    }
    pp_runtime *prev = ppi_enter_rt(r, hc->rt);
    const pp_host_function *fn = hc->fns && fn_id < hc->fn_count ? &hc->fns[fn_id] : NULL;
    uint32_t code;
    const char *msg;
    if (PP_UNLIKELY(fn_id >= hc->fn_count)) {
        code = AbiErrorCode_FunctionNotAvailable;
        msg = ppi_error_textf("host contract %s has %u function(s): fn %u does not exist",
                              hc->label, hc->fn_count, fn_id);
        goto done;
    }
    if (PP_UNLIKELY(!hf_ref(&hc->refs))) {
        code = AbiErrorCode_HostContractNotFound;
        msg = ppi_error_textf("host contract %s was withdrawn by the host; look it up again "
                              "with HostApi.get_host_contract",
                              hc->label);
        goto done;
    }
    bool own = in != &hc->single;
    if (own && PP_UNLIKELY(!hf_ref(&in->refs))) {
        code = AbiErrorCode_FunctionNotAvailable;
        msg = ppi_error_textf("host contract %s: this instance was destroyed", hc->label);
        goto unref;
    }
    hf_frame f;
    hf_frame_push(&f, hc, fn ? fn->name : NULL, fn_id);
    if (fn && PP_UNLIKELY((fn->args_size && !args) || (fn->out_size && !out))) {
        bool no_args = fn->args_size && !args;
        char what[512];
        hf_what(&f, what, sizeof what);
        code = AbiErrorCode_InvalidPointer;
        msg = ppi_error_textf("%s: the %s pointer is null (the function %s %zu bytes)", what,
                              no_args ? "args" : "out",
                              no_args ? "reads an argument block of" : "writes a result of",
                              no_args ? fn->args_size : fn->out_size);
    } else {
        code = hc->call(hc->user, in->user, fn_id, args, out);
        msg = NULL;
        if (code && f.reported) {
            msg = ppi_self()->error_text;
        } else if (code) {
            char text[64];
            int n = snprintf(text, sizeof text, "returned code %u", code);
            msg = hf_report(&f, text, (size_t)n, NULL, 0);
        }
    }
    hf_frame_pop(&f);
    if (own && hf_unref(&in->refs)) hf_inst_final(hc, in);
unref:
    if (hf_unref(&hc->refs)) hf_contract_final(hc);
done:
    ppi_leave_rt(r, prev);
    set_call_error(out_err, code, msg);
}

/* Slot i of the table: hf_dispatch with fn_id i.  The names count in base 4. */
#define HF_FN(s, v)                                                                  \
    static void hf_fn_##s(void *i, const void *a, void *o, AbiError *e) {            \
        hf_dispatch(i, (v), a, o, e);                                                \
    }
#define HF_FN4(s, v) HF_FN(s##0, (v)*4) HF_FN(s##1, (v)*4 + 1) HF_FN(s##2, (v)*4 + 2) \
    HF_FN(s##3, (v)*4 + 3)
#define HF_FN16(s, v) HF_FN4(s##0, (v)*4) HF_FN4(s##1, (v)*4 + 1) HF_FN4(s##2, (v)*4 + 2) \
    HF_FN4(s##3, (v)*4 + 3)
#define HF_FN64(s, v) HF_FN16(s##0, (v)*4) HF_FN16(s##1, (v)*4 + 1) \
    HF_FN16(s##2, (v)*4 + 2) HF_FN16(s##3, (v)*4 + 3)
HF_FN64(x0, 0)
HF_FN64(x1, 1)
HF_FN64(x2, 2)
HF_FN64(x3, 3)

#define HF_REF(s) (const void *)(uintptr_t)hf_fn_##s,
#define HF_REF4(s) HF_REF(s##0) HF_REF(s##1) HF_REF(s##2) HF_REF(s##3)
#define HF_REF16(s) HF_REF4(s##0) HF_REF4(s##1) HF_REF4(s##2) HF_REF4(s##3)
#define HF_REF64(s) HF_REF16(s##0) HF_REF16(s##1) HF_REF16(s##2) HF_REF16(s##3)

static void hf_init(void) {
    const void *fns[] = {HF_REF64(x0) HF_REF64(x1) HF_REF64(x2) HF_REF64(x3)};
    _Static_assert(sizeof fns / sizeof fns[0] == PP_HOST_MAX_FUNCTIONS, "one slot per id");
    memcpy(hf_table, fns, sizeof fns);
    hf_key_ok = pthread_key_create(&hf_key, hf_free_scratch) == 0;
}

/* ── instances ─────────────────────────────────────────────────────────────── */

static pp_host_contract *hf_of(const HostContractInterface *self) {
    return (pp_host_contract *)(uintptr_t)self; /* iface is the first member */
}

static void hf_create_instance(const HostContractInterface *self, const void *args,
                               HostContractInstance *out) {
    if (!out) return;
    out->data = NULL;
    if (!self) return;
    pp_host_contract *hc = hf_of(self);
    ppi_record *r = ppi_my_record();
    if (!r) return;
    pp_runtime *prev = ppi_enter_rt(r, hc->rt);
    if (!hf_ref(&hc->refs)) goto out;
    if (!hc->create) {
        out->data = &hc->single;
        goto unref;
    }
    hf_frame f;
    hf_frame_push(&f, hc, NULL, UINT32_MAX);
    void *user = hc->create(hc->user, args);
    hf_frame_pop(&f);
    if (!user) {
        const char *why = f.reported ? ppi_self()->error_text
                                     : hf_fail_create(hc, "the create callback returned no "
                                                          "instance");
        ppi_set_last_error(hc->rt, why);
        goto unref;
    }
    ppi_mutex_lock(&hc->lock);
    hf_inst *in = hc->free_list;
    if (in) {
        hc->free_list = in->next_free;
    } else if ((in = calloc(1, sizeof *in)) != NULL) {
        in->next_all = hc->all;
        hc->all = in;
    }
    ppi_mutex_unlock(&hc->lock);
    if (!in) {
        ppi_set_last_error(hc->rt, hf_fail_create(hc, "out of memory"));
        if (hc->destroy) hc->destroy(hc->user, user);
        goto unref;
    }
    in->magic = HF_INST_MAGIC;
    in->hc = hc;
    in->user = user;
    in->next_free = NULL;
    atomic_store_explicit(&in->refs, 1, memory_order_release);
    out->data = in;
unref:
    if (hf_unref(&hc->refs)) hf_contract_final(hc);
out:
    ppi_leave_rt(r, prev);
}

static void hf_destroy_instance(const HostContractInterface *self, HostContractInstance inst) {
    if (!self || !inst.data) return;
    pp_host_contract *hc = hf_of(self);
    hf_inst *in = inst.data;
    if (in == &hc->single || in->magic != HF_INST_MAGIC || in->hc != hc) return;
    ppi_record *r = ppi_my_record();
    if (!r) return;
    pp_runtime *prev = ppi_enter_rt(r, hc->rt);
    /* a withdrawn contract destroyed its instances already */
    if (hf_ref(&hc->refs)) {
        if (hf_retire(&in->refs)) hf_inst_final(hc, in);
        if (hf_unref(&hc->refs)) hf_contract_final(hc);
    }
    ppi_leave_rt(r, prev);
}

static bool hf_managed(const HostContractInterface *iface) {
    return iface->create_instance == hf_create_instance;
}

/* ── providing and withdrawing ─────────────────────────────────────────────── */

static void hf_free(void *p) {
    pp_host_contract *hc = p;
    for (hf_inst *in = hc->all, *next; in; in = next) {
        next = in->next_all;
        free(in);
    }
    if (hc->fns)
        for (uint32_t i = 0; i < hc->fn_count; i++) free((void *)(uintptr_t)hc->fns[i].name);
    free(hc->fns);
    free(hc->label);
    free(hc->scope);
    ppi_leaf_mutex_destroy(&hc->lock);
    free(hc);
}

static pp_host_contract *hf_new(pp_runtime *rt, const pp_host_contract_desc *d, pp_error *err) {
    pp_host_contract *hc = calloc(1, sizeof *hc);
    if (!hc || ppi_leaf_mutex_init(&hc->lock) != 0) {
        free(hc);
        ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
        return NULL;
    }
    char name[256];
    ppi_view_copy(name, sizeof name, d->name);
    char buf[300];
    snprintf(buf, sizeof buf, "%s@%u", name, d->version.major);
    hc->label = ppi_strdup(buf);
    snprintf(buf, sizeof buf, "host.%s", name);
    hc->scope = ppi_strdup(buf);
    bool ok = hc->label && hc->scope;
    if (ok && d->functions && d->function_count) {
        hc->fns = calloc(d->function_count, sizeof *hc->fns);
        ok = hc->fns != NULL;
        for (uint32_t i = 0; ok && i < d->function_count; i++) {
            hc->fns[i] = d->functions[i];
            if (d->functions[i].name) ok = (hc->fns[i].name = ppi_strdup(d->functions[i].name));
        }
    }
    hc->fn_count = d->function_count;
    if (!ok) {
        hf_free(hc);
        ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
        return NULL;
    }
    char canonical[320];
    int n = snprintf(canonical, sizeof canonical, "host_contract:%s@%u", name, d->version.major);
    hc->rt = rt;
    hc->call = d->call;
    hc->create = d->create;
    hc->destroy = d->destroy;
    hc->release = d->release;
    hc->user = d->user_data;
    atomic_init(&hc->refs, 1);
    hc->single.magic = HF_INST_MAGIC;
    hc->single.hc = hc;
    atomic_init(&hc->single.refs, 1);
    HostContractInterface *i = &hc->iface;
    i->contract_id = pp_fnv1a64((const uint8_t *)canonical, (size_t)n);
    i->contract_version = d->version;
    i->singleton = d->create == NULL;
    i->dispatch_type = DispatchType_Native;
    i->runtime = rt;
    i->user_data = hc;
    i->create_instance = hf_create_instance;
    i->destroy_instance = hf_destroy_instance;
    i->dispatch.native.function_count = d->function_count;
    i->dispatch.native.functions = hf_table;
    return hc;
}

int32_t pp_runtime_provide_host_contract(pp_runtime *rt, const pp_host_contract_desc *d,
                                         bool replace, const HostContractInterface **out,
                                         pp_error *err) {
    static const char what[] = "pp_runtime_provide_host_contract";
    if (out) *out = NULL;
    if (!rt || !d || !d->call)
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "%s: the runtime, the description and its call function are required",
                        what);
    if (atomic_load(&rt->closed)) return ppi_closed_error(err, "provide_host_contract");
    if (!d->name.ptr || d->name.len == 0 || d->name.len > 200 ||
        memchr(d->name.ptr, '@', d->name.len) || memchr(d->name.ptr, '\0', d->name.len) ||
        !ppi_utf8_valid(d->name.ptr, d->name.len))
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "%s: the contract name must be 1 to 200 bytes of UTF-8 without '@' "
                        "(the major version goes in `version`)",
                        what);
    if (d->function_count > PP_HOST_MAX_FUNCTIONS)
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "%s: a host contract has at most %d functions (got %u)", what,
                        PP_HOST_MAX_FUNCTIONS, d->function_count);
    pthread_once(&hf_once, hf_init);
    pp_host_contract *hc = hf_new(rt, d, err);
    if (!hc) return PP_ERR_NO_MEMORY;
    const HostContractInterface *replaced = NULL;
    int32_t st = ppi_host_publish(rt, &hc->iface, replace, &replaced, err);
    if (st != PP_OK) {
        if (st == PP_ERR_HOST_CONTRACT_EXISTS && err)
            snprintf(err->bundle, sizeof err->bundle, "%s", hc->label);
        hf_free(hc);
        return st;
    }
    ppi_runtime_bury(rt, hc, hf_free);
    if (replaced && hf_managed(replaced)) hf_withdraw(hf_of(replaced));
    if (atomic_load(&rt->closed)) {
        /* closed meanwhile: pp_runtime_close may have withdrawn the others already */
        pp_runtime_withdraw_host_contract(rt, hc->iface.contract_id, &hc->iface);
        return ppi_closed_error(err, "provide_host_contract");
    }
    if (out) *out = &hc->iface;
    return PP_OK;
}

bool pp_runtime_withdraw_host_contract(pp_runtime *rt, uint64_t contract_id,
                                       const HostContractInterface *only) {
    if (!rt) return false;
    const HostContractInterface *gone = ppi_host_unpublish(rt, contract_id, only);
    if (gone && hf_managed(gone)) hf_withdraw(hf_of(gone));
    return gone != NULL;
}

void ppi_hostfn_withdraw_all(pp_runtime *rt) {
    for (;;) {
        const HostContractInterface *gone = NULL;
        ppi_mutex_lock(&rt->lock);
        for (size_t i = 0; i < rt->host_contracts_len && !gone; i++)
            if (hf_managed(rt->host_contracts[i].iface)) gone = rt->host_contracts[i].iface;
        ppi_mutex_unlock(&rt->lock);
        if (!gone) return;
        pp_runtime_withdraw_host_contract(rt, gone->contract_id, gone);
    }
}
