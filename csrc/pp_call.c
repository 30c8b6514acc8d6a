/*
 * pp_call.c — calling contracts: the dispatch formula (abi-runtime.md §2.4), checked
 * calls through registry handles, prepared call frames, checked instance creation,
 * and cancel tokens.
 *
 * A checked call resolves its handle without a lock (ppi_registry_lookup): interface
 * blocks are never freed before the runtime, and a loader record that was retired
 * answers StaleHandle itself, so nothing here waits for or counts calls.
 */
#include <stdlib.h>
#include <string.h>

#include "pp_internal.h"

static void set_err(AbiError *out_err, uint32_t code, const char *msg) {
    if (!out_err) return;
    out_err->code = code;
    out_err->message = msg ? ppi_view(msg) : (StringView){NULL, 0};
}

void pp_call(const GuestContractInterface *iface, void *instance_data,
             uint64_t instance_contract_id, uint32_t fn_id, const void *args, void *out,
             CallArena *arena, AbiError *out_err) {
    if (PP_UNLIKELY(!iface)) {
        set_err(out_err, AbiErrorCode_InvalidPointer, "pp_call: interface pointer is null");
        return;
    }
    GuestContractInstance inst = {instance_data, instance_contract_id};
    if (PP_LIKELY(iface->dispatch_type == DispatchType_VirtualMachine)) {
        iface->dispatch.vm.call(iface->dispatch.vm.loader_data, inst, fn_id, args, out, arena,
                                out_err);
        return;
    }
    if (fn_id >= iface->dispatch.native.function_count) {
        set_err(out_err, AbiErrorCode_FunctionNotAvailable, NULL);
        return;
    }
    NativeGuestFn fn = (NativeGuestFn)(uintptr_t)iface->dispatch.native.functions[fn_id];
    set_err(out_err, AbiErrorCode_Ok, NULL);
    fn(inst, args, out, out_err);
}

/* The interface behind {index, generation}, or NULL with `out_err` set. */
static const GuestContractInterface *checked_iface(pp_runtime *rt, uint32_t index,
                                                   uint32_t generation, AbiError *out_err) {
    GuestContractHandle h = {index, generation};
    bool invalid;
    const GuestContractInterface *iface = ppi_registry_lookup(&rt->reg, h, &invalid);
    if (PP_LIKELY(iface != NULL)) return iface;
    const char *why =
        atomic_load_explicit(&rt->closed, memory_order_relaxed)
            ? "stale contract handle: the runtime is closed"
        : invalid ? "invalid contract handle: no such registry slot"
                  : "stale contract handle: its bundle was unloaded or the contract was "
                    "removed by a reload";
    set_err(out_err, AbiErrorCode_StaleHandle, why);
    return NULL;
}

/*
 * A checked call into a native library (pp_native.c): the thread is marked inside the
 * runtime for the call, so pp_runtime_close waits for it and pp_runtime_free cannot
 * close the library under it.  Native code cannot be interrupted, so no time limit
 * applies; a cancel token already set refuses the call before it starts.
 */
static uint32_t native_call(pp_runtime *rt, const GuestContractInterface *iface,
                            GuestContractInstance inst, uint32_t fn_id, const void *args,
                            void *out, AbiError *out_err) {
    pp_cancel *cancel = ppi_self()->next_cancel;
    if (PP_UNLIKELY(cancel && pp_cancel_requested(cancel))) {
        set_err(out_err, PP_ABI_CALL_CANCELLED, "native call cancelled before it started");
        return out_err->code;
    }
    ppi_record *r = ppi_my_record();
    pp_runtime *prev = r ? ppi_enter_rt(r, rt) : NULL;
    pp_call(iface, inst.data, inst.contract_id, fn_id, args, out, NULL, out_err);
    if (r) ppi_leave_rt(r, prev);
    return out_err->code;
}

