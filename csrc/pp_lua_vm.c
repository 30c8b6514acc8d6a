/*
 * pp_lua_vm.c — building and tearing down a bundle's LuaJIT state: libraries, the
 * embedded SDK searcher, package.path, the optional restricted profile, the counting
 * allocator behind the memory limit, and the count hook behind timeouts and cancel.
 *
 * Rules: everything here runs with the bundle's VM lock held (or before the VM is
 * published, or after it was detached for closing); lua_error is raised only from
 * frames that own nothing.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"
#include "pp_lua_internal.h"
#include "pp_lua_jit.h"

/* ── small helpers ─────────────────────────────────────────────────────────── */

/* The error value on top of the stack as text (never NULL). */
const char *ppi_lua_error_text(lua_State *L) {
    const char *s = lua_tostring(L, -1);
    return s ? s : "(error object is not a string)";
}

/* Traceback message handler, stack index 1 of every VM. */
int ppi_lua_traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) {
            msg = lua_tostring(L, -1);
        } else {
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
        }
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* arena_alloc(size, arena_ptr) -> address; upvalue 1 = the HostApi (light userdata). */
static int arena_alloc(lua_State *L) {
    lua_Number size = luaL_checknumber(L, 1);
    lua_Number where = luaL_optnumber(L, 2, 0);
    if (!(size >= 0 && size <= (lua_Number)UINT32_MAX) || size != (lua_Number)(uint32_t)size)
        return luaL_argerror(L, 1, "size must be an integer in 0..4294967295");
    if (!(where >= 0 && where < 9007199254740992.0))
        return luaL_argerror(L, 2, "arena_ptr must be a non-negative address");
    const HostApi *host = lua_touserdata(L, lua_upvalueindex(1));
    CallArena *arena = (CallArena *)(uintptr_t)where;
    void *p;
    /* 8-byte alignment (upstream used 1): a struct placed after an odd-length string
     * stays aligned for every scalar and pointer field */
    size_t align = 8;
    if (arena)
        p = pp_arena_alloc(arena, (size_t)size, align);
    else
        p = host ? host->alloc(host, (size_t)size, align) : NULL;
    ppi_lua_push_pointer(L, p);
    return 1;
}

/* ── embedded SDK: a searcher that serves polyplug_guest / polyplug_abi / abi ── */

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Where a bundle's own modules live, relative to its directory (as package.path). */
static const char *const module_patterns[] = {"%s.lua", "%s/init.lua", "%s.init.lua"};

/* ── a signed bundle's verified files ──────────────────────────────────────── */

/*
 * A signed bundle's VM holds its fileset (pp_fileset.c) in a userdata box, an upvalue
 * of the searchers: modules come from the verified bytes, never from the directory,
 * which may have changed since it was verified.  The box releases its reference when
 * collected; __gc checks its argument and runs once, so a guest that reaches it (the
 * debug library) cannot release the set twice.
 */
#define FILESET_META "polyplug.fileset"

typedef struct fileset_box {
    pp_fileset *fs; /* NULL once released */
    char dir[];     /* the bundle directory, for chunk names */
} fileset_box;

static fileset_box *to_box(lua_State *L, int idx) {
    fileset_box *box = lua_touserdata(L, idx);
    if (!box || !lua_getmetatable(L, idx)) return NULL;
    luaL_getmetatable(L, FILESET_META);
    bool ours = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return ours ? box : NULL;
}

static int fileset_gc(lua_State *L) {
    fileset_box *box = to_box(L, 1);
    if (box) {
        pp_fileset_release(box->fs);
        box->fs = NULL;
    }
    return 0;
}

