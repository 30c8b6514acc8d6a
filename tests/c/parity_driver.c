/*
 * parity_driver.c — drives the polyplug host from C, without Python, through the
 * public headers only (polyplug.h, polyplug_abi.h), and prints a line-oriented
 * transcript of what it observes.
 *
 * It interprets the scenario scripts tests/parity/NAME.scn; tests/parity/pydriver.py
 * interprets the same scripts through the Python API, and tests/test_parity.py
 * asserts that the two transcripts are identical.  The language is documented in
 * tests/parity/README.md; keep the two interpreters in step with it.
 *
 *   parity_driver --root <repo> --work <dir> SCENARIO.scn...
 *
 * Each scenario runs with $WORK = <dir>/<scenario stem> (created) and $ROOT = <repo>;
 * printed text has those two paths replaced by "$WORK" and "$ROOT".  A scenario that
 * the driver cannot interpret (syntax error, unknown name) ends the run with exit
 * status 2; library failures are part of the transcript, never a driver failure.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "polyplug.h"
#include "driver_util.h"

#define MAX_SLOTS 64
#define MAX_TOKENS 64
#define NAME_LEN 64

/* ── small utilities ───────────────────────────────────────────────────────── */

static const char *g_scenario = "?";
static int g_lineno = 0;

static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "parity_driver: %s:%d: ", g_scenario, g_lineno);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stdout);
    exit(2);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) fatal("out of memory");
    return p;
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s);
    char *p = xmalloc(n + 1);
    memcpy(p, s, n + 1);
    return p;
}

static uint64_t bundle_id_of(const char *name) { return fnv1a64(name); }

static uint64_t contract_id_of(const char *name, uint32_t major) {
    char buf[512];
    snprintf(buf, sizeof buf, "guest_contract:%s@%u", name, major);
    return fnv1a64(buf);
}

/* ── growable text buffer and the transcript ───────────────────────────────── */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_reserve(sbuf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) fatal("out of memory");
    b->p = p;
    b->cap = cap;
}

static void sb_putn(sbuf *b, const char *s, size_t n) {
    sb_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s) { sb_putn(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) fatal("vsnprintf failed");
    sb_reserve(b, (size_t)n);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
}

/* Escape bytes the way pydriver.py does: printable ASCII as is, except backslash and
 * double quote; \n \t \r; everything else \xHH.  Unquoted text also escapes spaces
 * so it stays one token. */
static void sb_escape(sbuf *b, const uint8_t *p, size_t n, bool quoted) {
    if (quoted) sb_putn(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '\\')
            sb_puts(b, "\\\\");
        else if (c == '"')
            sb_puts(b, "\\\"");
        else if (c == '\n')
            sb_puts(b, "\\n");
        else if (c == '\t')
            sb_puts(b, "\\t");
        else if (c == '\r')
            sb_puts(b, "\\r");
        else if (c < 0x20 || c > 0x7e || (!quoted && c == ' '))
            sb_printf(b, "\\x%02x", c);
        else
            sb_putn(b, (const char *)&c, 1);
    }
    if (quoted) sb_putn(b, "\"", 1);
}

static void sb_quote_view(sbuf *b, StringView v) {
    sb_escape(b, v.ptr ? v.ptr : (const uint8_t *)"", v.ptr ? v.len : 0, true);
}

static void sb_quote(sbuf *b, const char *s) { sb_escape(b, (const uint8_t *)s, strlen(s), true); }

static char g_root[4096];
static char g_work[4096];

/* Print one transcript line, with $WORK and $ROOT put back in place of the paths. */
static void emit(sbuf *b) {
    const char *s = b->p ? b->p : "";
    sbuf o = {0};
    size_t wl = strlen(g_work), rl = strlen(g_root);
    while (*s) {
        if (wl && strncmp(s, g_work, wl) == 0) {
            sb_puts(&o, "$WORK");
            s += wl;
        } else if (rl && strncmp(s, g_root, rl) == 0) {
            sb_puts(&o, "$ROOT");
            s += rl;
        } else {
            sb_putn(&o, s, 1);
            s++;
        }
    }
    fputs(o.p ? o.p : "", stdout);
    fputc('\n', stdout);
    free(o.p);
    b->len = 0;
    if (b->p) b->p[0] = '\0';
}

static void emitf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emitf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    sbuf b = {0};
    sb_puts(&b, buf);
    emit(&b);
    free(b.p);
}

/* ── callbacks: log records and reload phases become transcript lines ──────── */

static const char *level_name(uint32_t level) {
    static const char *const names[] = {"?", "Error", "Warn", "Info", "Debug", "Trace"};
    return level >= 1 && level <= 5 ? names[level] : "?";
}

static int level_from_name(const char *s) {
    for (uint32_t l = 1; l <= 5; l++)
        if (strcmp(s, level_name(l)) == 0) return (int)l;
    return -1;
}

static void on_log(void *user_data, uint32_t level, StringView scope, StringView message) {
    (void)user_data;
    size_t n = 0;
    if (message.ptr)
        while (n < message.len && message.ptr[n] != '\n') n++;
    sbuf b = {0};
    sb_printf(&b, "log %s ", level_name(level));
    sb_escape(&b, scope.ptr ? scope.ptr : (const uint8_t *)"", scope.ptr ? scope.len : 0, false);
    sb_puts(&b, " ");
    sb_escape(&b, message.ptr ? message.ptr : (const uint8_t *)"", n, true);
    emit(&b);
    free(b.p);
}

static void on_reload(void *user_data, const ReloadPhase *phase) {
    (void)user_data;
    static const char *const names[] = {"Preparing", "Reloaded", "Failed", "Unloading"};
    sbuf b = {0};
    sb_printf(&b, "phase %s ", phase->phase_type < 4 ? names[phase->phase_type] : "?");
    sb_escape(&b, phase->bundle_name.ptr ? phase->bundle_name.ptr : (const uint8_t *)"",
              phase->bundle_name.ptr ? phase->bundle_name.len : 0, false);
    sb_printf(&b, " id=%016llx", (unsigned long long)phase->bundle_id);
    if (phase->reason.ptr) {
        sb_puts(&b, " reason=");
        sb_quote_view(&b, phase->reason);
    }
    emit(&b);
    free(b.p);
}

/* ── driver state ──────────────────────────────────────────────────────────── */

typedef struct handle_slot {
    char name[NAME_LEN];
    GuestContractHandle handle;
    /* The last successful resolve.  It stays callable after an unload: the registry
     * keeps a dead interface (answering StaleHandle) in a vacated slot. */
    const GuestContractInterface *iface;
} handle_slot;