uint32_t pp_call_handle(pp_runtime *rt, uint32_t index, uint32_t generation,
                        void *instance_data, uint64_t instance_contract_id, uint32_t fn_id,
                        const void *args, void *out, CallArena *arena, AbiError *out_err) {
    if (PP_UNLIKELY(!rt || !out_err)) {
        set_err(out_err, AbiErrorCode_InvalidPointer, "pp_call_handle: null runtime");
        return AbiErrorCode_InvalidPointer;
    }
    const GuestContractInterface *iface = checked_iface(rt, index, generation, out_err);
    if (PP_UNLIKELY(!iface)) return out_err->code;
    if (arena) pp_arena_reset(arena);
    if (iface->dispatch_type == DispatchType_Native)
        return native_call(rt, iface, (GuestContractInstance){instance_data, instance_contract_id},
                           fn_id, args, out, out_err);
    pp_call(iface, instance_data, instance_contract_id, fn_id, args, out, arena, out_err);
    return out_err->code;
}

uint32_t pp_call_frame_invoke(pp_call_frame *f) {
    if (PP_UNLIKELY(!f)) return AbiErrorCode_InvalidPointer;
    /* the frame's limits replace (not add to) any pp_set_call_limits of this thread,
     * and its failure comes back as a value, so the loader logs it at Debug */
    ppi_thread *t = ppi_self();
    uint64_t saved_timeout = t->next_timeout_ns;
    pp_cancel *saved_cancel = t->next_cancel;
    t->next_timeout_ns = f->timeout_ns;
    t->next_cancel = f->cancel;
    t->quiet_next = true;
    uint32_t code = pp_call_handle(f->rt, f->index, f->generation, f->instance_data,
                                   f->instance_contract_id, f->fn_id, f->args, f->out,
                                   f->arena, &f->err);
    t->quiet_next = false;
    t->next_timeout_ns = saved_timeout;
    t->next_cancel = saved_cancel;
    return code;
}

/* ── instances through handles ─────────────────────────────────────────────── */

uint32_t pp_instance_create(pp_runtime *rt, uint32_t index, uint32_t generation,
                            const void *args, GuestContractInstance *out, AbiError *out_err) {
    if (!rt || !out || !out_err) {
        set_err(out_err, AbiErrorCode_InvalidPointer, "pp_instance_create: null argument");
        return AbiErrorCode_InvalidPointer;
    }
    out->data = NULL;
    out->contract_id = 0;
    const GuestContractInterface *iface = checked_iface(rt, index, generation, out_err);
    if (!iface) return out_err->code;
    ppi_thread *t = ppi_self();
    t->last_code = 0;
    t->quiet_next = true;
    rt->api.create_guest_instance(&rt->api, iface, args, out);
    t->quiet_next = false;
    if (out->data) {
        set_err(out_err, AbiErrorCode_Ok, NULL);
        return AbiErrorCode_Ok;
    }
    if (t->last_code) {
        set_err(out_err, t->last_code, t->error_text);
    } else {
        set_err(out_err, AbiErrorCode_Generic,
                "create_instance returned no instance (the contract's loader gave no reason)");
    }
    return out_err->code;
}

void pp_instance_destroy(pp_runtime *rt, uint32_t index, uint32_t generation,
                         GuestContractInstance instance) {
    if (!rt || !instance.data) return;
    AbiError ignored;
    const GuestContractInterface *iface = checked_iface(rt, index, generation, &ignored);
    /* a stale handle: the instance died with its bundle's VM */
    if (iface) rt->api.destroy_guest_instance(&rt->api, iface, instance);
}

/* ── cancel tokens ─────────────────────────────────────────────────────────── */

pp_cancel *pp_cancel_new(void) {
    pp_cancel *c = malloc(sizeof *c);
    if (c) atomic_init(&c->requested, 0);
    return c;
}

void pp_cancel_free(pp_cancel *token) { free(token); }

void pp_cancel_request(pp_cancel *token) {
    if (token) atomic_store_explicit(&token->requested, 1, memory_order_release);
}

void pp_cancel_clear(pp_cancel *token) {
    if (token) atomic_store_explicit(&token->requested, 0, memory_order_release);
}

bool pp_cancel_requested(const pp_cancel *token) {
    return token && atomic_load_explicit(&token->requested, memory_order_acquire);
}