/* Push a box holding a new reference to `fs`. */
static void push_fileset_box(lua_State *L, pp_fileset *fs, const char *dir) {
    size_t n = dir ? strlen(dir) : 0;
    fileset_box *box = lua_newuserdata(L, sizeof *box + n + 1);
    box->fs = NULL;
    memcpy(box->dir, dir ? dir : "", n + 1);
    if (luaL_newmetatable(L, FILESET_META)) {
        lua_pushcfunction(L, fileset_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
    }
    lua_setmetatable(L, -2);
    box->fs = pp_fileset_retain(fs); /* after the last allocation: nothing can raise now */
}

/* The fileset of a signed bundle's searcher (upvalue `up`): NULL for an unsigned
 * bundle; raises if the bundle is signed but the set is gone. */
static const fileset_box *signed_files(lua_State *L, int up) {
    if (lua_isnil(L, lua_upvalueindex(up))) return NULL;
    const fileset_box *box = to_box(L, lua_upvalueindex(up));
    if (!box || !box->fs) luaL_error(L, "the bundle's verified files are no longer available");
    return box;
}

/* The bytes of module `name` among a signed bundle's files, with the relative path
 * it was found under in `rel`. */
static bool fileset_module(const fileset_box *box, const char *module, char *rel, size_t cap,
                           StringView *data) {
    for (size_t i = 0; i < PP_COUNTOF(module_patterns); i++) {
        int n = snprintf(rel, cap, module_patterns[i], module);
        if (n > 0 && (size_t)n < cap && pp_fileset_get(box->fs, ppi_view(rel), data))
            return true;
    }
    return false;
}

/* Would the bundle (directory: upvalue 1, may be nil; verified files: upvalue 2, may
 * be nil) satisfy `require(name)` itself? */
static bool bundle_has_module(lua_State *L, const char *name) {
    const fileset_box *box = signed_files(L, 2);
    char rel[4096];
    if (box) {
        StringView data;
        return fileset_module(box, name, rel, sizeof rel, &data);
    }
    const char *dir = lua_tostring(L, lua_upvalueindex(1));
    if (!dir) return false;
    char path[4200];
    for (size_t i = 0; i < PP_COUNTOF(module_patterns); i++) {
        int n = snprintf(rel, sizeof rel, module_patterns[i], name);
        if (n <= 0 || (size_t)n >= sizeof rel) continue;
        n = snprintf(path, sizeof path, "%s/%s", dir, rel);
        if (n > 0 && (size_t)n < sizeof path && file_exists(path)) return true;
    }
    return false;
}

/*
 * The SDK modules compiled to bytecode once per process: loading bytecode costs a
 * few microseconds where parsing the source costs tens, on every bundle load.  The
 * cache is immutable once filled (derived from constants, shared by all runtimes).
 * The loader's own chunks (the stack guard, the restricted load) are also stripped of
 * debug information: their line numbers would only point into this file, and loading
 * them with it costs every VM about 4 KiB.  The SDK modules keep theirs (a guest's
 * error may be raised there).
 */
enum { SDK_MAX = 8, GUARD_SLOT = SDK_MAX, TEXT_LOAD_SLOT, CHUNKS };
static pthread_mutex_t compile_lock = PTHREAD_MUTEX_INITIALIZER; /* a leaf lock */
static pthread_once_t compile_lock_listed = PTHREAD_ONCE_INIT;

static void list_compile_lock(void) { (void)ppi_leaf_mutex_adopt(&compile_lock); }
static struct {
    char *code;
    size_t len;
    bool failed;
} compiled[CHUNKS];

typedef struct dump_buffer {
    char *data;
    size_t len, cap;
} dump_buffer;

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
    (void)L;
    dump_buffer *buf = ud;
    if (!ppi_grow((void **)&buf->data, &buf->cap, buf->len + sz, 1)) return 1;
    memcpy(buf->data + buf->len, p, sz);
    buf->len += sz;
    return 0;
}

typedef struct compile_job {
    const char *source, *chunk;
    size_t len;
    bool strip;
    dump_buffer buf;
} compile_job;

/* lua_CFunction(job): compile job->source into job->buf (in a scratch state). */
static int compile_chunk(lua_State *S) {
    compile_job *j = lua_touserdata(S, 1);
    if (luaL_loadbuffer(S, j->source, j->len, j->chunk) != 0) return lua_error(S);
    if (!j->strip) {
        if (lua_dump(S, dump_writer, &j->buf) != 0) return luaL_error(S, "out of memory");
        return 0;
    }
    lua_pushcfunction(S, luaopen_string);
    lua_call(S, 0, 1);
    lua_getfield(S, -1, "dump");
    lua_pushvalue(S, -3);
    lua_pushboolean(S, 1); /* strip */
    lua_call(S, 2, 1);
    size_t n;
    const char *code = lua_tolstring(S, -1, &n);
    if (!code || dump_writer(S, code, n, &j->buf) != 0) return luaL_error(S, "out of memory");
    return 0;
}

/* Bytecode of internal chunk `slot` compiled from `source` (NULL if it cannot be
 * compiled: load the source).  Slots below ppi_sdk_modules_len are the SDK modules. */
static const char *cached_bytecode(size_t slot, const char *source, size_t source_len,
                                   const char *chunk, size_t *len) {
    if (slot >= CHUNKS) return NULL;
    pthread_once(&compile_lock_listed, list_compile_lock); /* taken around fork() */
    pthread_mutex_lock(&compile_lock);
    if (!compiled[slot].code && !compiled[slot].failed) {
        compile_job job = {source, chunk, source_len, slot >= SDK_MAX, {NULL, 0, 0}};
        lua_State *S = luaL_newstate();
        bool ok = S && lua_cpcall(S, compile_chunk, &job) == 0;
        if (S) lua_close(S);
        if (ok) {
            compiled[slot].code = job.buf.data;
            compiled[slot].len = job.buf.len;
        } else {
            free(job.buf.data);
            compiled[slot].failed = true;
        }
    }
    const char *code = compiled[slot].code;
    *len = compiled[slot].len;
    pthread_mutex_unlock(&compile_lock);
    return code;
}

/* Load an internal chunk: its cached bytecode, or its source. */
static int load_internal(lua_State *L, size_t slot, const char *source, size_t source_len,
                         const char *chunk) {
    size_t len;
    const char *code = cached_bytecode(slot, source, source_len, chunk, &len);
    if (!code) code = source, len = source_len;
    return luaL_loadbuffer(L, code, len, chunk);
}