typedef struct instance_slot {
    char name[NAME_LEN];
    GuestContractInstance inst;
    const GuestContractInterface *iface;
    bool dead; /* destroyed, or never created */
} instance_slot;

typedef struct arena_slot {
    char name[NAME_LEN];
    CallArena *arena;
} arena_slot;

typedef struct bundle_slot {
    char name[NAME_LEN * 2];
    char *dir, *file, *version, *loader;
} bundle_slot;

static struct {
    pp_runtime *rt;
    const HostApi *host;
    pp_loader *loader; /* the runtime's Lua loader */
    bool own_loader;   /* we hold a reference (create=new) */
    bool via_api;      /* created with polyplug_runtime_create */
    handle_slot handles[MAX_SLOTS];
    size_t n_handles;
    instance_slot instances[MAX_SLOTS];
    size_t n_instances;
    arena_slot arenas[MAX_SLOTS];
    size_t n_arenas;
    bundle_slot bundles[MAX_SLOTS];
    size_t n_bundles;
} S;

#define SLOT_LOOKUP(fn, type, arr, count)                                   \
    static type *fn(const char *name, bool create) {                        \
        for (size_t i = 0; i < S.count; i++)                                \
            if (strcmp(S.arr[i].name, name) == 0) return &S.arr[i];         \
        if (!create) fatal("unknown " #type " name '%s'", name);            \
        if (S.count == MAX_SLOTS) fatal("too many " #type " names");        \
        if (strlen(name) >= sizeof S.arr[0].name) fatal("name too long"); \
        type *s = &S.arr[S.count++];                                        \
        memset(s, 0, sizeof *s);                                            \
        strcpy(s->name, name);                                              \
        return s;                                                           \
    }
SLOT_LOOKUP(handle_get, handle_slot, handles, n_handles)
SLOT_LOOKUP(instance_get, instance_slot, instances, n_instances)
SLOT_LOOKUP(arena_get, arena_slot, arenas, n_arenas)
SLOT_LOOKUP(bundle_get, bundle_slot, bundles, n_bundles)

static void require_runtime(void) {
    if (!S.rt) fatal("no runtime: start the scenario with `runtime`");
}

static void bundle_slot_clear(bundle_slot *b) {
    free(b->dir);
    free(b->file);
    free(b->version);
    free(b->loader);
    b->dir = b->file = b->version = b->loader = NULL;
}

static void close_runtime(void) {
    for (size_t i = 0; i < S.n_arenas; i++) pp_arena_free(S.arenas[i].arena);
    S.n_arenas = 0;
    S.n_handles = 0;
    S.n_instances = 0;
    for (size_t i = 0; i < S.n_bundles; i++) bundle_slot_clear(&S.bundles[i]);
    S.n_bundles = 0;
    if (S.via_api)
        polyplug_runtime_destroy(S.host);
    else
        pp_runtime_free(S.rt);
    if (S.own_loader) pp_loader_release(S.loader);
    S.rt = NULL;
    S.host = NULL;
    S.loader = NULL;
    S.own_loader = S.via_api = false;
}

/* ── tokens and options ────────────────────────────────────────────────────── */

typedef struct args {
    int argc;
    char *argv[MAX_TOKENS];
    int npos; /* tokens before the first key=value */
} args;

static void tokenize(char *line, args *a) {
    a->argc = 0;
    for (char *p = strtok(line, " \t"); p; p = strtok(NULL, " \t")) {
        if (a->argc == MAX_TOKENS) fatal("too many tokens");
        a->argv[a->argc++] = p;
    }
    a->npos = a->argc;
    for (int i = 1; i < a->argc; i++) {
        if (strchr(a->argv[i], '=')) {
            a->npos = i;
            break;
        }
    }
    for (int i = a->npos; i < a->argc; i++)
        if (!strchr(a->argv[i], '=')) fatal("positional argument '%s' after options", a->argv[i]);
}

/* Value of option `key`, or `def`; every option token must be one the command knows. */
static const char *opt(const args *a, const char *key, const char *def) {
    size_t kl = strlen(key);
    for (int i = a->npos; i < a->argc; i++)
        if (strncmp(a->argv[i], key, kl) == 0 && a->argv[i][kl] == '=') return a->argv[i] + kl + 1;
    return def;
}

static void check_opts(const args *a, const char *const *known) {
    for (int i = a->npos; i < a->argc; i++) {
        size_t kl = (size_t)(strchr(a->argv[i], '=') - a->argv[i]);
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++)
            ok = strlen(*k) == kl && strncmp(*k, a->argv[i], kl) == 0;
        if (!ok) fatal("unknown option '%s' for '%s'", a->argv[i], a->argv[0]);
    }
}

static void need_pos(const args *a, int n, const char *usage) {
    if (a->npos != n + 1) fatal("usage: %s", usage);
}

static uint64_t parse_u64(const char *s) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || *s == '-') fatal("not an unsigned number: '%s'", s);
    return v;
}

static uint32_t parse_u32(const char *s) {
    uint64_t v = parse_u64(s);
    if (v > UINT32_MAX) fatal("number out of u32 range: '%s'", s);
    return (uint32_t)v;
}

static int64_t parse_i64(const char *s) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (errno || end == s || *end) fatal("not a number: '%s'", s);
    return v;
}

/* Percent-decoding for str: argument values ("a%20b" -> "a b"). */
static char *percent_decode(const char *s, size_t *len) {
    size_t n = strlen(s), o = 0;
    char *out = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            unsigned v;
            if (i + 2 >= n || sscanf(s + i + 1, "%2x", &v) != 1)
                fatal("bad percent escape in '%s'", s);
            out[o++] = (char)v;
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    *len = o;
    return out;
}

/* Expand $ROOT and $WORK. */
static char *expand(const char *line) {
    sbuf b = {0};
    sb_puts(&b, "");
    while (*line) {
        if (strncmp(line, "$ROOT", 5) == 0) {
            sb_puts(&b, g_root);
            line += 5;
        } else if (strncmp(line, "$WORK", 5) == 0) {
            sb_puts(&b, g_work);
            line += 5;
        } else {
            sb_putn(&b, line, 1);
            line++;
        }
    }
    return b.p;
}

static void mkdirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) fatal("mkdir %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) fatal("mkdir %s: %s", buf, strerror(errno));
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fatal("cannot read %s: %s", path, strerror(errno));
    sbuf b = {0};
    char chunk[8192];
    size_t n;
    sb_puts(&b, "");
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) sb_putn(&b, chunk, n);
    fclose(f);
    *len = b.len;
    return b.p;
}

static void write_file(const char *path, const char *data, size_t len) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        mkdirs(dir);
    }
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0)
        fatal("cannot write %s: %s", path, strerror(errno));
}

