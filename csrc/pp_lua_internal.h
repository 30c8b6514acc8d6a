/*
 * pp_lua_internal.h — shared between the Lua loader's files: pp_lua.c (protocol,
 * dispatch, reload) and pp_lua_vm.c (state construction, limits).
 */
#ifndef PP_LUA_INTERNAL_H
#define PP_LUA_INTERNAL_H

#include "lua.h"
#include "pp_internal.h"

/* Every bundle VM keeps these values at the bottom of its stack: the traceback
 * handler, the arena_alloc closure, and the instance maker
 * (function(instances, id, factory, host) that runs a factory and stores its result,
 * so creating an instance allocates only inside a protected call). */
enum {
    PPI_STACK_TRACEBACK = 1,
    PPI_STACK_ARENA_ALLOC = 2,
    PPI_STACK_MAKE_INSTANCE = 3,
    PPI_STACK_BASE = 3
};

void ppi_lua_push_pointer(lua_State *L, const void *p);
/* The traceback message handler every lua_pcall of the loader uses. */
int ppi_lua_traceback(lua_State *L);
/* The error value on top of the stack as text (never NULL). */
const char *ppi_lua_error_text(lua_State *L);

/* A fresh VM with [traceback, arena_alloc] on its stack; NULL with `err` filled. */
lua_State *ppi_lua_vm_new(pp_runtime *rt, const char *dir, const char *bundle,
                          const pp_lua_config *cfg, pp_error *err);
void ppi_lua_vm_close(lua_State *L);
/* A full collection (after an out-of-memory error), protected against finalizers. */
void ppi_lua_vm_collect(lua_State *L);
/* Bytes held by the VM's garbage-collected heap. */
int64_t ppi_lua_vm_memory(lua_State *L);

/* Per-call limits, armed around one lua_pcall. */
typedef struct ppi_call_limits {
    long long deadline_ns;
    pp_cancel *cancel;
    uint32_t tripped; /* 0, PP_ABI_CALL_TIMEOUT or PP_ABI_CALL_CANCELLED */
    struct ppi_call_limits *previous;
} ppi_call_limits;

/* Arm the count hook when a timeout or cancel token applies; returns whether it did
 * (then ppi_lua_limits_end must follow the call). */
bool ppi_lua_limits_begin(lua_State *L, ppi_call_limits *lim, uint64_t timeout_ns,
                          pp_cancel *cancel);
void ppi_lua_limits_end(lua_State *L, ppi_call_limits *lim);

#endif /* PP_LUA_INTERNAL_H */