static int sdk_searcher(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    for (size_t i = 0; i < ppi_sdk_modules_len; i++) {
        const ppi_embedded_module *mod = &ppi_sdk_modules[i];
        if (strcmp(mod->name, name) != 0) continue;
        if (bundle_has_module(L, name)) {
            lua_pushfstring(L, "\n\tembedded %s skipped: the bundle has its own copy", name);
            return 1;
        }
        char chunk[128];
        snprintf(chunk, sizeof chunk, "=[polyplug sdk %s]", name);
        if (load_internal(L, i, mod->source, mod->len, chunk) != 0) return lua_error(L);
        return 1;
    }
    lua_pushfstring(L, "\n\tno embedded polyplug module '%s'", name);
    return 1;
}

/* ── the C-stack guard ─────────────────────────────────────────────────────── */

/*
 * LuaJIT keeps no count of C-level nesting: a function that resumes a new coroutine at
 * every level, or calls string.gsub from a gsub callback, recurses on the C stack until
 * the process dies.  Every standard function that calls back into Lua from C gets a
 * check in front of it (collectgarbage too: a full collection run from a finalizer
 * runs the next pending finalizer inside it, one C level per finalizer): when the calling thread has less than PPI_CSTACK_RESERVE bytes
 * of stack left, it raises "C stack overflow" (like Lua 5.1's LUAI_MAXCCALLS) while
 * there is still room to unwind and report.  The wrappers tail-call the originals, so
 * they add no C frame themselves.  Not covered: FFI callbacks and native code the guest
 * calls (the FFI reaches everything), debug hooks, jit.profile callbacks.
 */
static const char guard_src[] =
    "local check = ...\n"
    "local type, error = type, error\n"
    "local function guard(t, k)\n"
    "  local f = t and t[k]\n"
    "  if f then t[k] = function(...) check() return f(...) end end\n"
    "end\n"
    "local co = coroutine\n"
    "guard(co, 'resume')\n"
    "local wrap = co.wrap\n"
    "co.wrap = function(f)\n"
    "  if type(f) ~= 'function' then\n"
    "    error(\"bad argument #1 to 'wrap' (function expected, got \" .. type(f) .. \")\", 2)\n"
    "  end\n"
    "  local g = wrap(f)\n"
    "  return function(...) check() return g(...) end\n"
    "end\n"
    "guard(string, 'gsub'); guard(string, 'format'); guard(table, 'sort')\n"
    "guard(_G, 'print'); guard(_G, 'xpcall'); guard(_G, 'load'); guard(_G, 'dofile')\n"
    "guard(_G, 'require'); guard(_G, 'collectgarbage')\n";

static int cstack_check(lua_State *L) {
    if (PP_LIKELY(ppi_cstack_left() >= PPI_CSTACK_RESERVE)) return 0;
    luaL_where(L, 2); /* the guest's line, not the wrapper's */
    lua_pushliteral(L, "C stack overflow");
    lua_concat(L, 2);
    return lua_error(L);
}

/* ── module files ──────────────────────────────────────────────────────────── */

/*
 * The searcher for Lua module files (package.loaders[3], in place of the standard one).
 * It reads a candidate with ppi_read_regular_file, so a FIFO or device named like a
 * module is an error instead of a hang.  Upvalue 1 is a fixed template list for the
 * restricted profile (the bundle directory only, whatever the guest does to
 * package.path; text chunks only), or nil: then package.path is used, as upstream.
 * Upvalue 2 is a signed bundle's fileset box, or nil: a signed bundle's modules come
 * from its verified files only (the bundle's own module patterns, nothing else).
 */
static int signed_searcher(lua_State *L, const fileset_box *box, const char *name,
                           bool text_only) {
    const char *module = luaL_gsub(L, name, ".", "/");
    char rel[4096];
    StringView data;
    if (fileset_module(box, module, rel, sizeof rel, &data)) {
        lua_pushfstring(L, "@%s/%s", box->dir, rel);
        if (luaL_loadbufferx(L, (const char *)data.ptr, data.len, lua_tostring(L, -1),
                             text_only ? "t" : NULL) != 0)
            return luaL_error(L, "error loading module '%s' from file '%s/%s':\n\t%s", name,
                              box->dir, rel, lua_tostring(L, -1));
        return 1;
    }
    luaL_Buffer tried;
    luaL_buffinit(L, &tried);
    for (size_t i = 0; i < PP_COUNTOF(module_patterns); i++) {
        lua_pushliteral(L, "\n\tno file '");
        lua_pushstring(L, box->dir);
        lua_pushliteral(L, "/");
        lua_pushfstring(L, module_patterns[i], module);
        lua_pushliteral(L, "' among the signed bundle's verified files");
        lua_concat(L, 5);
        luaL_addvalue(&tried);
    }
    luaL_pushresult(&tried);
    return 1;
}