/* ── reporting errors ──────────────────────────────────────────────────────── */

static void sb_pp_error(sbuf *b, const pp_error *err) {
    sb_printf(b, " error %s ", pp_status_exception(err->status));
    sb_quote(b, err->message);
}

/* ── commands ──────────────────────────────────────────────────────────────── */

static void cmd_runtime(args *a) {
    static const char *const known[] = {"hot_reload", "log", "create", "compat", "native", NULL};
    check_opts(a, known);
    need_pos(a, 0, "runtime [hot_reload=0|1] [log=<Level>] [create=new|api] "
                   "[compat=strict|relaxed|yolo] [native=0|1]");
    if (S.rt) fatal("a runtime is already open: `close` it first");
    int level = level_from_name(opt(a, "log", "Trace"));
    if (level < 0) fatal("unknown log level '%s'", opt(a, "log", "Trace"));
    const char *create = opt(a, "create", "new");
    const char *compat = opt(a, "compat", "strict");
    bool native_wanted = parse_u32(opt(a, "native", "0")) != 0;
    RuntimeConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    if (strcmp(compat, "strict") == 0)
        cfg.compatibility = Compatibility_Strict;
    else if (strcmp(compat, "relaxed") == 0)
        cfg.compatibility = Compatibility_Relaxed;
    else if (strcmp(compat, "yolo") == 0)
        cfg.compatibility = Compatibility_Yolo;
    else
        fatal("compat must be strict, relaxed or yolo");
    cfg.hot_reload_enabled = parse_u32(opt(a, "hot_reload", "0")) != 0;
    cfg.on_reload = on_reload;
    cfg.log = on_log;
    cfg.log_max_level = (uint32_t)level;
    cfg.signature_policy = SignaturePolicy_Off;
    sbuf b = {0};
    sb_puts(&b, "runtime");
    if (strcmp(create, "new") == 0) {
        pp_error err;
        pp_error_clear(&err);
        S.rt = pp_runtime_new(&cfg, &err);
        if (!S.rt) fatal("pp_runtime_new failed: %s", err.message);
        S.host = pp_runtime_host(S.rt);
        S.loader = pp_lua_loader_new(NULL);
        S.own_loader = true;
        pp_loader *native = native_wanted ? pp_native_loader_new(NULL) : NULL;
        if (pp_runtime_add_loader(S.rt, S.loader, &err) != PP_OK ||
            (native && pp_runtime_add_loader(S.rt, native, &err) != PP_OK))
            sb_pp_error(&b, &err);
        else
            sb_puts(&b, " ok");
        pp_loader_release(native); /* the runtime holds its own reference */
    } else if (strcmp(create, "api") == 0) {
        S.host = polyplug_runtime_create(&cfg);
        if (!S.host) fatal("polyplug_runtime_create failed");
        S.rt = pp_runtime_from_host(S.host);
        S.via_api = true;
        /* register_loader takes our reference; the runtime keeps the loader alive */
        S.loader = pp_lua_loader_new(NULL);
        AbiError e = {0, {NULL, 0}};
        S.host->register_loader(S.host, S.loader, &e);
        if (native_wanted && !e.code)
            S.host->register_loader(S.host, pp_native_loader_new(NULL), &e);
        if (e.code)
            sb_printf(&b, " register_loader code=%u", e.code);
        else
            sb_puts(&b, " ok");
    } else {
        fatal("create must be new or api");
    }
    emit(&b);
    free(b.p);
}

static void cmd_close(args *a) {
    need_pos(a, 0, "close");
    require_runtime();
    close_runtime();
    emitf("close ok");
}

/* write <path>, then the file's lines up to a line "END" */
static void cmd_write(args *a, FILE *in) {
    need_pos(a, 1, "write <path> (then lines up to END)");
    char *path = xstrdup(a->argv[1]);
    sbuf body = {0};
    sb_puts(&body, "");
    char line[8192];
    bool ended = false;
    while (fgets(line, sizeof line, in)) {
        g_lineno++;
        size_t n = strlen(line);
        if (n && line[n - 1] == '\n') line[--n] = '\0';
        if (strcmp(line, "END") == 0) {
            ended = true;
            break;
        }
        sb_putn(&body, line, n);
        sb_putn(&body, "\n", 1);
    }
    if (!ended) fatal("write: missing END");
    write_file(path, body.p, body.len);
    sbuf b = {0};
    sb_puts(&b, "write ");
    sb_puts(&b, path);
    sb_printf(&b, " bytes=%zu", body.len);
    emit(&b);
    free(b.p);
    free(body.p);
    free(path);
}

/* manifest <dir> <name> [file=] [version=] — a minimal manifest.toml */
static void cmd_manifest(args *a) {
    static const char *const known[] = {"file", "version", NULL};
    check_opts(a, known);
    need_pos(a, 2, "manifest <dir> <name> [file=bundle.lua] [version=]");
    const char *dir = a->argv[1], *name = a->argv[2];
    sbuf t = {0};
    sb_printf(&t, "id = %llu\nname = \"%s\"\nloader = \"lua\"\nfile = \"%s\"\n",
              (unsigned long long)bundle_id_of(name), name, opt(a, "file", "bundle.lua"));
    const char *version = opt(a, "version", NULL);
    if (version) sb_printf(&t, "version = \"%s\"\n", version);
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.toml", dir);
    write_file(path, t.p, t.len);
    sbuf b = {0};
    sb_printf(&b, "manifest %s %s", dir, name);
    emit(&b);
    free(b.p);
    free(t.p);
}

static Version parse_version(const char *s) {
    Version v = {0, 0, 0};
    if (!*s) return v;
    unsigned maj, min, pat;
    char tail;
    if (sscanf(s, "%u.%u.%u%c", &maj, &min, &pat, &tail) != 3)
        fatal("the driver only handles plain x.y.z versions, got '%s'", s);
    v.major = maj;
    v.minor = min;
    v.patch = pat;
    return v;
}

/* A pp_manifest built in code, the way the seed tests build ManifestData. */
static void manifest_of(const bundle_slot *bs, pp_manifest *m) {
    memset(m, 0, sizeof *m);
    m->id = bundle_id_of(bs->name);
    m->name = view(bs->name);
    m->loader = view(bs->loader);
    m->file = view(bs->file);
    m->path = view(bs->dir);
    m->version_text = view(bs->version);
    m->version = parse_version(bs->version);
}

static uint8_t *hex_decode(const char *s, size_t *len) {
    size_t n = strlen(s);
    if (n % 2) fatal("odd hex length");
    uint8_t *out = xmalloc(n / 2 + 1);
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) fatal("bad hex '%s'", s);
        out[i] = (uint8_t)v;
    }
    *len = n / 2;
    return out;
}

/* load <name> <dir> [file=] [version=] [loader=] [source=path|code|bytes|hex:..] [via=] */
static void cmd_load(args *a) {
    static const char *const known[] = {"file", "version", "loader", "source", "via", NULL};
    check_opts(a, known);
    need_pos(a, 2, "load <name> <dir> [file=] [version=] [loader=] [source=] [via=runtime|loader]");
    require_runtime();
    const char *name = a->argv[1];
    bundle_slot *bs = bundle_get(name, true);
    bundle_slot_clear(bs);
    bs->dir = xstrdup(a->argv[2]);
    bs->file = xstrdup(opt(a, "file", "bundle.lua"));
    bs->version = xstrdup(opt(a, "version", ""));
    bs->loader = xstrdup(opt(a, "loader", "lua"));
    pp_manifest m;
    manifest_of(bs, &m);
    const char *source = opt(a, "source", "path");
    pp_source src;
    uint8_t *owned = NULL;
    size_t len = 0;
    if (strcmp(source, "path") == 0) {
        src.kind = PP_SOURCE_PATH;
        src.data = view(bs->dir);
    } else if (strcmp(source, "code") == 0 || strcmp(source, "bytes") == 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", bs->dir, bs->file);
        owned = (uint8_t *)read_file(path, &len);
        src.kind = strcmp(source, "code") == 0 ? PP_SOURCE_CODE : PP_SOURCE_BYTES;
        src.data.ptr = owned;
        src.data.len = len;
    } else if (strncmp(source, "hex:", 4) == 0) {
        owned = hex_decode(source + 4, &len);
        src.kind = PP_SOURCE_BYTES;
        src.data.ptr = owned;
        src.data.len = len;
    } else {
        fatal("unknown source '%s'", source);
    }
    const char *via = opt(a, "via", "runtime");
    pp_error err;
    pp_error_clear(&err);
    int32_t st;
    if (strcmp(via, "runtime") == 0)
        st = pp_runtime_load(S.rt, &m, &src, &err);
    else if (strcmp(via, "loader") == 0)
        st = pp_loader_load(S.loader, S.rt, &m, &src, &err);
    else
        fatal("via must be runtime or loader");
    free(owned);
    sbuf b = {0};
    sb_printf(&b, "load %s", name);
    if (st == PP_OK)
        sb_puts(&b, " ok");
    else
        sb_pp_error(&b, &err);
    emit(&b);
    free(b.p);
}

/* find <h> <contract> <major> [min=] [by=<bundle>] */
static void cmd_find(args *a) {
    static const char *const known[] = {"min", "by", NULL};
    check_opts(a, known);
    need_pos(a, 3, "find <h> <contract> <major> [min=0] [by=<bundle>]");
    require_runtime();
    handle_slot *hs = handle_get(a->argv[1], true);
    uint64_t cid = contract_id_of(a->argv[2], parse_u32(a->argv[3]));
    uint32_t min = parse_u32(opt(a, "min", "0"));
    const char *by = opt(a, "by", NULL);
    GuestContractHandle h;
    if (by) {
        pp_error err;
        pp_error_clear(&err);
        if (pp_registry_find_by_bundle(S.rt, bundle_id_of(by), cid, min, &h, &err) != PP_OK) {
            h.index = UINT32_MAX;
            h.generation = 0;
        }
    } else {
        h = S.host->find_guest_contract(S.host, cid, min);
    }
    hs->handle = h;
    hs->iface = NULL;
    if (h.index == UINT32_MAX)
        emitf("find %s notfound", hs->name);
    else
        emitf("find %s index=%u gen=%u", hs->name, h.index, h.generation);
}

/* findall <contract> <major> [min=] */
static void cmd_findall(args *a) {
    static const char *const known[] = {"min", NULL};
    check_opts(a, known);
    need_pos(a, 2, "findall <contract> <major> [min=0]");
    require_runtime();
    uint64_t cid = contract_id_of(a->argv[1], parse_u32(a->argv[2]));
    ArrayGuestContractHandle arr =
        S.host->find_all_guest_contracts(S.host, cid, parse_u32(opt(a, "min", "0")));
    sbuf b = {0};
    sb_printf(&b, "findall %s@%s n=%zu", a->argv[1], a->argv[2], arr.len);
    for (size_t i = 0; i < arr.len; i++)
        sb_printf(&b, " %u:%u", arr.items[i].index, arr.items[i].generation);
    if (arr.items)
        S.host->free(S.host, (uint8_t *)arr.items, arr.len * sizeof *arr.items, arr.align);
    emit(&b);
    free(b.p);
}

/* resolve <h> — through HostApi, cross-checked against pp_registry_resolve */
static void cmd_resolve(args *a) {
    need_pos(a, 1, "resolve <h>");
    require_runtime();
    handle_slot *hs = handle_get(a->argv[1], false);
    const GuestContractInterface *iface = S.host->resolve_guest_contract(S.host, hs->handle);
    const GuestContractInterface *check = NULL;
    pp_error err;
    pp_error_clear(&err);
    int32_t st = pp_registry_resolve(S.rt, hs->handle, &check, &err);
    sbuf b = {0};
    sb_printf(&b, "resolve %s", hs->name);
    if ((iface != NULL) != (st == PP_OK) || (iface && iface != check)) {
        sb_puts(&b, " MISMATCH between HostApi.resolve_guest_contract and pp_registry_resolve");
    } else if (iface) {
        hs->iface = iface;
        sb_printf(&b, " ok cid=%016llx v=%u.%u.%u dispatch=%u fns=%lld",
                  (unsigned long long)iface->contract_id, iface->contract_version.major,
                  iface->contract_version.minor, iface->contract_version.patch,
                  iface->dispatch_type, (long long)pp_function_count(iface));
    } else {
        sb_pp_error(&b, &err);
    }
    emit(&b);
    free(b.p);
}

/* Argument block: `type:value` items laid out like a C struct (natural alignment). */
typedef struct argblock {
    uint64_t words[64]; /* 512 bytes, 8-aligned */
    size_t size;
    char *strings[16];
    size_t nstrings;
} argblock;

static size_t align_up(size_t n, size_t a) { return (n + a - 1) & ~(a - 1); }

static void *arg_slot(argblock *ab, size_t size, size_t align) {
    size_t off = align_up(ab->size, align);
    if (off + size > sizeof ab->words) fatal("argument block too large");
    ab->size = off + size;
    return (uint8_t *)ab->words + off;
}