static int file_searcher(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    const char *fixed = lua_tostring(L, lua_upvalueindex(1));
    const fileset_box *box = signed_files(L, 2);
    if (box) return signed_searcher(L, box, name, fixed != NULL);
    const char *templates = fixed;
    if (!templates) {
        lua_getglobal(L, "package");
        lua_getfield(L, -1, "path");
        templates = lua_tostring(L, -1);
        if (!templates) return luaL_error(L, "'package.path' must be a string");
    }
    const char *module = luaL_gsub(L, name, ".", "/");
    luaL_Buffer tried;
    luaL_buffinit(L, &tried);
    for (const char *p = templates; *p;) {
        const char *end = strchr(p, ';');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n) {
            lua_pushlstring(L, p, n);
            const char *path = luaL_gsub(L, lua_tostring(L, -1), "?", module);
            char *data;
            size_t len;
            const char *why;
            if (ppi_read_regular_file(path, &data, &len, &why)) {
                lua_pushfstring(L, "@%s", path);
                int rc = luaL_loadbufferx(L, data, len, lua_tostring(L, -1), fixed ? "t" : NULL);
                free(data);
                if (rc != 0)
                    return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name,
                                      path, lua_tostring(L, -1));
                return 1;
            }
            if (strcmp(why, "file does not exist") != 0 && strcmp(why, strerror(ENOTDIR)) != 0)
                return luaL_error(L, "module '%s': cannot read '%s': %s", name, path, why);
            lua_pushfstring(L, "\n\tno file '%s'", path);
            luaL_addvalue(&tried);
            lua_pop(L, 2);
        }
        p += n + (end ? 1 : 0);
    }
    luaL_pushresult(&tried);
    return 1;
}

/* A searcher placed before the C-module searchers (default profile): dlopen would
 * block opening a FIFO named like a module, so a non-regular candidate on
 * package.cpath is an error here.  Finds nothing itself. */
static int cpath_guard(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "cpath");
    const char *templates = lua_tostring(L, -1);
    if (!templates) return 0;
    const char *module = luaL_gsub(L, name, ".", "/");
    for (const char *p = templates; *p;) {
        const char *end = strchr(p, ';');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n) {
            lua_pushlstring(L, p, n);
            const char *path = luaL_gsub(L, lua_tostring(L, -1), "?", module);
            struct stat st;
            if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
                return luaL_error(L, "module '%s': '%s' is not a regular file", name, path);
            lua_pop(L, 2);
        }
        p += n + (end ? 1 : 0);
    }
    lua_pushliteral(L, "");
    return 1;
}

/* In place of the C-module searchers of a signed bundle: a shared library cannot be
 * loaded from verified bytes, so none is loaded at all. */
static int signed_no_c_modules(lua_State *L) {
    lua_pushliteral(L, "\n\tno C modules: the bundle is signed, and only its verified Lua "
                       "files are loaded");
    return 1;
}

/* ── VM construction ───────────────────────────────────────────────────────── */

/* Prepend `prefix` to package[field] through the table API (never via Lua source). */
static void prepend_package_field(lua_State *L, const char *field, const char *prefix) {
    lua_getglobal(L, "package");
    lua_getfield(L, -1, field);
    const char *old = lua_tostring(L, -1);
    lua_pushstring(L, prefix);
    lua_pushstring(L, old ? old : "");
    lua_concat(L, 2);
    lua_setfield(L, -3, field);
    lua_pop(L, 2);
}

/* ── the restricted profile ─────────────────────────────────────────────────── */

/* Globals a restricted bundle keeps; everything else in _G is removed.  Guards file
 * and process access (io, os.execute, dofile/loadfile) and introspection (debug). */
static const char *const restricted_globals[] = {
    "_G", "_VERSION", "assert", "error", "getmetatable", "ipairs", "next", "pairs",
    "pcall", "print", "rawequal", "rawget", "rawset", "require", "select", "setmetatable",
    "tonumber", "tostring", "type", "unpack", "xpcall", "load", "loadstring",
    "collectgarbage", "string", "table", "math", "bit", "coroutine", "jit", "os", "package",
    "ffi",
};

/* The os functions a restricted bundle keeps: clocks and dates only. */
static const char *const restricted_os[] = {"clock", "date", "difftime", "time"};

/* Modules that stay loadable by name (package.loaded entries). */
static const char *const restricted_loaded[] = {
    "_G", "string", "table", "math", "bit", "coroutine", "jit", "ffi", "package", "os",
};

static bool listed(const char *const *list, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0) return true;
    return false;
}

/* Remove every string key of the table at `idx` that is not in `list`. */
static void keep_only(lua_State *L, int idx, const char *const *list, size_t n) {
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    lua_newtable(L); /* doomed keys */
    int doomed = lua_gettop(L), count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING || !listed(list, n, lua_tostring(L, -1))) {
            lua_pushvalue(L, -1);
            lua_rawseti(L, doomed, ++count);
        }
    }
    for (int i = 1; i <= count; i++) {
        lua_rawgeti(L, doomed, i);
        lua_pushnil(L);
        lua_rawset(L, idx);
    }
    lua_pop(L, 1);
}

/* Restricted load/loadstring compile text only: bytecode (string.dump output) is the
 * classic way to break LuaJIT's VM invariants. */
static const char text_load_src[] =
    "local load = load\n"
    "_G.load = function(chunk, name, mode, ...) return load(chunk, name, 't', ...) end\n"
    "_G.loadstring = function(s, name) return load(s, name, 't') end\n";