static void build_args(argblock *ab, const char *spec) {
    memset(ab, 0, sizeof *ab);
    char *copy = xstrdup(spec);
    for (char *item = strtok(copy, ","); item; item = strtok(NULL, ",")) {
        char *colon = strchr(item, ':');
        if (!colon) fatal("argument '%s' is not type:value", item);
        *colon = '\0';
        const char *type = item, *val = colon + 1;
        if (strcmp(type, "u32") == 0) {
            uint32_t v = parse_u32(val);
            memcpy(arg_slot(ab, 4, 4), &v, 4);
        } else if (strcmp(type, "i32") == 0) {
            int64_t v = parse_i64(val);
            if (v < INT32_MIN || v > INT32_MAX) fatal("i32 out of range: %s", val);
            int32_t w = (int32_t)v;
            memcpy(arg_slot(ab, 4, 4), &w, 4);
        } else if (strcmp(type, "u64") == 0) {
            uint64_t v = parse_u64(val);
            memcpy(arg_slot(ab, 8, 8), &v, 8);
        } else if (strcmp(type, "i64") == 0) {
            int64_t v = parse_i64(val);
            memcpy(arg_slot(ab, 8, 8), &v, 8);
        } else if (strcmp(type, "f64") == 0) {
            char *end;
            double v = strtod(val, &end);
            if (end == val || *end) fatal("not a float: '%s'", val);
            memcpy(arg_slot(ab, 8, 8), &v, 8);
        } else if (strcmp(type, "str") == 0) {
            if (ab->nstrings == 16) fatal("too many strings");
            size_t len;
            char *s = percent_decode(val, &len);
            ab->strings[ab->nstrings++] = s;
            StringView sv = {len ? (const uint8_t *)s : NULL, len};
            memcpy(arg_slot(ab, sizeof sv, 8), &sv, sizeof sv);
        } else {
            fatal("unknown argument type '%s'", type);
        }
    }
    free(copy);
}

/* The command's args= option as an argument block; false for "null" (no block). */
static bool args_option(const args *a, argblock *ab) {
    const char *spec = opt(a, "args", "null");
    memset(ab, 0, sizeof *ab);
    if (strcmp(spec, "null") == 0) return false;
    build_args(ab, spec);
    return true;
}

static void free_args(argblock *ab) {
    for (size_t i = 0; i < ab->nstrings; i++) free(ab->strings[i]);
}

/* dispatch.native.functions[fn](inst, args, out, err); an fn past the table is
 * FunctionNotAvailable, as pp_call says */
static void call_native(const GuestContractInterface *iface, GuestContractInstance inst,
                        uint32_t fn, const void *args, void *out, AbiError *err) {
    if (iface->dispatch_type != DispatchType_Native) fatal("via=native on a VM interface");
    if (fn >= iface->dispatch.native.function_count) {
        err->code = AbiErrorCode_FunctionNotAvailable;
        return;
    }
    NativeGuestFn f;
    memcpy(&f, &iface->dispatch.native.functions[fn], sizeof f);
    f(inst, args, out, err);
}

/* call <h> <fn> [inst=<i>|raw:<n>] [arena=<a>] [args=<spec>|null] [out=<type>]
 *      [via=vm|pp_call|handle|native] */
static void cmd_call(args *a) {
    static const char *const known[] = {"inst", "arena", "args", "out", "via", NULL};
    check_opts(a, known);
    need_pos(a, 2, "call <h> <fn> [inst=] [arena=] [args=] [out=] [via=]");
    require_runtime();
    handle_slot *hs = handle_get(a->argv[1], false);
    uint32_t fn = parse_u32(a->argv[2]);
    sbuf b = {0};
    sb_printf(&b, "call %s fn=%u", hs->name, fn);
    if (!hs->iface) {
        sb_puts(&b, " noiface");
        emit(&b);
        free(b.p);
        return;
    }
    GuestContractInstance inst = {NULL, 0};
    const char *iname = opt(a, "inst", NULL);
    if (iname && strncmp(iname, "raw:", 4) == 0) {
        inst.data = (void *)(uintptr_t)parse_u64(iname + 4);
        inst.contract_id = hs->iface->contract_id;
    } else if (iname) {
        instance_slot *is = instance_get(iname, false);
        inst = is->inst;
    }
    const char *aname = opt(a, "arena", NULL);
    CallArena *arena = aname ? arena_get(aname, false)->arena : NULL;
    argblock ab;
    bool have_args = args_option(a, &ab);
    const char *otype = opt(a, "out", NULL);
    uint64_t outbuf[4] = {0, 0, 0, 0};
    AbiError err = {AbiErrorCode_Ok, {NULL, 0}};
    const char *via = opt(a, "via", "vm");
    const void *argp = have_args ? (const void *)ab.words : NULL;
    void *outp = otype ? (void *)outbuf : NULL;
    if (strcmp(via, "vm") == 0)
        hs->iface->dispatch.vm.call(hs->iface->dispatch.vm.loader_data, inst, fn, argp, outp, arena,
                                    &err);
    else if (strcmp(via, "pp_call") == 0)
        pp_call(hs->iface, inst.data, inst.contract_id, fn, argp, outp, arena, &err);
    else if (strcmp(via, "handle") == 0) /* checks the handle, resets the arena first */
        pp_call_handle(S.rt, hs->handle.index, hs->handle.generation, inst.data, inst.contract_id,
                       fn, argp, outp, arena, &err);
    else if (strcmp(via, "native") == 0) /* the native formula: the library's function */
        call_native(hs->iface, inst, fn, argp, outp, &err);
    else
        fatal("via must be vm, pp_call, handle or native");
    free_args(&ab);
    sb_printf(&b, " code=%u", err.code);
    if (otype) {
        sb_puts(&b, " out=");
        if (strcmp(otype, "u32") == 0) {
            uint32_t v;
            memcpy(&v, outbuf, 4);
            sb_printf(&b, "%u", v);
        } else if (strcmp(otype, "i32") == 0) {
            int32_t v;
            memcpy(&v, outbuf, 4);
            sb_printf(&b, "%d", v);
        } else if (strcmp(otype, "u64") == 0) {
            sb_printf(&b, "%llu", (unsigned long long)outbuf[0]);
        } else if (strcmp(otype, "i64") == 0) {
            int64_t v;
            memcpy(&v, outbuf, 8);
            sb_printf(&b, "%lld", (long long)v);
        } else if (strcmp(otype, "f64") == 0) {
            double v;
            memcpy(&v, outbuf, 8);
            sb_printf(&b, "%.17g", v);
        } else if (strcmp(otype, "sv") == 0) {
            StringView sv;
            memcpy(&sv, outbuf, sizeof sv);
            if (!sv.ptr && sv.len)
                sb_printf(&b, "<null len=%zu>", sv.len);
            else
                sb_quote_view(&b, sv);
            /* without an arena the guest's bytes came from host->alloc: ours to free */
            if (!arena && sv.ptr) S.host->free(S.host, (uint8_t *)sv.ptr, sv.len, 1);
        } else if (strcmp(otype, "str") == 0) { /* a StringView the callee keeps owning */
            StringView sv;
            memcpy(&sv, outbuf, sizeof sv);
            sb_quote_view(&b, sv);
        } else {
            fatal("unknown out type '%s'", otype);
        }
    }
    if (err.message.ptr && err.message.len) {
        sb_puts(&b, " msg=");
        sb_quote_view(&b, err.message);
    }
    emit(&b);
    free(b.p);
}

/* instance <i> <h> */
static void cmd_instance(args *a) {
    need_pos(a, 2, "instance <i> <h>");
    require_runtime();
    instance_slot *is = instance_get(a->argv[1], true);
    handle_slot *hs = handle_get(a->argv[2], false);
    if (!hs->iface) fatal("instance: handle '%s' has no resolved interface", hs->name);
    GuestContractInstance inst = {NULL, 0};
    S.host->create_guest_instance(S.host, hs->iface, NULL, &inst);
    is->inst = inst;
    is->iface = hs->iface;
    is->dead = inst.data == NULL;
    if (inst.data)
        emitf("instance %s data=%llu cid_ok=%d", is->name,
              (unsigned long long)(uintptr_t)inst.data, inst.contract_id == hs->iface->contract_id);
    else
        emitf("instance %s null", is->name);
}

/* destroy <i> */
static void cmd_destroy(args *a) {
    need_pos(a, 1, "destroy <i>");
    require_runtime();
    instance_slot *is = instance_get(a->argv[1], false);
    if (is->dead) {
        emitf("destroy %s skipped", is->name);
        return;
    }
    S.host->destroy_guest_instance(S.host, is->iface, is->inst);
    is->dead = true;
    emitf("destroy %s ok", is->name);
}

static void cmd_arena(args *a) {
    need_pos(a, 2, "arena <a> <capacity>");
    require_runtime();
    arena_slot *as = arena_get(a->argv[1], true);
    if (as->arena) fatal("arena '%s' exists", as->name);
    size_t cap = (size_t)parse_u64(a->argv[2]);
    as->arena = pp_arena_new(S.host, cap);
    if (!as->arena) fatal("pp_arena_new failed");
    emitf("arena %s cap=%zu", as->name, cap);
}

static void cmd_arena_used(args *a) {
    need_pos(a, 1, "arena_used <a>");
    arena_slot *as = arena_get(a->argv[1], false);
    emitf("arena_used %s %zu", as->name, pp_arena_used(as->arena));
}

static void cmd_arena_reset(args *a) {
    need_pos(a, 1, "arena_reset <a>");
    arena_slot *as = arena_get(a->argv[1], false);
    pp_arena_reset(as->arena);
    emitf("arena_reset %s", as->name);
}

/* copy <src> <dst> — a new file with the bytes of <src> (e.g. a built native plugin) */
static void cmd_copy(args *a) {
    need_pos(a, 2, "copy <src> <dst>");
    size_t len;
    char *data = read_file(a->argv[1], &len);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", a->argv[2]);
    write_file(tmp, data, len);
    if (rename(tmp, a->argv[2]) != 0) fatal("cannot rename %s: %s", tmp, strerror(errno));
    free(data);
    emitf("copy %s ok", a->argv[2]);
}

/* reload <name> — pp_runtime_reload with the manifest the last `load` built */
static void cmd_reload(args *a) {
    need_pos(a, 1, "reload <name>");
    require_runtime();
    bundle_slot *bs = bundle_get(a->argv[1], false);
    pp_manifest m;
    manifest_of(bs, &m);
    pp_error err;
    pp_error_clear(&err);
    int32_t st = pp_runtime_reload(S.rt, &m, &err);
    sbuf b = {0};
    sb_printf(&b, "reload %s", bs->name);
    if (st == PP_OK)
        sb_puts(&b, " ok");
    else
        sb_pp_error(&b, &err);
    emit(&b);
    free(b.p);
}

/* loadpath|reloadpath <name> <path> [via=runtime|hostapi] — the C manifest reader:
 * pp_runtime_load_path / pp_runtime_reload_path, or HostApi.load_bundle / reload_bundle
 * (no hook is installed, so they run the same reader) */
static void path_op(args *a, bool reload) {
    static const char *const known[] = {"via", NULL};
    const char *cmd = reload ? "reloadpath" : "loadpath";
    check_opts(a, known);
    need_pos(a, 2, reload ? "reloadpath <name> <path> [via=runtime|hostapi]"
                          : "loadpath <name> <path> [via=runtime|hostapi]");
    require_runtime();
    const char *name = a->argv[1], *path = a->argv[2];
    const char *via = opt(a, "via", "runtime");
    sbuf b = {0};
    sb_printf(&b, "%s %s", cmd, name);
    if (strcmp(via, "hostapi") == 0) {
        AbiError e = {0, {NULL, 0}};
        if (reload)
            S.host->reload_bundle(S.host, (const uint8_t *)path, strlen(path), &e);
        else
            S.host->load_bundle(S.host, (const uint8_t *)path, strlen(path), &e);
        sb_printf(&b, " code=%u", e.code);
    } else if (strcmp(via, "runtime") == 0) {
        pp_error err;
        pp_error_clear(&err);
        int32_t st = reload ? pp_runtime_reload_path(S.rt, view(path), &err)
                            : pp_runtime_load_path(S.rt, view(path), &err);
        if (st == PP_OK)
            sb_puts(&b, " ok");
        else
            sb_pp_error(&b, &err);
    } else {
        fatal("via must be runtime or hostapi");
    }
    emit(&b);
    free(b.p);
}

static void cmd_loadpath(args *a) { path_op(a, false); }

static void cmd_reloadpath(args *a) { path_op(a, true); }

/* unload <name> */
static void cmd_unload(args *a) {
    need_pos(a, 1, "unload <name>");
    require_runtime();
    pp_error err;
    pp_error_clear(&err);
    int32_t st = pp_runtime_unload(S.rt, bundle_id_of(a->argv[1]), &err);
    sbuf b = {0};
    sb_printf(&b, "unload %s", a->argv[1]);
    if (st == PP_OK) {
        sb_puts(&b, " ok");
    } else {
        sb_pp_error(&b, &err);
    }
    emit(&b);
    free(b.p);
}