/* No io, no debug, no process control, no native modules (FFI stays: arguments and
 * results are native memory, so this is a seatbelt, not a sandbox). */
static void restrict_vm(lua_State *L, const char *dir, int box) {
    lua_getglobal(L, "os");
    keep_only(L, -1, restricted_os, PP_COUNTOF(restricted_os));
    lua_pop(L, 1);
    /* VM-event handlers and profiler callbacks run with every hook off: no time limit
     * reaches them */
    lua_getglobal(L, "jit");
    lua_pushnil(L);
    lua_setfield(L, -2, "attach");
    lua_pop(L, 1);
    lua_pushvalue(L, LUA_GLOBALSINDEX);
    keep_only(L, -1, restricted_globals, PP_COUNTOF(restricted_globals));
    lua_pop(L, 1);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    keep_only(L, -1, restricted_loaded, PP_COUNTOF(restricted_loaded));
    lua_pop(L, 1);
    lua_getfield(L, -1, "preload");
    lua_pushnil(L);
    lua_setfield(L, -2, "jit.profile");
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_setfield(L, -2, "loadlib");
    /* searchpath opens any file for reading: a probe of the file system, and a hang
     * on a FIFO */
    lua_pushnil(L);
    lua_setfield(L, -2, "searchpath");
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "cpath");
    /* Lua modules come from the bundle directory (and the embedded SDK) only: not the
     * host's working directory, LUA_PATH or the system directories — and not whatever
     * the guest puts into package.path later: the searcher keeps its own copy */
    if (dir) {
        lua_pushstring(L, dir);
        lua_pushliteral(L, "/?.lua;");
        lua_pushstring(L, dir);
        lua_pushliteral(L, "/?/init.lua;");
        lua_pushstring(L, dir);
        lua_pushliteral(L, "/?.init.lua");
        lua_concat(L, 6);
    } else {
        lua_pushliteral(L, "");
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "path");
    lua_getfield(L, -2, "loaders");
    lua_insert(L, -2);
    lua_pushvalue(L, box);
    lua_pushcclosure(L, file_searcher, 2);
    lua_rawseti(L, -2, 3);
    lua_pop(L, 1);
    /* loaders = {preload, sdk, lua path}: drop the C and all-in-one searchers */
    lua_getfield(L, -1, "loaders");
    for (int i = (int)lua_objlen(L, -1); i > 3; i--) {
        lua_pushnil(L);
        lua_rawseti(L, -2, i);
    }
    lua_pop(L, 2);
    if (load_internal(L, TEXT_LOAD_SLOT, text_load_src, sizeof text_load_src - 1,
                      "=[polyplug restricted load]") != 0)
        lua_error(L);
    lua_call(L, 0, 0);
}

static int finalizer_error(lua_State *L);

/* The instance maker, make_instance(instances, id, factory, host): runs the factory
 * and stores its result (false for nil) under `id` with a raw set, which no guest can
 * redirect.  Called through lua_pcall, so everything it allocates is protected. */
static int make_instance(lua_State *L) {
    lua_settop(L, 4);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_pushvalue(L, 4);
    lua_call(L, 1, 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 0);
    }
    lua_rawset(L, 1);
    return 0;
}

/* setup_vm(dir or nil, restricted, files or nil, runtime, bundle name) -> arena_alloc,
 * make_instance: the stack slots PPI_STACK_ARENA_ALLOC and PPI_STACK_MAKE_INSTANCE */
static int setup_vm(lua_State *L) {
    const char *dir = lua_tostring(L, 1); /* bundle dir or nil */
    bool restricted = lua_toboolean(L, 2);
    pp_fileset *files = lua_touserdata(L, 3); /* a signed bundle's verified files */
    pp_runtime *rt = lua_touserdata(L, 4);
    lua_pushvalue(L, 4);
    lua_pushvalue(L, 5);
    lua_pushnumber(L, 0);
    lua_pushcclosure(L, finalizer_error, 3);
    ppi_lua_set_finalizer_error_handler(L);
    lua_settop(L, 3);
    if (files)
        push_fileset_box(L, files, dir);
    else
        lua_pushnil(L);
    lua_replace(L, 3); /* index 3: the box, or nil */
    luaL_openlibs(L);
    /* upstream's VMs have the FFI library as a global, as the luajit binary does */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "ffi");
    lua_call(L, 1, 1);
    lua_setglobal(L, "ffi");
    if (dir) {
        size_t n = strlen(dir);
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        static const char *const suffixes[] = {"/?.lua;", "/?/init.lua;", "/?.init.lua;"};
        for (size_t i = 0; i < PP_COUNTOF(suffixes); i++) {
            luaL_addlstring(&b, dir, n);
            luaL_addstring(&b, suffixes[i]);
        }
        luaL_pushresult(&b);
        prepend_package_field(L, "path", lua_tostring(L, -1));
        lua_pop(L, 1);
        lua_pushstring(L, dir);
        lua_pushliteral(L, "/?.so;");
        lua_concat(L, 2);
        prepend_package_field(L, "cpath", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    /* package.loaders = {preload, sdk, lua path, c path, all-in-one} */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaders");
    int n = (int)lua_objlen(L, -1);
    for (int i = n; i >= 2; i--) {
        lua_rawgeti(L, -1, i);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 3);
    lua_pushcclosure(L, sdk_searcher, 2);
    lua_rawseti(L, -2, 2);
    lua_pushnil(L);
    lua_pushvalue(L, 3);
    lua_pushcclosure(L, file_searcher, 2);
    lua_rawseti(L, -2, 3);
    if (files) {
        /* {preload, sdk, verified lua files, no C modules} */
        for (int i = (int)lua_objlen(L, -1); i > 3; i--) {
            lua_pushnil(L);
            lua_rawseti(L, -2, i);
        }
        lua_pushcfunction(L, signed_no_c_modules);
        lua_rawseti(L, -2, 4);
    } else {
        /* {preload, sdk, lua files, cpath guard, C modules, all-in-one} */
        for (int i = (int)lua_objlen(L, -1); i >= 4; i--) {
            lua_rawgeti(L, -1, i);
            lua_rawseti(L, -2, i + 1);
        }
        lua_pushcfunction(L, cpath_guard);
        lua_rawseti(L, -2, 4);
    }
    lua_pop(L, 2);
    if (load_internal(L, GUARD_SLOT, guard_src, sizeof guard_src - 1,
                      "=[polyplug stack guard]") != 0)
        return lua_error(L);
    lua_pushcfunction(L, cstack_check);
    lua_call(L, 1, 0);
    if (restricted) restrict_vm(L, dir, 3);
    lua_pushlightuserdata(L, (void *)&rt->api);
    lua_pushcclosure(L, arena_alloc, 1);
    lua_pushcfunction(L, make_instance);
    return 2;
}

/* ── CPU detection, once per process ──────────────────────────────────────── */

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
/*
 * luaopen_jit detects the CPU's features for every new state: CPUID leaves 0, 1 and,
 * if the CPU has it, 7, through LuaJIT's lj_vm_cpuid (eax = leaf, ecx = 0).  Under a
 * hypervisor each CPUID traps to it: 4 µs per instruction on the benchmark VM, 12 µs
 * of every bundle load.  The answers cannot change while the process runs, so our
 * links wrap that function (-Wl,--wrap=lj_vm_cpuid: polyplug/_build.py and
 * tests/cbuild.py) and each leaf is asked once.  A link without the flag never calls
 * this (LuaJIT asks the CPU itself, as it does by default).
 */
int pp_lj_vm_cpuid_once(uint32_t leaf, uint32_t res[4]) __asm__("__wrap_lj_vm_cpuid");

static uint32_t cpuid_answers[3][4]; /* leaves 0, 1, 7 (zeros: leaf 7 absent) */
static pthread_once_t cpuid_once = PTHREAD_ONCE_INIT;

static void cpuid_ask(uint32_t leaf, uint32_t res[4]) {
    unsigned a, b, c, d;
    __cpuid_count(leaf, 0, a, b, c, d);
    res[0] = a;
    res[1] = b;
    res[2] = c;
    res[3] = d;
}

static void cpuid_fill(void) {
    cpuid_ask(0, cpuid_answers[0]);
    cpuid_ask(1, cpuid_answers[1]);
    if (cpuid_answers[0][0] >= 7) cpuid_ask(7, cpuid_answers[2]);
}

int pp_lj_vm_cpuid_once(uint32_t leaf, uint32_t res[4]) {
    int i = leaf == 0 ? 0 : leaf == 1 ? 1 : leaf == 7 ? 2 : -1;
    pthread_once(&cpuid_once, cpuid_fill);
    if (i < 0 || (i == 2 && cpuid_answers[0][0] < 7))
        cpuid_ask(leaf, res); /* not one LuaJIT asks for today */
    else
        memcpy(res, cpuid_answers[i], sizeof cpuid_answers[i]);
    return 1;
}
#endif

/* ── memory accounting and closing ────────────────────────────────────────── */

/*
 * Every bundle VM allocates through vm_alloc, from the C heap (malloc): it counts
 * bytes, refuses growth past the memory limit (LuaJIT then raises "not enough
 * memory", which fails the call, not the host), and recognises the last free of
 * lua_close — the state block, which lua_newstate allocates first — so the watchdog
 * is told the VM is gone before its memory is.  LuaJIT's own allocator would give
 * every VM a fresh mmap'd region, page-faulted in on load and unmapped on close; from
 * the C heap a reload reuses the memory of the VM it replaced (a third less CPU time
 * per reload), and VMs share pages instead of each rounding up its own (about 4 KiB
 * less per bundle).
 */
typedef struct vm_memory {
    lua_State *L;             /* the state this allocator serves */
    const void *state_block;  /* what lua_close frees last */
    size_t used;              /* bytes currently allocated by this state */
    size_t limit;             /* 0 = none; else the most `used` may reach */
    bool refused;             /* an allocation failed since ppi_lua_vm_take_refused */
    ppi_call *closing;        /* the close in progress, watched by the watchdog */
} vm_memory;

static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    vm_memory *m = ud;
    if (nsize == 0) {
        if (PP_UNLIKELY(ptr && ptr == m->state_block)) {
            /* lua_close's final free: stop the watchdog from touching this VM first */
            if (m->closing) ppi_lua_limits_release(m->closing);
            if (m->L) ppi_lua_watch_forget(m->L);
        }
        m->used -= ptr ? osize : 0;
        free(ptr);
        return NULL;
    }
    if (ptr == NULL) osize = 0;
    if (nsize > osize && m->limit && m->used + (nsize - osize) > m->limit) {
        m->refused = true;
        return NULL;
    }
    void *p = ptr ? realloc(ptr, nsize) : malloc(nsize);
    if (PP_LIKELY(p != NULL)) {
        m->used = m->used - osize + nsize;
        if (PP_UNLIKELY(!m->state_block)) m->state_block = p;
    }
    return p;
}