static int cmp_u64(const void *x, const void *y) {
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static void cmd_bundles(args *a) {
    need_pos(a, 0, "bundles");
    require_runtime();
    ArrayU64 arr = S.host->list_bundles(S.host);
    if (arr.len) qsort(arr.items, arr.len, sizeof *arr.items, cmp_u64);
    sbuf b = {0};
    sb_printf(&b, "bundles n=%zu", arr.len);
    for (size_t i = 0; i < arr.len; i++) sb_printf(&b, " %016llx", (unsigned long long)arr.items[i]);
    if (arr.items) S.host->free(S.host, (uint8_t *)arr.items, arr.len * sizeof *arr.items, arr.align);
    emit(&b);
    free(b.p);
}

/* hostlog <level-number> <scope> <message words...> */
static void cmd_hostlog(args *a) {
    if (a->argc < 3) fatal("usage: hostlog <level> <scope> <message...>");
    require_runtime();
    uint32_t level = parse_u32(a->argv[1]);
    sbuf msg = {0};
    sb_puts(&msg, "");
    for (int i = 3; i < a->argc; i++) {
        if (i > 3) sb_puts(&msg, " ");
        sb_puts(&msg, a->argv[i]);
    }
    S.host->log(S.host, level, view(a->argv[2]), view(msg.p));
    free(msg.p);
}

/* ── host contracts: the parity host (the Python driver provides the same) ──── */

/* parity host functions: 0 add(u32, u32) -> u32, 1 greet(string) -> string,
 * 2 fail(string) (fails with "ValueError: <text>", like a Python raise), 3 count() -> u32
 * (a counter per instance, or per contract for a singleton). */
typedef struct phost {
    uint32_t count; /* the singleton's counter */
} phost;

static uint32_t phost_call(void *user_data, void *instance, uint32_t fn_id, const void *args,
                           void *out) {
    phost *h = user_data;
    switch (fn_id) {
    case 0: {
        uint32_t ab[2], sum;
        memcpy(ab, args, sizeof ab);
        sum = ab[0] + ab[1];
        memcpy(out, &sum, sizeof sum);
        return AbiErrorCode_Ok;
    }
    case 1:
    case 2: {
        StringView sv;
        memcpy(&sv, args, sizeof sv);
        sbuf b = {0};
        /* "ValueError" alone for an empty text: what Python prints for ValueError("") */
        sb_puts(&b, fn_id == 1 ? "hello, " : sv.len ? "ValueError: " : "ValueError");
        if (sv.len) sb_putn(&b, (const char *)sv.ptr, sv.len);
        uint32_t code = AbiErrorCode_Ok;
        if (fn_id == 1)
            code = pp_host_result_string(out, b.p, b.len) ? AbiErrorCode_Ok
                                                           : AbiErrorCode_HostContractCallFailed;
        else
            code = pp_host_error(AbiErrorCode_HostContractCallFailed, b.p, b.len, NULL, 0);
        free(b.p);
        return code;
    }
    case 3: {
        uint32_t *counter = instance ? (uint32_t *)instance : &h->count;
        uint32_t v = ++*counter;
        memcpy(out, &v, sizeof v);
        return AbiErrorCode_Ok;
    }
    default:
        return pp_host_error(AbiErrorCode_FunctionNotAvailable, "no such function", 16, NULL, 0);
    }
}

static void *phost_create(void *user_data, const void *args) {
    (void)user_data;
    (void)args;
    return calloc(1, sizeof(uint32_t));
}

static void phost_destroy(void *user_data, void *instance) {
    (void)user_data;
    free(instance);
}

static void phost_release(void *user_data) { free(user_data); }

static uint64_t host_contract_id_of(const char *name, uint32_t major) {
    char buf[512];
    snprintf(buf, sizeof buf, "host_contract:%s@%u", name, major);
    return fnv1a64(buf);
}

/* provide <name> <major> [minor=0] [instances=0|1] [replace=0|1] */
static void cmd_provide(args *a) {
    static const char *const known[] = {"minor", "instances", "replace", NULL};
    check_opts(a, known);
    need_pos(a, 2, "provide <name> <major> [minor=] [instances=0|1] [replace=0|1]");
    require_runtime();
    static const pp_host_function fns[] = {
        {"add", 8, 4}, {"greet", 16, 16}, {"fail", 16, 0}, {"count", 0, 4}};
    pp_host_contract_desc d;
    memset(&d, 0, sizeof d);
    d.name = view(a->argv[1]);
    d.version.major = parse_u32(a->argv[2]);
    d.version.minor = parse_u32(opt(a, "minor", "0"));
    d.function_count = 4;
    d.functions = fns;
    d.call = phost_call;
    if (parse_u32(opt(a, "instances", "0"))) {
        d.create = phost_create;
        d.destroy = phost_destroy;
    }
    d.release = phost_release;
    d.user_data = calloc(1, sizeof(phost));
    if (!d.user_data) fatal("out of memory");
    pp_error err;
    pp_error_clear(&err);
    sbuf b = {0};
    sb_printf(&b, "provide %s@%s", a->argv[1], a->argv[2]);
    if (pp_runtime_provide_host_contract(S.rt, &d, parse_u32(opt(a, "replace", "0")) != 0, NULL,
                                         &err) == PP_OK) {
        sb_puts(&b, " ok");
    } else {
        free(d.user_data); /* not provided: nothing will release it */
        sb_pp_error(&b, &err);
    }
    emit(&b);
    free(b.p);
}

/* withdraw <name> <major> */
static void cmd_withdraw(args *a) {
    need_pos(a, 2, "withdraw <name> <major>");
    require_runtime();
    bool done = pp_runtime_withdraw_host_contract(
        S.rt, host_contract_id_of(a->argv[1], parse_u32(a->argv[2])), NULL);
    emitf("withdraw %s@%s %d", a->argv[1], a->argv[2], done);
}

/* hostcall <name> <major> <fn> [min=<packed>] [args=<spec>|null] [out=u32|sv]
 *          [inst=get|null] : a host function called from the host side, through
 *          resolve_host_contract_interface + get_host_contract and the native table */
static void cmd_hostcall(args *a) {
    static const char *const known[] = {"min", "args", "out", "inst", NULL};
    check_opts(a, known);
    need_pos(a, 3, "hostcall <name> <major> <fn> [min=] [args=] [out=] [inst=get|null]");
    require_runtime();
    uint64_t id = host_contract_id_of(a->argv[1], parse_u32(a->argv[2]));
    uint32_t min = parse_u32(opt(a, "min", "0"));
    uint32_t fn = parse_u32(a->argv[3]);
    sbuf b = {0};
    sb_printf(&b, "hostcall %s@%s fn=%u", a->argv[1], a->argv[2], fn);
    const HostContractInterface *iface = S.host->resolve_host_contract_interface(S.host, id, min);
    if (!iface) {
        sb_puts(&b, " noiface");
        emit(&b);
        free(b.p);
        return;
    }
    if (iface->dispatch_type != DispatchType_Native || fn >= PP_HOST_MAX_FUNCTIONS)
        fatal("hostcall: a native host contract and fn < %d", PP_HOST_MAX_FUNCTIONS);
    bool get = strcmp(opt(a, "inst", "get"), "get") == 0;
    HostContractInstance inst = {NULL};
    if (get) inst = S.host->get_host_contract(S.host, id, min);
    argblock ab;
    bool have_args = args_option(a, &ab);
    const char *otype = opt(a, "out", NULL);
    uint64_t outbuf[4] = {0, 0, 0, 0};
    AbiError err = {AbiErrorCode_Ok, {NULL, 0}};
    /* a managed contract's table has PP_HOST_MAX_FUNCTIONS slots: an id past its count
     * reaches a slot that answers FunctionNotAvailable */
    NativeHostFn f = (NativeHostFn)(uintptr_t)iface->dispatch.native.functions[fn];
    f(inst.data, have_args ? (const void *)ab.words : NULL, otype ? (void *)outbuf : NULL, &err);
    free_args(&ab);
    sb_printf(&b, " code=%u", err.code);
    if (otype && strcmp(otype, "u32") == 0) {
        uint32_t v;
        memcpy(&v, outbuf, 4);
        sb_printf(&b, " out=%u", v);
    } else if (otype && strcmp(otype, "sv") == 0) {
        StringView sv;
        memcpy(&sv, outbuf, sizeof sv);
        sb_puts(&b, " out=");
        sb_quote_view(&b, sv);
    } else if (otype) {
        fatal("hostcall: out must be u32 or sv");
    }
    if (err.message.ptr && err.message.len) {
        sb_puts(&b, " msg=");
        sb_quote_view(&b, err.message);
    }
    if (get && !iface->singleton) iface->destroy_instance(iface, inst);
    emit(&b);
    free(b.p);
}

static void cmd_last_error(args *a) {
    need_pos(a, 0, "last_error");
    require_runtime();
    size_t n = S.host->get_error_len(S.host);
    uint8_t *buf = xmalloc(n ? n : 1);
    size_t got = S.host->get_last_error(S.host, buf, n ? n : 1);
    sbuf b = {0};
    sb_puts(&b, "last_error ");
    sb_escape(&b, buf, got < n ? got : n, true);
    emit(&b);
    free(b.p);
    free(buf);
}

static void cmd_revision(args *a) {
    need_pos(a, 0, "revision");
    require_runtime();
    emitf("revision %llu", (unsigned long long)*S.host->revision_counter(S.host));
}

/* ── the interpreter loop ──────────────────────────────────────────────────── */

static void run_scenario(const char *path, const char *work_base) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char stem[256];
    snprintf(stem, sizeof stem, "%s", base);
    char *dot = strrchr(stem, '.');
    if (dot) *dot = '\0';
    snprintf(g_work, sizeof g_work, "%s/%s", work_base, stem);
    mkdirs(g_work);
    g_scenario = path;
    g_lineno = 0;
    FILE *in = fopen(path, "r");
    if (!in) fatal("cannot open scenario %s: %s", path, strerror(errno));
    emitf("== scenario %s", stem);
    char raw[8192];
    while (fgets(raw, sizeof raw, in)) {
        g_lineno++;
        size_t n = strlen(raw);
        while (n && (raw[n - 1] == '\n' || raw[n - 1] == '\r' || raw[n - 1] == ' ')) raw[--n] = '\0';
        char *line = raw;
        while (*line == ' ' || *line == '\t') line++;
        if (!*line || *line == '#') continue;
        char *text = expand(line);
        if (strncmp(text, "echo", 4) == 0 && (text[4] == ' ' || !text[4])) {
            emitf("%s", text);
            free(text);
            continue;
        }
        args a;
        tokenize(text, &a);
        const char *c = a.argv[0];
        if (strcmp(c, "runtime") == 0) cmd_runtime(&a);
        else if (strcmp(c, "close") == 0) cmd_close(&a);
        else if (strcmp(c, "write") == 0) cmd_write(&a, in);
        else if (strcmp(c, "copy") == 0) cmd_copy(&a);
        else if (strcmp(c, "manifest") == 0) cmd_manifest(&a);
        else if (strcmp(c, "load") == 0) cmd_load(&a);
        else if (strcmp(c, "find") == 0) cmd_find(&a);
        else if (strcmp(c, "findall") == 0) cmd_findall(&a);
        else if (strcmp(c, "resolve") == 0) cmd_resolve(&a);
        else if (strcmp(c, "call") == 0) cmd_call(&a);
        else if (strcmp(c, "instance") == 0) cmd_instance(&a);
        else if (strcmp(c, "destroy") == 0) cmd_destroy(&a);
        else if (strcmp(c, "arena") == 0) cmd_arena(&a);
        else if (strcmp(c, "arena_used") == 0) cmd_arena_used(&a);
        else if (strcmp(c, "arena_reset") == 0) cmd_arena_reset(&a);
        else if (strcmp(c, "reload") == 0) cmd_reload(&a);
        else if (strcmp(c, "loadpath") == 0) cmd_loadpath(&a);
        else if (strcmp(c, "reloadpath") == 0) cmd_reloadpath(&a);
        else if (strcmp(c, "unload") == 0) cmd_unload(&a);
        else if (strcmp(c, "bundles") == 0) cmd_bundles(&a);
        else if (strcmp(c, "hostlog") == 0) cmd_hostlog(&a);
        else if (strcmp(c, "last_error") == 0) cmd_last_error(&a);
        else if (strcmp(c, "revision") == 0) cmd_revision(&a);
        else if (strcmp(c, "provide") == 0) cmd_provide(&a);
        else if (strcmp(c, "withdraw") == 0) cmd_withdraw(&a);
        else if (strcmp(c, "hostcall") == 0) cmd_hostcall(&a);
        else fatal("unknown command '%s'", c);
        free(text);
    }
    fclose(in);
    if (S.rt) close_runtime(); /* silently, as the Python driver does */
    g_work[0] = '\0';
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *root = NULL, *work = NULL;
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--root") == 0 && i + 1 < argc)
            root = argv[++i];
        else if (strcmp(argv[i], "--work") == 0 && i + 1 < argc)
            work = argv[++i];
        else
            break;
    }
    if (!root || !work || i >= argc) {
        fprintf(stderr, "usage: parity_driver --root <repo> --work <dir> SCENARIO.scn...\n");
        return 2;
    }
    snprintf(g_root, sizeof g_root, "%s", root);
    for (; i < argc; i++) run_scenario(argv[i], work);
    return 0;
}