static vm_memory *memory_of(lua_State *L) {
    void *ud = NULL;
    return lua_getallocf(L, &ud) == vm_alloc ? ud : NULL;
}

/*
 * LuaJIT reports an error raised by a __gc finalizer through a VM event; its own handler
 * prints to stderr.  This one logs a Warn record naming the bundle, for the first
 * FINALIZER_ERRORS_LOGGED errors of a VM; past the close bound, where the watchdog
 * stops finalizers on purpose, ppi_lua_vm_close's summary is the only record.  It runs
 * with hooks and events off, and raises nothing (LuaJIT would print that too).
 * Upvalues: the runtime (light userdata), the bundle name, the count so far.
 */
enum { FINALIZER_ERRORS_LOGGED = 5 };

static int finalizer_error(lua_State *L) {
    vm_memory *m = memory_of(L);
    if (m && m->closing && m->closing->tripped) return 0;
    lua_Number count = lua_tonumber(L, lua_upvalueindex(3));
    if (count > FINALIZER_ERRORS_LOGGED) return 0;
    lua_pushnumber(L, count + 1);
    lua_replace(L, lua_upvalueindex(3));
    pp_runtime *rt = lua_touserdata(L, lua_upvalueindex(1));
    const char *bundle = lua_tostring(L, lua_upvalueindex(2));
    if (count == FINALIZER_ERRORS_LOGGED) {
        ppi_logf(rt, LogLevel_Warn, "loader.lua",
                 "bundle `%s`: more errors in __gc finalizers; only the first %d are logged",
                 bundle ? bundle : "?", FINALIZER_ERRORS_LOGGED);
        return 0;
    }
    if (lua_type(L, 1) == LUA_TSTRING)
        ppi_logf(rt, LogLevel_Warn, "loader.lua", "bundle `%s`: error in a __gc finalizer: %s",
                 bundle ? bundle : "?", lua_tostring(L, 1));
    else
        ppi_logf(rt, LogLevel_Warn, "loader.lua",
                 "bundle `%s`: error in a __gc finalizer: (error object is a %s value)",
                 bundle ? bundle : "?", luaL_typename(L, 1));
    return 0;
}

/* A VM whose construction failed: no guest code ran, nothing to watch. */
static void close_fresh(lua_State *L) {
    vm_memory *m = memory_of(L);
    if (!m) ppi_lua_watch_forget(L); /* else the final free does */
    lua_close(L);
    free(m);
}

void ppi_lua_vm_close(pp_runtime *rt, lua_State *L) {
    if (!L) return;
    vm_memory *m = memory_of(L);
    /* Closing runs the guest's __gc finalizers, with hooks off: a finalizer that never
     * returns would hang whoever closes the VM.  Closing is watched like a call with
     * PPI_CLOSE_NS to spare; past it the watchdog lets the count hook into the
     * finalizers, which then fail one by one. */
    ppi_call call;
    ppi_lua_call_push(&call, rt, NULL, NULL, 0, NULL);
    call.deadline_ns = ppi_now_ns() + PPI_CLOSE_NS;
    call.timeout_ns = PPI_CLOSE_NS;
    call.cancel = NULL;
    if (m) {
        m->closing = &call;
        ppi_lua_limits_begin(L, &call);
    } else {
        ppi_lua_watch_forget(L); /* no final free to hook: before anything is freed */
    }
    lua_close(L); /* vm_alloc's final free ends the watch and forgets the VM */
    ppi_lua_call_pop(&call);
    free(m);
    if (call.tripped)
        ppi_logf(rt, LogLevel_Warn, "loader.lua",
                 "a bundle VM's __gc finalizers were still running %.1f s after it began "
                 "closing; the rest were stopped",
                 (double)PPI_CLOSE_NS / 1e9);
    ppi_runtime_vm_closed(rt); /* last: the runtime may be freed right after */
}

static int collect_garbage(lua_State *L) {
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}

/* What a collection after an out-of-memory error may allocate beyond the limit: the
 * protected call's own needs.  The guest's finalizers that run in it stay capped. */
#define COLLECT_HEADROOM (64u * 1024u)

void ppi_lua_vm_collect(lua_State *L) {
    vm_memory *m = memory_of(L);
    size_t limit = m ? m->limit : 0;
    int top = lua_gettop(L);
    if (m && limit && m->used + COLLECT_HEADROOM > limit) {
        /* above what is held now, but never past the limit itself plus the headroom: a
         * finalizer that keeps what it allocates here (and re-arms itself for the next
         * such collection) would otherwise gain the headroom once per failed call */
        size_t from = m->used < limit ? m->used : limit;
        m->limit = from > SIZE_MAX - COLLECT_HEADROOM ? SIZE_MAX : from + COLLECT_HEADROOM;
    }
    lua_cpcall(L, collect_garbage, NULL); /* finalizers may raise */
    if (m) m->limit = limit;
    lua_settop(L, top);
}

bool ppi_lua_vm_take_refused(lua_State *L) {
    vm_memory *m = memory_of(L);
    if (!m) return false;
    bool refused = m->refused;
    m->refused = false;
    return refused;
}

int64_t ppi_lua_vm_memory(lua_State *L) {
    return (int64_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + lua_gc(L, LUA_GCCOUNTB, 0);
}


/* ── construction ──────────────────────────────────────────────────────────── */

/* The bottom-of-stack values, also in the registry (keyed by these addresses): a
 * nested call, running above a guest's frame, reaches them there. */
static const char helper_keys[PPI_STACK_BASE];

/* store_helpers(traceback, arena_alloc, instance maker) */
static int store_helpers(lua_State *L) {
    for (int slot = 1; slot <= PPI_STACK_BASE; slot++) {
        lua_pushlightuserdata(L, (void *)&helper_keys[slot - 1]);
        lua_pushvalue(L, slot);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    return 0;
}

void ppi_lua_push_helper(lua_State *L, int slot) {
    lua_pushlightuserdata(L, (void *)&helper_keys[slot - 1]);
    lua_rawget(L, LUA_REGISTRYINDEX); /* an existing key: no allocation */
}

/* What luaL_newstate would install: an unprotected error is a bug; say so and let
 * LuaJIT end the process. */
static int vm_panic(lua_State *L) {
    const char *s = lua_tostring(L, -1);
    fprintf(stderr, "PANIC: unprotected error in call to Lua API (%s)\n", s ? s : "?");
    fflush(stderr);
    return 0;
}

lua_State *ppi_lua_vm_new(pp_runtime *rt, const char *dir, pp_fileset *files,
                          const char *bundle, const pp_lua_config *cfg, pp_error *err) {
    vm_memory *mem = calloc(1, sizeof *mem);
    lua_State *L = mem ? lua_newstate(vm_alloc, mem) : NULL;
    if (!L) {
        free(mem);
        ppi_fail(err, PP_ERR_NO_MEMORY, bundle, NULL, "could not create a LuaJIT state",
                 "init failed for bundle `%s`: Lua VM init failed: could not create a LuaJIT "
                 "state",
                 bundle);
        return NULL;
    }
#ifdef PP_DEBUG_LOCKS
    ppi_lua_watch_born(L);
#endif
    mem->L = L;
    lua_atpanic(L, vm_panic);
    lua_pushcfunction(L, ppi_lua_traceback);
    lua_pushcfunction(L, setup_vm);
    if (dir)
        lua_pushstring(L, dir);
    else
        lua_pushnil(L);
    lua_pushboolean(L, cfg->sandbox != PP_LUA_SANDBOX_NONE);
    if (files)
        lua_pushlightuserdata(L, files);
    else
        lua_pushnil(L);
    lua_pushlightuserdata(L, rt);
    lua_pushstring(L, bundle);
    if (lua_pcall(L, 5, 2, PPI_STACK_TRACEBACK) != 0) {
        char detail[1024];
        snprintf(detail, sizeof detail, "Lua VM init failed: %s", ppi_lua_error_text(L));
        ppi_fail(err, PP_ERR_INIT_FAILED, bundle, NULL, detail,
                 "init failed for bundle `%s`: %s", bundle, detail);
        close_fresh(L);
        return NULL;
    }
    lua_pushcfunction(L, store_helpers);
    for (int slot = 1; slot <= PPI_STACK_BASE; slot++) lua_pushvalue(L, slot);
    if (lua_pcall(L, PPI_STACK_BASE, 0, PPI_STACK_TRACEBACK) != 0) {
        ppi_fail(err, PP_ERR_NO_MEMORY, bundle, NULL, "Lua VM init failed",
                 "init failed for bundle `%s`: Lua VM init failed: %s", bundle,
                 ppi_lua_error_text(L));
        close_fresh(L);
        return NULL;
    }
    /* the limit counts what the guest allocates, not the VM's own start-up footprint;
     * a limit beyond what the address space holds saturates (no limit in effect) */
    if (mem && cfg->memory_limit) {
        mem->limit = cfg->memory_limit > SIZE_MAX - mem->used ? SIZE_MAX
                                                               : mem->used + cfg->memory_limit;
        mem->refused = false;
    }
    ppi_runtime_vm_opened(rt);
    return L;
}
