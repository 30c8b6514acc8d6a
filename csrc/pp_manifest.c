/*
 * pp_manifest.c — manifest.toml for C and Python hosts alike: reading, the typed
 * model, validation, the mode-dependent checks, and loading a bundle by path.
 *
 *   pp_manifest_doc_read      bundle dir -> <dir>/manifest.toml -> TOML tree (pp_toml.c)
 *                             -> typed model; every type error is a ManifestParse
 *   pp_manifest_doc_check     unknown keys / signature tables (PP_CHECK_KEYS) and the
 *                             [function_count] pre-check, per compatibility mode
 *   pp_manifest_doc_validate  upstream's steps 1-7 (abi-runtime.md §7.3), then the
 *                             version and the entry path, before anything registers
 *
 * Error texts are upstream's where upstream has one; the rest name the key, the line
 * and the column.  A document is one arena (the TOML tree's), so it has one free.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pp_toml.h"

enum { MANIFEST_MAX_BYTES = 16 << 20, SHOWN_VALUE_CHARS = 60, MAX_SYMLINKS = 40 };

static const char MANIFEST_NAME[] = "manifest.toml";

typedef struct dep_extra {
    StringView kind, min_version, bundle;
    bool has_bundle, has_bundle_id;
} dep_extra;

typedef struct fcount {
    StringView key;
    uint32_t count;
} fcount;

typedef struct sig_fn {
    StringView name;
    uint32_t id;
    const char **args; /* normalised type names (static strings) */
    size_t nargs;
    const char *ret; /* NULL: no result */
} sig_fn;

typedef struct sig_contract {
    StringView key;
    sig_fn *fns;
    size_t nfns;
} sig_contract;

/* Something the mode-dependent key check reports: "<subject>[ at line L, column C]<tail>". */
typedef struct finding {
    const char *subject, *tail;
    size_t off;
} finding;

struct pp_manifest_doc {
    ppt_doc *toml;
    ppi_arena *A; /* the tree's arena; the model lives there too */
    pp_manifest m;
    bool generated;
    StringView dir;    /* the bundle directory, NUL-terminated */
    const char *where; /* what parse and type errors name: <dir>/manifest.toml, or dir */
    StringView *provides;
    pp_dependency *deps;
    dep_extra *dep_extra;
    StringView *bundle_deps;
    size_t bundle_deps_len;
    fcount *fcounts;
    size_t fcounts_len;
    sig_contract *sigs;
    size_t sigs_len;
    finding *findings;
    size_t findings_len, findings_cap;
    bool version_ok;
    _Atomic bool validated; /* steps before the entry check passed (they never change) */
    uint64_t stamp[4]; /* inode, size, mtime ns, ctime ns of manifest.toml */
    char **warnings;   /* malloc'd, replaced by every pp_manifest_doc_check */
    size_t warnings_len, warnings_cap;
    char *json;
    size_t json_len;
};

/* ── small helpers ─────────────────────────────────────────────────────────── */

static StringView sv(const char *s) { return ppi_view(s); }

static bool sv_eq(StringView a, StringView b) {
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* Python's str.isspace() for one code point. */
static bool py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

/* Decode the code point at s[*i] (valid UTF-8) and advance. */
static uint32_t next_cp(StringView s, size_t *i) {
    uint8_t c = s.ptr[*i];
    int extra = c < 0x80 ? 0 : c < 0xE0 ? 1 : c < 0xF0 ? 2 : 3;
    uint32_t cp = extra == 0   ? c
                  : extra == 1 ? (c & 0x1Fu)
                  : extra == 2 ? (c & 0x0Fu)
                               : (c & 0x07u);
    (*i)++;
    for (int k = 0; k < extra && *i < s.len; k++) cp = (cp << 6) | (s.ptr[(*i)++] & 0x3Fu);
    return cp;
}

/* Empty or only whitespace, as Python's `not s.strip()`. */
static bool blank(StringView s) {
    for (size_t i = 0; i < s.len;)
        if (!py_space(next_cp(s, &i))) return false;
    return true;
}

/* Rust's u32::from_str: an optional '+', then ASCII digits, within u32. */
static bool parse_u32(StringView s, uint32_t *out) {
    size_t i = s.len && s.ptr[0] == '+' ? 1 : 0;
    if (i == s.len) return false;
    uint64_t v = 0;
    for (; i < s.len; i++) {
        if (s.ptr[i] < '0' || s.ptr[i] > '9') return false;
        v = v * 10 + (uint64_t)(s.ptr[i] - '0');
        if (v > UINT32_MAX) return false;
    }
    *out = (uint32_t)v;
    return true;
}

/* Upstream's Version::from_str; returns NULL or the ParseVersionError variant name. */
static const char *parse_version(StringView s, Version *out) {
    StringView part[3];
    size_t nparts = 0, start = 0;
    for (size_t i = 0; i <= s.len && nparts < 3; i++) {
        if (i == s.len || s.ptr[i] == '.') {
            part[nparts].ptr = s.ptr + start;
            part[nparts].len = i - start;
            nparts++;
            start = i + 1;
        }
    }
    if (nparts < 2) return "InvalidFormat";
    uint32_t v[3] = {0, 0, 0};
    for (size_t k = 0; k < nparts; k++)
        if (!parse_u32(part[k], &v[k])) return "InvalidInt";
    out->major = v[0];
    out->minor = v[1];
    out->patch = v[2];
    return NULL;
}

/* The major of a spec's version part: a bare u32 or a full version. */
static bool spec_major(StringView s, uint32_t *major) {
    Version v;
    if (parse_u32(s, major)) return true;
    if (parse_version(s, &v)) return false;
    *major = v.major;
    return true;
}

/* Split "name@rest" at the first '@'. */
static bool split_at(StringView s, StringView *name, StringView *rest) {
    const uint8_t *at = s.len ? memchr(s.ptr, '@', s.len) : NULL;
    name->ptr = s.ptr;
    name->len = at ? (size_t)(at - s.ptr) : s.len;
    rest->ptr = at ? at + 1 : s.ptr + s.len;
    rest->len = at ? s.len - name->len - 1 : 0;
    return at != NULL;
}

/* guest_contract_id, or host_contract_id for a `kind = "host_contract"` dependency. */
static uint64_t contract_id_of(StringView bare, uint32_t major, bool host) {
    ppi_buf b = {0};
    ppi_buf_puts(&b, host ? "host_contract:" : "guest_contract:");
    ppi_buf_putn(&b, bare.ptr, bare.len);
    ppi_buf_printf(&b, "@%u", major);
    uint64_t id = b.failed ? 0 : pp_fnv1a64((const uint8_t *)b.p, b.len);
    free(b.p);
    return id;
}

/* A NUL-terminated arena copy of a buffer's text ("" if it failed). */
static const char *arena_text(pp_manifest_doc *d, ppi_buf *b) {
    const char *s = ppi_arena_strndup(d->A, b->failed ? "" : b->p, b->failed ? 0 : b->len);
    free(b->p);
    memset(b, 0, sizeof *b);
    return s ? s : "";
}

/* Optimal string alignment distance, for did-you-mean (short keys only). */
static size_t edit_distance(StringView a, const char *b) {
    size_t n = a.len, m = strlen(b);
    if (n > 64 || m > 64) return SIZE_MAX;
    uint8_t d[65][65];
    for (size_t i = 0; i <= n; i++) d[i][0] = (uint8_t)i;
    for (size_t j = 0; j <= m; j++) d[0][j] = (uint8_t)j;
    for (size_t i = 1; i <= n; i++) {
        for (size_t j = 1; j <= m; j++) {
            size_t cost = a.ptr[i - 1] == (uint8_t)b[j - 1] ? 0 : 1;
            size_t best = d[i - 1][j] + 1;
            if ((size_t)d[i][j - 1] + 1 < best) best = (size_t)d[i][j - 1] + 1;
            if ((size_t)d[i - 1][j - 1] + cost < best) best = (size_t)d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a.ptr[i - 1] == (uint8_t)b[j - 2] &&
                a.ptr[i - 2] == (uint8_t)b[j - 1] && (size_t)d[i - 2][j - 2] + 1 < best)
                best = (size_t)d[i - 2][j - 2] + 1;
            d[i][j] = (uint8_t)best;
        }
    }
    return d[n][m];
}

/* The closest of `known` to `key`, if it is close enough to be a likely typo. */
static const char *suggest(StringView key, const char *const *known, size_t n) {
    size_t limit = key.len <= 2 ? 0 : key.len <= 5 ? 1 : key.len / 3;
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        size_t dist = edit_distance(key, known[i]);
        if (dist <= limit && dist < best_d) {
            best = known[i];
            best_d = dist;
        }
    }
    return best;
}

/* ── errors ────────────────────────────────────────────────────────────────── */

/* " (at line L, column C)", or "" for generated text. */
static void position(const pp_manifest_doc *d, size_t off, const char *lead, char *buf,
                     size_t cap) {
    buf[0] = '\0';
    if (d->generated) return;
    size_t line, col;
    ppt_position(d->toml->src, d->toml->len, off, &line, &col);
    snprintf(buf, cap, "%sline %zu, column %zu", lead, line, col);
}

static int32_t parse_fail_at(pp_error *err, const char *where, const char *fmt, ...)
    PP_PRINTF(3, 4);
static int32_t parse_fail_at(pp_error *err, const char *where, const char *fmt, ...) {
    char reason[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    return ppi_fail(err, PP_ERR_MANIFEST, where, NULL, reason, "manifest parse error for `%s`: %s",
                    where, reason);
}

/* "integer -1", "string \"x\"", "a table": a value as a type error shows it. */
static void describe(const ppt_value *v, char *buf, size_t cap) {
    const char *kind;
    ppi_buf shown = {0};
    switch (v->type) {
    case PPT_BOOL: snprintf(buf, cap, "boolean %s", v->u.b ? "true" : "false"); return;
    case PPT_ARRAY: snprintf(buf, cap, "an array"); return;
    case PPT_TABLE: snprintf(buf, cap, "a table"); return;
    case PPT_STRING:
        kind = "string";
        ppi_buf_json_str(&shown, v->u.str);
        break;
    default:
        kind = v->type == PPT_INTEGER ? "integer" : "float";
        ppi_buf_putn(&shown, v->text.ptr, v->text.len);
        break;
    }
    if (shown.failed) {
        snprintf(buf, cap, "%s", kind);
        free(shown.p);
        return;
    }
    StringView s = {(const uint8_t *)shown.p, shown.len};
    size_t chars = 0, cut = s.len;
    for (size_t i = 0; i < s.len;) {
        if (chars == SHOWN_VALUE_CHARS - 3) cut = i;
        next_cp(s, &i);
        chars++;
    }
    if (chars > SHOWN_VALUE_CHARS)
        snprintf(buf, cap, "%s %.*s...", kind, (int)cut, shown.p);
    else
        snprintf(buf, cap, "%s %s", kind, shown.p);
    free(shown.p);
}

/* ── building the model from the tree ──────────────────────────────────────── */

typedef struct builder {
    pp_manifest_doc *d;
    pp_error *err;
} builder;

static const char *const top_keys[] = {
    "loader", "name", "id", "version", "file", "provides", "function_count", "dependency",
    "needs_reinit_on_dep_reload", "bundle_dependencies", "contracts",
};
static const char *const dep_keys[] = {"kind",   "contract",    "min_version",
                                       "bundle", "contract_id", "bundle_id"};
static const char *const os_names[] = {"linux", "macos", "windows"};
static const char *const arch_names[] = {"x86_64", "aarch64"};

#if defined(__linux__)
#define PP_OS_NAME "linux"
#elif defined(__APPLE__)
#define PP_OS_NAME "macos"
#elif defined(_WIN32)
#define PP_OS_NAME "windows"
#else
#define PP_OS_NAME "unknown"
#endif
#if defined(__x86_64__) || defined(_M_X64)
#define PP_ARCH_NAME "x86_64"
#elif defined(__aarch64__) || defined(_M_ARM64)
#define PP_ARCH_NAME "aarch64"
#else
#define PP_ARCH_NAME "unknown"
#endif

static bool is_top_key(StringView k) {
    for (size_t i = 0; i < PP_COUNTOF(top_keys); i++)
        if (ppi_view_eq(k, top_keys[i])) return true;
    return false;
}

static int32_t oom(builder *B) {
    return ppi_fail(B->err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
}

/* key `<label>`: expected <expected>, found <value> (at line L, column C) */
static int32_t type_error(builder *B, const char *label, const char *expected,
                          const ppt_value *v, const char *hint) {
    char found[320], pos[64];
    describe(v, found, sizeof found);
    position(B->d, v->off, " (at ", pos, sizeof pos);
    return parse_fail_at(B->err, B->d->where, "key `%s`: expected %s, found %s%s%s%s", label,
                         expected, found, pos, *pos ? ")" : "", hint ? hint : "");
}

static int32_t missing_field(builder *B, const char *key, const char *in, const ppt_value *t) {
    char pos[64] = "";
    if (in) position(B->d, t->off, " (at ", pos, sizeof pos);
    if (!in) return parse_fail_at(B->err, B->d->where, "missing field `%s`", key);
    return parse_fail_at(B->err, B->d->where, "missing field `%s` in `%s`%s%s", key, in, pos,
                         *pos ? ")" : "");
}

static const ppt_value *get(const ppt_value *t, const char *key) {
    const ppt_entry *e = ppt_find(t, key);
    return e ? e->value : NULL;
}

/* t[key] as a string; absent -> def, or an error when def is NULL. */
static int32_t want_str(builder *B, const ppt_value *t, const char *key, const char *label,
                        const char *def, const char *missing_in, StringView *out) {
    const ppt_value *v = get(t, key);
    if (!v) {
        if (!def) return missing_field(B, key, missing_in, t);
        *out = sv(def);
        return PP_OK;
    }
    if (v->type != PPT_STRING) return type_error(B, label, "a string", v, NULL);
    *out = v->u.str;
    return PP_OK;
}

/* An unsigned `bits`-bit integer (a boolean is not one). */
static int32_t want_uint(builder *B, const ppt_value *v, int bits, const char *label,
                         const char *hint, uint64_t *out) {
    uint64_t limit = bits == 64 ? UINT64_MAX : ((uint64_t)1 << bits) - 1;
    if (v->type == PPT_INTEGER && !v->u.i.neg && !v->u.i.big && v->u.i.mag <= limit) {
        *out = v->u.i.mag;
        return PP_OK;
    }
    char expected[80];
    snprintf(expected, sizeof expected, "an unsigned %d-bit integer (0..%llu)", bits,
             (unsigned long long)limit);
    return type_error(B, label, expected, v, hint);
}

/* An array of strings into an arena array; absent -> empty. */
static int32_t want_str_list(builder *B, const ppt_value *t, const char *key, StringView **out,
                             size_t *len) {
    const ppt_value *v = get(t, key);
    *out = NULL;
    *len = 0;
    if (!v) return PP_OK;
    if (v->type != PPT_ARRAY) return type_error(B, key, "an array of strings", v, NULL);
    StringView *items = ppi_arena_alloc(B->d->A, (v->u.arr.len + 1) * sizeof *items);
    if (!items) return oom(B);
    for (size_t i = 0; i < v->u.arr.len; i++) {
        const ppt_value *item = v->u.arr.items[i];
        if (item->type != PPT_STRING) {
            char label[64];
            snprintf(label, sizeof label, "%s[%zu]", key, i);
            return type_error(B, label, "a string", item, NULL);
        }
        items[i] = item->u.str;
    }
    *out = items;
    *len = v->u.arr.len;
    return PP_OK;
}

static void add_finding(builder *B, size_t off, ppi_buf *subject, const char *tail) {
    pp_manifest_doc *d = B->d;
    if (d->findings_len == d->findings_cap) {
        size_t ncap = d->findings_cap ? d->findings_cap * 2 : 8;
        finding *f = ppi_arena_alloc(d->A, ncap * sizeof *f);
        if (!f) {
            free(subject->p);
            return;
        }
        if (d->findings_len) memcpy(f, d->findings, d->findings_len * sizeof *f);
        d->findings = f;
        d->findings_cap = ncap;
    }
    finding *f = &d->findings[d->findings_len++];
    f->subject = arena_text(d, subject);
    f->tail = tail ? ppi_arena_strndup(d->A, tail, strlen(tail)) : "";
    if (!f->tail) f->tail = "";
    f->off = off;
}

/* "unknown key `<prefix><key>`", with a did-you-mean among `known`. */
static void unknown_key(builder *B, const char *prefix, const ppt_entry *e,
                        const char *const *known, size_t nknown) {
    char shown[96], tail[160] = "";
    ppi_buf subject = {0};
    ppi_buf_printf(&subject, "unknown key `%s%s`", prefix,
                   ppt_show_key(e->key, shown, sizeof shown));
    const char *s = suggest(e->key, known, nknown);
    if (s) snprintf(tail, sizeof tail, " (did you mean `%s%s`?)", prefix, s);
    add_finding(B, e->key_off, &subject, tail);
}

static void check_known_keys(builder *B, const ppt_value *t, const char *prefix,
                             const char *const *known, size_t nknown) {
    for (size_t i = 0; i < t->u.tab.len; i++) {
        const ppt_entry *e = &t->u.tab.items[i];
        bool ok = false;
        for (size_t k = 0; k < nknown && !ok; k++) ok = ppi_view_eq(e->key, known[k]);
        if (!ok) unknown_key(B, prefix, e, known, nknown);
    }
}

/* The entry file: a string, or this platform's entry of the [file] table form. */
static int32_t build_file(builder *B, const ppt_value *v) {
    pp_manifest_doc *d = B->d;
    if (!v) {
        d->m.file = sv("");
        return PP_OK;
    }
    if (v->type == PPT_STRING) {
        d->m.file = v->u.str;
        return PP_OK;
    }
    if (v->type != PPT_TABLE)
        return type_error(B, "file", "a string or a table like {linux = {x86_64 = \"path\"}}", v,
                          NULL);
    /* typos of platform names, and keys that TOML scoped into [file] by accident */
    for (size_t i = 0; i < v->u.tab.len; i++) {
        const ppt_entry *e = &v->u.tab.items[i];
        char shown[96];
        if (e->value->type != PPT_TABLE) {
            ppi_buf subject = {0};
            ppi_buf_printf(&subject, "key `file.%s` is not a platform entry",
                           ppt_show_key(e->key, shown, sizeof shown));
            add_finding(B, e->key_off, &subject,
                        is_top_key(e->key)
                            ? ": a key written after a [file] header belongs to that table; "
                              "move it above [file]"
                            : " (entries are `<os>.<arch> = \"path\"`)");
            continue;
        }
        bool known_os = false;
        for (size_t k = 0; k < PP_COUNTOF(os_names); k++)
            known_os |= ppi_view_eq(e->key, os_names[k]);
        if (!known_os && suggest(e->key, os_names, PP_COUNTOF(os_names)))
            unknown_key(B, "file.", e, os_names, PP_COUNTOF(os_names));
        if (!known_os) continue;
        for (size_t a = 0; a < e->value->u.tab.len; a++) {
            const ppt_entry *ae = &e->value->u.tab.items[a];
            bool known_arch = ppi_view_eq(ae->key, "x86_64") || ppi_view_eq(ae->key, "aarch64");
            if (!known_arch && suggest(ae->key, arch_names, PP_COUNTOF(arch_names))) {
                char prefix[96];
                snprintf(prefix, sizeof prefix, "file.%s.",
                         ppt_show_key(e->key, shown, sizeof shown));
                unknown_key(B, prefix, ae, arch_names, PP_COUNTOF(arch_names));
            }
        }
    }
    const ppt_value *chosen = get(v, PP_OS_NAME);
    const ppt_value *entry = chosen && chosen->type == PPT_TABLE ? get(chosen, PP_ARCH_NAME) : NULL;
    if (entry) {
        if (entry->type != PPT_STRING)
            return type_error(B, "file." PP_OS_NAME "." PP_ARCH_NAME, "a string", entry, NULL);
        d->m.file = entry->u.str;
        return PP_OK;
    }
    /* no entry: list the ones there are, sorted */
    size_t n = 0;
    for (size_t i = 0; i < v->u.tab.len; i++)
        if (v->u.tab.items[i].value->type == PPT_TABLE) n += v->u.tab.items[i].value->u.tab.len;
    StringView *names = malloc((n + 1) * sizeof *names);
    ppi_buf all = {0};
    if (!names) return oom(B);
    size_t k = 0;
    for (size_t i = 0; i < v->u.tab.len; i++) {
        const ppt_entry *os = &v->u.tab.items[i];
        if (os->value->type != PPT_TABLE) continue;
        for (size_t a = 0; a < os->value->u.tab.len; a++) {
            const ppt_entry *ae = &os->value->u.tab.items[a];
            if (ae->value->type != PPT_STRING) continue;
            ppi_buf b = {0};
            ppi_buf_putn(&b, os->key.ptr, os->key.len);
            ppi_buf_putn(&b, ".", 1);
            ppi_buf_putn(&b, ae->key.ptr, ae->key.len);
            names[k].ptr = (const uint8_t *)arena_text(d, &b);
            names[k].len = strlen((const char *)names[k].ptr);
            k++;
        }
    }
    for (size_t i = 1; i < k; i++) { /* insertion sort by bytes = by code point */
        for (size_t j = i; j > 0; j--) {
            StringView x = names[j - 1], y = names[j];
            size_t m = x.len < y.len ? x.len : y.len;
            int c = m ? memcmp(x.ptr, y.ptr, m) : 0;
            if (c < 0 || (c == 0 && x.len <= y.len)) break;
            names[j - 1] = y;
            names[j] = x;
        }
    }
    for (size_t i = 0; i < k; i++) {
        if (i) ppi_buf_puts(&all, ", ");
        ppi_buf_json_str(&all, names[i]);
    }
    free(names);
    int32_t st = parse_fail_at(B->err, d->where,
                               "no file entry for platform %s.%s, available: [%s]", PP_OS_NAME,
                               PP_ARCH_NAME, all.failed || !all.p ? "" : all.p);
    free(all.p);
    return st;
}

static int32_t build_function_counts(builder *B, const ppt_value *v) {
    pp_manifest_doc *d = B->d;
    if (!v) return PP_OK;
    if (v->type != PPT_TABLE)
        return type_error(B, "function_count", "a table of \"<contract>@<major>\" = <count>", v,
                          NULL);
    d->fcounts = ppi_arena_alloc(d->A, (v->u.tab.len + 1) * sizeof *d->fcounts);
    if (!d->fcounts) return oom(B);
    for (size_t i = 0; i < v->u.tab.len; i++) {
        const ppt_entry *e = &v->u.tab.items[i];
        uint64_t n = 0;
        ppi_buf label = {0};
        ppi_buf_puts(&label, "function_count.");
        ppi_buf_json_str(&label, e->key);
        const char *hint = is_top_key(e->key)
                               ? "; a key written after a [function_count] header belongs to "
                                 "that table: move it above [function_count]"
                               : NULL;
        const char *shown = label.failed ? "function_count" : label.p;
        int32_t st = want_uint(B, e->value, 32, shown, hint, &n);
        free(label.p);
        if (st) return st;
        d->fcounts[i].key = e->key;
        d->fcounts[i].count = (uint32_t)n;
    }
    d->fcounts_len = v->u.tab.len;
    return PP_OK;
}

static int32_t build_dependencies(builder *B, const ppt_value *v) {
    pp_manifest_doc *d = B->d;
    if (!v) return PP_OK;
    if (v->type != PPT_ARRAY)
        return type_error(B, "dependency", "an array of tables ([[dependency]])", v, NULL);
    size_t n = v->u.arr.len;
    d->deps = ppi_arena_alloc(d->A, (n + 1) * sizeof *d->deps);
    d->dep_extra = ppi_arena_alloc(d->A, (n + 1) * sizeof *d->dep_extra);
    if (!d->deps || !d->dep_extra) return oom(B);
    for (size_t i = 0; i < n; i++) {
        const ppt_value *t = v->u.arr.items[i];
        char label[48], field[80];
        snprintf(label, sizeof label, "dependency[%zu]", i);
        if (t->type != PPT_TABLE) return type_error(B, label, "a table", t, NULL);
        pp_dependency *dep = &d->deps[i];
        dep_extra *x = &d->dep_extra[i];
        const ppt_value *bundle = get(t, "bundle");
        if (bundle && bundle->type != PPT_STRING) {
            snprintf(field, sizeof field, "%s.bundle", label);
            return type_error(B, field, "a string", bundle, NULL);
        }
        static const char *const required[] = {"kind", "contract", "min_version"};
        StringView *dest[] = {&x->kind, &dep->contract, &x->min_version};
        for (size_t k = 0; k < 3; k++) {
            snprintf(field, sizeof field, "%s.%s", label, required[k]);
            int32_t st = want_str(B, t, required[k], field, NULL, label, dest[k]);
            if (st) return st;
        }
        if (bundle) {
            x->has_bundle = true;
            x->bundle = bundle->u.str;
        }
        const ppt_value *cid = get(t, "contract_id"), *bid = get(t, "bundle_id");
        snprintf(field, sizeof field, "%s.contract_id", label);
        int32_t st;
        if (cid && (st = want_uint(B, cid, 64, field, NULL, &dep->contract_id))) return st;
        snprintf(field, sizeof field, "%s.bundle_id", label);
        if (bid && (st = want_uint(B, bid, 64, field, NULL, &dep->bundle_id))) return st;
        x->has_bundle_id = bid != NULL;
        uint32_t bare;
        dep->min_version = parse_u32(x->min_version, &bare) ? bare : 0;
        snprintf(field, sizeof field, "%s.", label);
        check_known_keys(B, t, field, dep_keys, PP_COUNTOF(dep_keys));
    }
    d->m.dependencies = d->deps;
    d->m.dependencies_len = n;
    return PP_OK;
}

/* ── the signature tables: [contracts."<name>@<major>".functions] ─────────── */

static const struct {
    const char *name, *norm;
} sig_types[] = {
    {"u8", "u8"},           {"u16", "u16"},         {"u32", "u32"},       {"u64", "u64"},
    {"i8", "i8"},           {"i16", "i16"},         {"i32", "i32"},       {"i64", "i64"},
    {"f32", "f32"},         {"f64", "f64"},         {"bool", "bool"},     {"string", "string"},
    {"bytes", "bytes"},
    {"uint8_t", "u8"},      {"uint16_t", "u16"},    {"uint32_t", "u32"},  {"uint64_t", "u64"},
    {"int8_t", "i8"},       {"int16_t", "i16"},     {"int32_t", "i32"},   {"int64_t", "i64"},
    {"float", "f32"},       {"double", "f64"},      {"_Bool", "bool"},    {"StringView", "string"},
    {"float32", "f32"},     {"float64", "f64"},     {"str", "string"},    {"bytes", "bytes"},
};
static const char KNOWN_TYPES[] =
    "u8, u16, u32, u64, i8, i16, i32, i64, f32, f64, bool, string, bytes";
static const char *const fn_keys[] = {"id", "args", "returns"};

static int32_t sig_fail(builder *B, const ppt_value *at, const char *fmt, ...) PP_PRINTF(3, 4);
static int32_t sig_fail(builder *B, const ppt_value *at, const char *fmt, ...) {
    char text[1024], pos[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    position(B->d, at->off, " (at ", pos, sizeof pos);
    return parse_fail_at(B->err, B->d->where, "%s%s%s", text, pos, *pos ? ")" : "");
}

static int32_t sig_type(builder *B, const ppt_value *v, const char *where, const char **out) {
    for (size_t i = 0; i < PP_COUNTOF(sig_types); i++) {
        if (ppi_view_eq(v->u.str, sig_types[i].name)) {
            *out = sig_types[i].norm;
            return PP_OK;
        }
    }
    return sig_fail(B, v, "%s: unknown type '%.*s' (known: %s)", where,
                    (int)(v->u.str.len > 64 ? 64 : v->u.str.len), (const char *)v->u.str.ptr,
                    KNOWN_TYPES);
}

static bool contract_key_ok(StringView key, uint32_t *major) {
    StringView name, ver;
    if (!split_at(key, &name, &ver) || name.len == 0) return false;
    for (size_t i = 0; i < name.len;)
        if (py_space(next_cp(name, &i))) return false;
    if (ver.len == 0 || ver.len > 10 || (ver.len > 1 && ver.ptr[0] == '0')) return false;
    for (size_t i = 0; i < ver.len; i++)
        if (ver.ptr[i] < '0' || ver.ptr[i] > '9') return false;
    return parse_u32(ver, major);
}

static bool identifier(StringView s) {
    if (!s.len) return false;
    for (size_t i = 0; i < s.len; i++) {
        uint8_t c = s.ptr[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
    }
    return true;
}

static int32_t build_sig_fn(builder *B, StringView contract, const ppt_entry *e, sig_fn *fn) {
    char where[512];
    snprintf(where, sizeof where, "contracts.\"%.*s\".functions.%.*s", (int)contract.len,
             (const char *)contract.ptr, (int)(e->key.len > 200 ? 200 : e->key.len),
             (const char *)e->key.ptr);
    const ppt_value *spec = e->value;
    if (!identifier(e->key))
        return sig_fail(B, spec, "%s: function names must be identifiers", where);
    if (spec->type != PPT_TABLE)
        return sig_fail(B, spec,
                        "%s: expected a table like { id = 0, args = [...], returns = \"u32\" }",
                        where);
    for (size_t i = 0; i < spec->u.tab.len; i++) {
        const ppt_entry *k = &spec->u.tab.items[i];
        if (ppi_view_eq(k->key, "id") || ppi_view_eq(k->key, "args") ||
            ppi_view_eq(k->key, "returns"))
            continue;
        char shown[96], tail[64] = "";
        const char *s = suggest(k->key, fn_keys, PP_COUNTOF(fn_keys));
        if (s) snprintf(tail, sizeof tail, "; did you mean `%s`?", s);
        return sig_fail(B, k->value, "%s: unknown key `%s` (allowed: id, args, returns)%s", where,
                        ppt_show_key(k->key, shown, sizeof shown), tail);
    }
    const ppt_value *id = get(spec, "id"), *args = get(spec, "args"), *ret = get(spec, "returns");
    if (!id || id->type != PPT_INTEGER || id->u.i.neg || id->u.i.big || id->u.i.mag > UINT32_MAX)
        return sig_fail(B, id ? id : spec,
                        "%s.id: expected the function id, an integer 0..4294967295", where);
    fn->name = e->key;
    fn->id = (uint32_t)id->u.i.mag;
    if (args) {
        bool ok = args->type == PPT_ARRAY;
        for (size_t i = 0; ok && i < args->u.arr.len; i++)
            ok = args->u.arr.items[i]->type == PPT_STRING;
        if (!ok) return sig_fail(B, args, "%s.args: expected a list of type names", where);
        fn->args = ppi_arena_alloc(B->d->A, (args->u.arr.len + 1) * sizeof *fn->args);
        if (!fn->args) return oom(B);
        for (size_t i = 0; i < args->u.arr.len; i++) {
            int32_t st = sig_type(B, args->u.arr.items[i], where, &fn->args[i]);
            if (st) return st;
        }
        fn->nargs = args->u.arr.len;
    }
    if (ret) {
        if (ret->type != PPT_STRING)
            return sig_fail(B, ret, "%s.returns: expected a type name", where);
        int32_t st = sig_type(B, ret, where, &fn->ret);
        if (st) return st;
    }
    return PP_OK;
}

/* A signature table whose contract `provides` does not list (when it lists any). */
static void check_sig_provided(builder *B, const ppt_entry *e, uint32_t major) {
    pp_manifest_doc *d = B->d;
    if (!d->m.provides_len) return;
    StringView name, ver;
    split_at(e->key, &name, &ver);
    const char *cands[64];
    size_t ncands = 0;
    for (size_t i = 0; i < d->m.provides_len; i++) {
        StringView pname, pver;
        bool versioned = split_at(d->provides[i], &pname, &pver);
        uint32_t pmajor = major;
        if (versioned && !spec_major(pver, &pmajor)) continue;
        if (sv_eq(pname, name) && pmajor == major) return;
        if (ncands < PP_COUNTOF(cands)) {
            ppi_buf c = {0};
            ppi_buf_putn(&c, pname.ptr, pname.len);
            ppi_buf_printf(&c, "@%u", pmajor);
            cands[ncands++] = arena_text(d, &c);
        }
    }
    char shown[96], tail[256] = "";
    const char *s = suggest(e->key, cands, ncands);
    if (s) snprintf(tail, sizeof tail, " (did you mean \"%s\"?)", s);
    ppi_buf subject = {0};
    ppi_buf_printf(&subject, "signature table [contracts.%s] is for a contract `provides` does "
                             "not list",
                   ppt_show_key(e->key, shown, sizeof shown));
    add_finding(B, e->key_off, &subject, tail);
}

static int32_t build_signatures(builder *B, const ppt_value *v) {
    pp_manifest_doc *d = B->d;
    if (!v) return PP_OK;
    if (v->type != PPT_TABLE)
        return sig_fail(B, v, "contracts: expected a table of \"<name>@<major>\" entries");
    d->sigs = ppi_arena_alloc(d->A, (v->u.tab.len + 1) * sizeof *d->sigs);
    if (!d->sigs) return oom(B);
    for (size_t c = 0; c < v->u.tab.len; c++) {
        const ppt_entry *e = &v->u.tab.items[c];
        int key_len = (int)(e->key.len > 200 ? 200 : e->key.len);
        const char *key = (const char *)e->key.ptr;
        uint32_t major;
        if (!contract_key_ok(e->key, &major))
            return sig_fail(B, e->value,
                            "contracts.\"%.*s\": keys must be \"<contract name>@<major>\"",
                            key_len, key);
        const ppt_value *body = e->value, *fns = NULL;
        if (body->type == PPT_TABLE) fns = get(body, "functions");
        if (body->type != PPT_TABLE || (fns && fns->type != PPT_TABLE))
            return sig_fail(B, fns ? fns : body,
                            "contracts.\"%.*s\": expected a [contracts.\"%.*s\".functions] table",
                            key_len, key, key_len, key);
        char prefix[280];
        snprintf(prefix, sizeof prefix, "contracts.\"%.*s\".", key_len, key);
        static const char *const body_keys[] = {"functions"};
        check_known_keys(B, body, prefix, body_keys, 1);
        check_sig_provided(B, e, major);
        sig_contract *sc = &d->sigs[c];
        sc->key = e->key;
        size_t n = fns ? fns->u.tab.len : 0;
        sc->fns = ppi_arena_alloc(d->A, (n + 1) * sizeof *sc->fns);
        if (!sc->fns) return oom(B);
        for (size_t i = 0; i < n; i++) {
            int32_t st = build_sig_fn(B, e->key, &fns->u.tab.items[i], &sc->fns[i]);
            if (st) return st;
            for (size_t k = 0; k < i; k++) {
                if (sc->fns[k].id != sc->fns[i].id) continue;
                return sig_fail(B, fns->u.tab.items[i].value,
                                "contracts.\"%.*s\": functions %.*s and %.*s share id %u",
                                key_len, key,
                                (int)sc->fns[k].name.len, (const char *)sc->fns[k].name.ptr,
                                (int)sc->fns[i].name.len, (const char *)sc->fns[i].name.ptr,
                                sc->fns[i].id);
            }
        }
        sc->nfns = n;
    }
    d->sigs_len = v->u.tab.len;
    return PP_OK;
}

/* The whole model, in the order the Python driver has always checked the keys. */
static int32_t build_model(builder *B) {
    pp_manifest_doc *d = B->d;
    const ppt_value *root = d->toml->root;
    const ppt_value *reinit = get(root, "needs_reinit_on_dep_reload");
    if (reinit && reinit->type != PPT_BOOL)
        return type_error(B, "needs_reinit_on_dep_reload", "a boolean", reinit, NULL);
    d->m.needs_reinit_on_dep_reload = reinit && reinit->u.b;
    int32_t st;
    if ((st = want_str(B, root, "loader", "loader", NULL, NULL, &d->m.loader))) return st;
    if ((st = want_str(B, root, "name", "name", "", NULL, &d->m.name))) return st;
    const ppt_value *id = get(root, "id");
    if (id && (st = want_uint(B, id, 64, "id", NULL, &d->m.id))) return st;
    if ((st = want_str(B, root, "version", "version", "", NULL, &d->m.version_text))) return st;
    if ((st = build_file(B, get(root, "file")))) return st;
    StringView *prov;
    size_t nprov;
    if ((st = want_str_list(B, root, "provides", &prov, &nprov))) return st;
    d->provides = prov;
    d->m.provides = prov;
    d->m.provides_len = nprov;
    if ((st = build_function_counts(B, get(root, "function_count")))) return st;
    if ((st = build_dependencies(B, get(root, "dependency")))) return st;
    if ((st = want_str_list(B, root, "bundle_dependencies", &d->bundle_deps, &d->bundle_deps_len)))
        return st;
    if ((st = build_signatures(B, get(root, "contracts")))) return st;
    check_known_keys(B, root, "", top_keys, PP_COUNTOF(top_keys));
    for (size_t i = 1; i < d->findings_len; i++) /* report in document order */
        for (size_t k = i; k > 0 && d->findings[k - 1].off > d->findings[k].off; k--) {
            finding t = d->findings[k];
            d->findings[k] = d->findings[k - 1];
            d->findings[k - 1] = t;
        }
    d->version_ok = !d->m.version_text.len || !parse_version(d->m.version_text, &d->m.version);
    return PP_OK;
}

/* ── documents ─────────────────────────────────────────────────────────────── */

/* Parse text (UTF-8 checked, BOM already removed) and build the model. */
static int32_t doc_from_text(const char *text, size_t len, StringView dir, const char *where,
                             bool generated, pp_manifest_doc **out, pp_error *err) {
    char msg[512];
    size_t off;
    bool was_oom;
    ppt_doc *t = ppt_parse(text, len, true, msg, sizeof msg, &off, &was_oom);
    if (!t) {
        if (was_oom) return ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
        char *full = malloc(2048);
        if (!full) return ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
        if (generated)
            snprintf(full, 2048, "%s", msg);
        else
            ppt_format_error(text, len, off, msg, full, 2048);
        int32_t st = parse_fail_at(err, where, "invalid TOML: %s", full);
        free(full);
        return st;
    }
    pp_manifest_doc *d = ppi_arena_alloc(&t->arena, sizeof *d);
    char *dir_copy = d ? ppi_arena_strndup(&t->arena, dir.ptr, dir.len) : NULL;
    char *where_copy = dir_copy ? ppi_arena_strndup(&t->arena, where, strlen(where)) : NULL;
    if (!where_copy) {
        ppt_doc_free(t);
        return ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
    }
    d->toml = t;
    d->A = &t->arena;
    d->generated = generated;
    d->dir.ptr = (const uint8_t *)dir_copy;
    d->dir.len = dir.len;
    d->where = where_copy;
    d->m.path = d->dir;
    builder B = {d, err};
    int32_t st = build_model(&B);
    if (st) {
        pp_manifest_doc_free(d);
        return st;
    }
    ppt_doc_drop_tree(t); /* the model holds what is needed; the nodes are garbage now */
    *out = d;
    return PP_OK;
}

int32_t pp_manifest_doc_parse(StringView text, StringView dir, uint32_t flags,
                              pp_manifest_doc **out, pp_error *err) {
    if (!out || (!text.ptr && text.len) || (!dir.ptr && dir.len))
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "pp_manifest_doc_parse: null argument");
    *out = NULL;
    bool generated = flags & PP_MANIFEST_GENERATED;
    /* a generated text's errors name the bundle directory; a manifest.toml's, the file */
    size_t cap = dir.len + sizeof "/manifest.toml";
    char *where = malloc(cap);
    if (!where) return ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
    snprintf(where, cap, generated ? "%.*s" : "%.*s/manifest.toml", (int)dir.len,
             (const char *)dir.ptr);
    int32_t st;
    size_t bad = ppi_utf8_check(text.ptr, text.len);
    if (bad < text.len)
        st = parse_fail_at(err, where, "not valid UTF-8 (byte 0x%02x at offset %zu)",
                           text.ptr[bad], bad);
    else
        st = doc_from_text((const char *)text.ptr, text.len, dir, where, generated, out, err);
    free(where);
    return st;
}

/* pathlib's normal form: no empty or "." components, no trailing slash, "." if empty. */
static char *normalize_path(StringView p) {
    char *out = malloc(p.len + 2);
    if (!out) return NULL;
    size_t o = 0;
    bool abs = p.len && p.ptr[0] == '/';
    if (abs) out[o++] = '/';
    for (size_t i = 0; i < p.len;) {
        size_t j = i;
        while (j < p.len && p.ptr[j] != '/') j++;
        size_t n = j - i;
        if (n && !(n == 1 && p.ptr[i] == '.')) {
            if (o && out[o - 1] != '/') out[o++] = '/';
            memcpy(out + o, p.ptr + i, n);
            o += n;
        }
        i = j + 1;
    }
    if (!o) out[o++] = '.';
    out[o] = '\0';
    return out;
}

/* `path`'s parent, in place ("." for a lone relative name, "/" for a root child). */
static void parent_in_place(char *path) {
    char *slash = strrchr(path, '/');
    if (!slash) strcpy(path, ".");
    else if (slash == path) path[1] = '\0';
    else *slash = '\0';
}

static char *join_manifest(const char *dir) {
    size_t n = strcmp(dir, ".") == 0 ? 0 : strlen(dir);
    char *p = malloc(n + sizeof MANIFEST_NAME + 1);
    if (!p) return NULL;
    memcpy(p, dir, n);
    if (n && dir[n - 1] != '/') p[n++] = '/';
    memcpy(p + n, MANIFEST_NAME, sizeof MANIFEST_NAME);
    return p;
}

/* The identity of a file as the document records it. */
static void file_stamp(const struct stat *st, uint64_t stamp[4]) {
    stamp[0] = (uint64_t)st->st_ino;
    stamp[1] = (uint64_t)st->st_size;
    stamp[2] = (uint64_t)st->st_mtim.tv_sec * 1000000000u + (uint64_t)st->st_mtim.tv_nsec;
    stamp[3] = (uint64_t)st->st_ctim.tv_sec * 1000000000u + (uint64_t)st->st_ctim.tv_nsec;
}

static int32_t read_fail(pp_error *err, const char *where, int errnum) {
    return parse_fail_at(err, where, "failed to read: %s (os error %d)", strerror(errnum), errnum);
}

int32_t pp_manifest_doc_read(StringView path, pp_manifest_doc **out, pp_error *err) {
    if (!out || (!path.ptr && path.len))
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "pp_manifest_doc_read: null argument");
    *out = NULL;
    char *dir = normalize_path(path);
    if (!dir) return ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
    if (path.len && memchr(path.ptr, '\0', path.len)) {
        int32_t st = ppi_fail(err, PP_ERR_BUNDLE_NOT_A_DIRECTORY, dir, NULL, NULL,
                              "bundle path is not a directory: `%s` (it contains a NUL byte)", dir);
        free(dir);
        return st;
    }
    /* The common case costs one open: <path>/manifest.toml exists.  Otherwise find
     * out what `path` is: a file inside the bundle, or not a bundle at all. */
    char *mpath = join_manifest(dir);
    int fd = mpath ? open(mpath, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK) : -1;
    int open_errno = errno;
    int32_t st = PP_OK;
    if (!mpath) {
        st = ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
        goto done;
    }
    if (fd < 0) {
        struct stat pst;
        int rc = stat(dir, &pst);
        if (rc == 0 && S_ISREG(pst.st_mode)) {
            parent_in_place(dir);
            free(mpath);
            mpath = join_manifest(dir);
            fd = mpath ? open(mpath, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK) : -1;
            open_errno = errno;
            if (!mpath) {
                st = ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
                goto done;
            }
        } else if (rc != 0 || !S_ISDIR(pst.st_mode)) {
            st = ppi_fail(err, PP_ERR_BUNDLE_NOT_A_DIRECTORY, dir, NULL, NULL,
                          "bundle path is not a directory: `%s`", dir);
            goto done;
        }
    }
    if (fd < 0) {
        if (open_errno == ENOENT)
            st = parse_fail_at(err, mpath, "failed to read: no %s in %s", MANIFEST_NAME, dir);
        else
            st = read_fail(err, mpath, open_errno);
        goto done;
    }
    struct stat mst;
    if (fstat(fd, &mst) != 0) {
        st = read_fail(err, mpath, errno);
    } else if (S_ISDIR(mst.st_mode)) {
        st = read_fail(err, mpath, EISDIR);
    } else if (!S_ISREG(mst.st_mode)) {
        st = parse_fail_at(err, mpath, "failed to read: %s is not a regular file", MANIFEST_NAME);
    } else if (mst.st_size > MANIFEST_MAX_BYTES) {
        st = parse_fail_at(err, mpath, "failed to read: %s is larger than %d MiB (%lld bytes)",
                           MANIFEST_NAME, MANIFEST_MAX_BYTES >> 20, (long long)mst.st_size);
    }
    if (st) goto done;
    {
        size_t cap = (size_t)mst.st_size + 1, len = 0;
        char stackbuf[8192];
        char *text = cap <= sizeof stackbuf ? stackbuf : malloc(cap);
        if (!text) {
            st = ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
            goto done;
        }
        for (;;) { /* the size fstat gave, or less at EOF (a file being rewritten) */
            ssize_t n = read(fd, text + len, cap - 1 - len);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                st = read_fail(err, mpath, errno);
                break;
            }
            if (n == 0 || (len += (size_t)n) == cap - 1) break;
        }
        if (!st) {
            const char *body = text;
            size_t blen = len;
            if (blen >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0) { /* a leading BOM */
                body += 3;
                blen -= 3;
            }
            size_t bad = ppi_utf8_check((const uint8_t *)body, blen);
            if (bad < blen)
                st = parse_fail_at(err, mpath,
                                   "failed to read: stream did not contain valid UTF-8 (byte "
                                   "0x%02x at offset %zu); %s must be UTF-8 text",
                                   (uint8_t)body[bad], bad + (size_t)(body - text), MANIFEST_NAME);
            else
                st = doc_from_text(body, blen, sv(dir), mpath, false, out, err);
        }
        if (text != stackbuf) free(text);
    }
    if (!st) file_stamp(&mst, (*out)->stamp);
done:
    if (fd >= 0) close(fd);
    free(mpath);
    free(dir);
    return st;
}

static void clear_warnings(pp_manifest_doc *d) {
    for (size_t i = 0; i < d->warnings_len; i++) free(d->warnings[i]);
    d->warnings_len = 0;
}

void pp_manifest_doc_free(pp_manifest_doc *doc) {
    if (!doc) return;
    clear_warnings(doc);
    pp_fileset_release(doc->m.files);
    free(doc->warnings);
    free(doc->json);
    ppt_doc_free(doc->toml); /* the document itself lives in this arena */
}

const pp_manifest *pp_manifest_doc_view(const pp_manifest_doc *doc) { return doc ? &doc->m : NULL; }

void pp_manifest_doc_set_files(pp_manifest_doc *doc, pp_fileset *files) {
    if (!doc) return;
    ppi_fileset_seal(files);
    pp_fileset_retain(files);
    pp_fileset_release(doc->m.files);
    doc->m.files = files;
}

size_t pp_manifest_doc_warning_count(const pp_manifest_doc *doc) {
    return doc ? doc->warnings_len : 0;
}

const char *pp_manifest_doc_warning(const pp_manifest_doc *doc, size_t i) {
    return doc && i < doc->warnings_len ? doc->warnings[i] : NULL;
}

/* ── the mode-dependent checks ─────────────────────────────────────────────── */

/* Where Relaxed-mode warnings go: the runtime's log (the runtime entry points, which
 * leave a shared document untouched), or the document's list (pp_manifest_doc_check). */
typedef struct warn_sink {
    pp_manifest_doc *doc;
    pp_runtime *rt;
} warn_sink;

static void add_warning(const warn_sink *sink, ppi_buf *b) {
    pp_manifest_doc *d = sink->doc;
    if (b->failed) {
        free(b->p);
        return;
    }
    if (sink->rt) {
        ppi_logf(sink->rt, LogLevel_Warn, "runtime", "%s", b->p);
    } else if (ppi_grow((void **)&d->warnings, &d->warnings_cap, d->warnings_len + 1,
                        sizeof *d->warnings)) {
        d->warnings[d->warnings_len++] = b->p;
        return;
    }
    free(b->p);
}

static int32_t check_keys(const pp_manifest_doc *d, const warn_sink *sink,
                          uint32_t compatibility, pp_error *err) {
    for (size_t i = 0; i < d->findings_len; i++) {
        const finding *f = &d->findings[i];
        char pos[64];
        position(d, f->off, " at ", pos, sizeof pos);
        if (compatibility == Compatibility_Strict)
            return parse_fail_at(err, d->where,
                                 "%s%s%s; the Strict compatibility mode refuses it (Relaxed "
                                 "warns, Yolo ignores it)",
                                 f->subject, pos, f->tail);
        ppi_buf w = {0};
        ppi_buf_printf(&w, "%s: %s%s%s; it is ignored", d->where, f->subject, pos, f->tail);
        add_warning(sink, &w);
    }
    return PP_OK;
}

static bool has_count(const pp_manifest_doc *d, StringView key) {
    for (size_t i = 0; i < d->fcounts_len; i++)
        if (sv_eq(d->fcounts[i].key, key)) return true;
    return false;
}

/* Upstream's pre-check (abi-runtime.md §8 step 3), also accepting the contract's major. */
static int32_t check_function_counts(const pp_manifest_doc *d, const warn_sink *sink,
                                     uint32_t compatibility, pp_error *err) {
    StringView vt = d->m.version_text;
    const uint8_t *dot = vt.len ? memchr(vt.ptr, '.', vt.len) : NULL;
    StringView bundle_major = dot ? (StringView){vt.ptr, (size_t)(dot - vt.ptr)} : sv("0");
    int32_t st = PP_OK;
    for (size_t i = 0; i < d->m.provides_len && !st; i++) {
        StringView entry = d->provides[i], bare, ver;
        bool versioned = split_at(entry, &bare, &ver);
        ppi_buf upstream = {0}, key = {0};
        ppi_buf_putn(&upstream, bare.ptr, bare.len);
        ppi_buf_putn(&upstream, "@", 1);
        ppi_buf_putn(&upstream, bundle_major.ptr, bundle_major.len);
        uint32_t major;
        if (versioned && spec_major(ver, &major)) {
            ppi_buf_putn(&key, bare.ptr, bare.len);
            ppi_buf_printf(&key, "@%u", major);
        } else {
            ppi_buf_putn(&key, upstream.p, upstream.len);
        }
        if (upstream.failed || key.failed) {
            st = ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
        } else if (!has_count(d, (StringView){(const uint8_t *)key.p, key.len}) &&
                   !has_count(d, (StringView){(const uint8_t *)upstream.p, upstream.len})) {
            int name_len = (int)d->m.name.len, entry_len = (int)entry.len;
            if (compatibility == Compatibility_Relaxed) {
                ppi_buf w = {0};
                ppi_buf_printf(&w, "bundle \"%.*s\" provides \"%.*s\" but has no function_count "
                                   "entry for key \"%s\"",
                               name_len, (const char *)d->m.name.ptr, entry_len,
                               (const char *)entry.ptr, key.p);
                add_warning(sink, &w);
            } else {
                char contract[256], also[512] = "";
                ppi_view_copy(contract, sizeof contract, entry);
                if (strcmp(key.p, upstream.p) != 0)
                    snprintf(also, sizeof also,
                             " (or \"%s\", the bundle-version key upstream polyplug 0.1.3 reads)",
                             upstream.p);
                st = ppi_fail(err, PP_ERR_FUNCTION_COUNT_MISMATCH, contract, "", key.p,
                              "bundle \"%.*s\" provides \"%.*s\" but manifest.toml has no "
                              "[function_count] entry for it: add \"%s\" = <number of "
                              "functions>%s",
                              name_len, (const char *)d->m.name.ptr, entry_len,
                              (const char *)entry.ptr, key.p, also);
            }
        }
        free(upstream.p);
        free(key.p);
    }
    return st;
}

static int32_t run_checks(const pp_manifest_doc *doc, const warn_sink *sink, uint32_t checks,
                          uint32_t compatibility, pp_error *err) {
    if (compatibility > Compatibility_Yolo)
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "compatibility must be 0, 1 or 2, got %u", compatibility);
    if (compatibility == Compatibility_Yolo) return PP_OK;
    int32_t st = PP_OK;
    if (checks & PP_CHECK_KEYS) st = check_keys(doc, sink, compatibility, err);
    if (!st && (checks & PP_CHECK_FUNCTION_COUNTS))
        st = check_function_counts(doc, sink, compatibility, err);
    return st;
}

int32_t pp_manifest_doc_check(pp_manifest_doc *doc, uint32_t checks, uint32_t compatibility,
                              pp_error *err) {
    if (!doc) return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL, "null manifest");
    clear_warnings(doc);
    warn_sink sink = {doc, NULL};
    return run_checks(doc, &sink, checks, compatibility, err);
}

/* ── validation ────────────────────────────────────────────────────────────── */

static int32_t check_spec(pp_manifest_doc *d, StringView spec, const char *key, pp_error *err) {
    StringView name, ver;
    bool versioned = split_at(spec, &name, &ver);
    const char *dir = (const char *)d->dir.ptr;
    int n = (int)spec.len;
    if (blank(name))
        return parse_fail_at(err, dir, "%s entry \"%.*s\" has an empty contract/bundle name", key,
                             n, (const char *)spec.ptr);
    uint32_t major;
    if (versioned && !spec_major(ver, &major))
        return parse_fail_at(err, dir,
                             "%s entry \"%.*s\" has an unparseable version spec \"%.*s\" "
                             "(expected a bare major like \"name@1\" or a full version)",
                             key, n, (const char *)spec.ptr, (int)ver.len, (const char *)ver.ptr);
    return PP_OK;
}

/*
 * Where a path ends up, the way Python's os.path.realpath(strict=False) resolves it:
 * symlinks followed, a missing component and everything after it taken literally.
 * More than MAX_SYMLINKS links is a loop.  Returns 0, or -1 with a reason in `why`.
 */
static int resolve_path(const char *path, ppi_buf *out, char *why, size_t whycap) {
    ppi_buf rest = {0}, cur = {0};
    if (path[0] != '/') {
        char *cwd = getcwd(NULL, 0);
        if (!cwd) {
            snprintf(why, whycap, "cannot read the working directory: %s", strerror(errno));
            return -1;
        }
        ppi_buf_puts(&rest, cwd);
        ppi_buf_putn(&rest, "/", 1);
        free(cwd);
    }
    ppi_buf_puts(&rest, path);
    ppi_buf_puts(&cur, "");
    size_t pos = 0;
    int links = 0, rc = 0;
    while (!rest.failed && !cur.failed && pos < rest.len) {
        size_t end = pos;
        while (end < rest.len && rest.p[end] != '/') end++;
        size_t n = end - pos;
        const char *name = rest.p + pos;
        pos = end + 1;
        if (n == 0 || (n == 1 && name[0] == '.')) continue;
        if (n == 2 && name[0] == '.' && name[1] == '.') {
            char *slash = strrchr(cur.p, '/');
            cur.len = slash ? (size_t)(slash - cur.p) : 0;
            cur.p[cur.len] = '\0';
            continue;
        }
        size_t before = cur.len;
        ppi_buf_putn(&cur, "/", 1);
        ppi_buf_putn(&cur, name, n);
        if (cur.failed) break;
        struct stat st;
        if (lstat(cur.p, &st) != 0 || !S_ISLNK(st.st_mode)) continue;
        if (++links > MAX_SYMLINKS) {
            snprintf(why, whycap, "Symlink loop at `%s` (more than %d symbolic links)", cur.p,
                     MAX_SYMLINKS);
            rc = -1;
            break;
        }
        char target[4096];
        ssize_t tl = readlink(cur.p, target, sizeof target - 1);
        if (tl < 0) continue; /* changed under us: take it as it is */
        target[tl] = '\0';
        cur.len = target[0] == '/' ? 0 : before; /* the link replaces its own component */
        cur.p[cur.len] = '\0';
        ppi_buf spliced = {0};
        ppi_buf_putn(&spliced, target, (size_t)tl);
        ppi_buf_putn(&spliced, "/", 1);
        if (pos < rest.len) ppi_buf_putn(&spliced, rest.p + pos, rest.len - pos);
        free(rest.p);
        rest = spliced;
        pos = 0;
    }
    if (!rc && (rest.failed || cur.failed)) {
        snprintf(why, whycap, "out of memory");
        rc = -1;
    }
    free(rest.p);
    if (rc) {
        free(cur.p);
        return rc;
    }
    if (!cur.len) ppi_buf_putn(&cur, "/", 1);
    *out = cur;
    return out->failed ? -1 : 0;
}

int32_t pp_manifest_doc_check_entry(const pp_manifest_doc *doc, pp_error *err) {
    if (!doc) return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL, "null manifest");
    return ppi_check_entry_path((const char *)doc->dir.ptr, doc->m.file, doc->m.name, err);
}

int32_t ppi_check_entry_path(const char *dir, StringView file, StringView bundle, pp_error *err) {
    char name[256], shown[1024];
    ppi_view_copy(name, sizeof name, bundle);
    ppi_view_copy(shown, sizeof shown, file);
    if (file.len && memchr(file.ptr, '\0', file.len)) {
        ppi_buf q = {0};
        ppi_buf_json_str(&q, file);
        int32_t st =
            parse_fail_at(err, dir, "file %s contains a NUL character", q.failed ? "?" : q.p);
        free(q.p);
        return st;
    }
    bool escapes = file.len && file.ptr[0] == '/';
    long depth = 0;
    for (size_t i = 0; i < file.len && !escapes;) {
        size_t j = i;
        while (j < file.len && file.ptr[j] != '/') j++;
        size_t n = j - i;
        if (n == 2 && file.ptr[i] == '.' && file.ptr[i + 1] == '.')
            escapes = --depth < 0;
        else if (n && !(n == 1 && file.ptr[i] == '.'))
            depth++;
        i = j + 1;
    }
    /* Fast path: no component of the entry path is a symlink, so (with no `..`
     * above the top) it is inside.  Otherwise resolve both ends and compare. */
    bool linked = false;
    ppi_buf p = {0};
    ppi_buf_puts(&p, dir);
    for (size_t i = 0; i < file.len && !escapes && !linked && !p.failed;) {
        size_t j = i;
        while (j < file.len && file.ptr[j] != '/') j++;
        size_t n = j - i;
        bool dots = n == 2 && file.ptr[i] == '.' && file.ptr[i + 1] == '.';
        if (n && !(n == 1 && file.ptr[i] == '.') && !dots) {
            ppi_buf_putn(&p, "/", 1);
            ppi_buf_putn(&p, file.ptr + i, n);
            struct stat st;
            if (p.failed) break;
            if (lstat(p.p, &st) != 0) break; /* missing: the rest is taken literally */
            linked = S_ISLNK(st.st_mode);
        } else if (dots) {
            ppi_buf_putn(&p, "/..", 3);
        }
        i = j + 1;
    }
    int32_t st = PP_OK;
    if (p.failed) {
        st = ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
    } else if (linked && !escapes) {
        ppi_buf root = {0}, target = {0};
        char why[512];
        ppi_buf full = {0};
        ppi_buf_puts(&full, dir);
        ppi_buf_putn(&full, "/", 1);
        ppi_buf_putn(&full, file.ptr, file.len);
        if (full.failed || resolve_path(dir, &root, why, sizeof why) ||
            resolve_path(full.p, &target, why, sizeof why)) {
            st = full.failed ? ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory")
                             : parse_fail_at(err, dir, "file `%s` cannot be resolved: %s",
                                             shown, why);
        } else {
            size_t rl = root.len;
            while (rl > 1 && root.p[rl - 1] == '/') rl--;
            bool inside = strcmp(target.p, root.p) == 0 ||
                          (strncmp(target.p, root.p, rl) == 0 &&
                           (rl == 1 || target.p[rl] == '/'));
            escapes = !inside;
        }
        free(full.p);
        free(root.p);
        free(target.p);
    }
    free(p.p);
    if (!st && escapes)
        st = ppi_fail(err, PP_ERR_PATH_ESCAPE, name, NULL, shown,
                      "bundle `%s` artifact `%s` resolves outside the bundle directory (path "
                      "traversal or symlink escape)",
                      name, shown);
    return st;
}

int32_t pp_manifest_doc_validate(pp_manifest_doc *doc, pp_error *err) {
    if (!doc) return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL, "null manifest");
    pp_manifest_doc *d = doc;
    if (atomic_load(&d->validated)) return pp_manifest_doc_check_entry(d, err);
    const char *dir = (const char *)d->dir.ptr;
    char name[256];
    ppi_view_copy(name, sizeof name, d->m.name);
    if (!d->m.loader.len) return parse_fail_at(err, dir, "loader field is required but was empty");
    if (!d->m.name.len) return parse_fail_at(err, dir, "name field is required but was empty");
    if (blank(d->m.file))
        return ppi_fail(err, PP_ERR_MANIFEST_MISSING_FILE, name, NULL, NULL,
                        "bundle \"%s\" manifest.toml has an empty or missing `file` field", name);
    if (d->m.id == 0) return parse_fail_at(err, dir, "id field is required but was 0 or missing");
    uint64_t expected = pp_fnv1a64(d->m.name.ptr, d->m.name.len);
    if (d->m.id != expected) {
        char exp[24], found[24];
        snprintf(exp, sizeof exp, "%#llx", (unsigned long long)expected);
        snprintf(found, sizeof found, "%#llx", (unsigned long long)d->m.id);
        return ppi_fail(err, PP_ERR_BUNDLE_TAMPERED, name, found, exp,
                        "bundle \"%s\" tampered with bundle_id: expected=%s, found=%s (id must "
                        "equal bundle_id(\"%s\") = %llu)",
                        name, exp, found, name, (unsigned long long)expected);
    }
    int32_t st;
    for (size_t i = 0; i < d->m.provides_len; i++)
        if ((st = check_spec(d, d->provides[i], "provides", err))) return st;
    for (size_t i = 0; i < d->bundle_deps_len; i++)
        if ((st = check_spec(d, d->bundle_deps[i], "bundle_dependencies", err))) return st;
    for (size_t i = 0; i < d->m.dependencies_len; i++) {
        const pp_dependency *dep = &d->deps[i];
        StringView bare, ver;
        split_at(dep->contract, &bare, &ver);
        Version v = {0, 0, 0};
        uint32_t major = parse_version(d->dep_extra[i].min_version, &v) ? 0 : v.major;
        bool host = ppi_view_eq(d->dep_extra[i].kind, "host_contract");
        uint64_t canonical = contract_id_of(bare, major, host);
        if (dep->contract_id && dep->contract_id != canonical)
            return parse_fail_at(err, dir,
                                 "dependency \"%.*s\" declares contract_id %llu but the canonical "
                                 "id for contract \"%.*s\" at major %u is %llu",
                                 (int)dep->contract.len, (const char *)dep->contract.ptr,
                                 (unsigned long long)dep->contract_id, (int)bare.len,
                                 (const char *)bare.ptr, major, (unsigned long long)canonical);
    }
    if (!d->version_ok) {
        Version v;
        return parse_fail_at(err, dir, "invalid version '%.*s': %s", (int)d->m.version_text.len,
                             (const char *)d->m.version_text.ptr,
                             parse_version(d->m.version_text, &v));
    }
    if ((st = pp_manifest_doc_check_entry(d, err))) return st;
    atomic_store(&d->validated, true);
    return PP_OK;
}

/* ── JSON for the Python driver ────────────────────────────────────────────── */

static void json_str_list(ppi_buf *b, const StringView *items, size_t n) {
    ppi_buf_putn(b, "[", 1);
    for (size_t i = 0; i < n; i++) {
        if (i) ppi_buf_putn(b, ",", 1);
        ppi_buf_json_str(b, items[i]);
    }
    ppi_buf_putn(b, "]", 1);
}

const char *pp_manifest_doc_json(pp_manifest_doc *doc, size_t *len) {
    if (!doc) return NULL;
    pp_manifest_doc *d = doc;
    if (!d->json) {
        ppi_buf b = {0};
        const pp_manifest *m = &d->m;
        ppi_buf_puts(&b, "{\"id\":");
        ppi_buf_u64(&b, m->id);
        const struct {
            const char *key;
            StringView value;
        } texts[] = {{"name", m->name},
                     {"loader", m->loader},
                     {"file", m->file},
                     {"path", d->dir},
                     {"version", m->version_text}};
        for (size_t i = 0; i < PP_COUNTOF(texts); i++) {
            ppi_buf_printf(&b, ",\"%s\":", texts[i].key);
            ppi_buf_json_str(&b, texts[i].value);
        }
        ppi_buf_puts(&b, ",\"provides\":");
        json_str_list(&b, d->provides, m->provides_len);
        ppi_buf_puts(&b, ",\"function_count\":{");
        for (size_t i = 0; i < d->fcounts_len; i++) {
            if (i) ppi_buf_putn(&b, ",", 1);
            ppi_buf_json_str(&b, d->fcounts[i].key);
            ppi_buf_putn(&b, ":", 1);
            ppi_buf_u64(&b, d->fcounts[i].count);
        }
        ppi_buf_puts(&b, "},\"dependencies\":[");
        for (size_t i = 0; i < m->dependencies_len; i++) {
            const dep_extra *x = &d->dep_extra[i];
            const StringView strs[] = {x->kind, d->deps[i].contract, x->min_version};
            ppi_buf_puts(&b, i ? ",[" : "[");
            for (size_t k = 0; k < PP_COUNTOF(strs); k++) {
                ppi_buf_json_str(&b, strs[k]);
                ppi_buf_putn(&b, ",", 1);
            }
            if (x->has_bundle)
                ppi_buf_json_str(&b, x->bundle);
            else
                ppi_buf_puts(&b, "null");
            ppi_buf_putn(&b, ",", 1);
            ppi_buf_u64(&b, d->deps[i].contract_id);
            ppi_buf_putn(&b, ",", 1);
            if (x->has_bundle_id)
                ppi_buf_u64(&b, d->deps[i].bundle_id);
            else
                ppi_buf_puts(&b, "null");
            ppi_buf_putn(&b, "]", 1);
        }
        ppi_buf_printf(&b, "],\"needs_reinit_on_dep_reload\":%s,\"bundle_dependencies\":",
                       m->needs_reinit_on_dep_reload ? "true" : "false");
        json_str_list(&b, d->bundle_deps, d->bundle_deps_len);
        ppi_buf_puts(&b, ",\"signatures\":{");
        for (size_t c = 0; c < d->sigs_len; c++) {
            const sig_contract *sc = &d->sigs[c];
            if (c) ppi_buf_putn(&b, ",", 1);
            ppi_buf_json_str(&b, sc->key);
            ppi_buf_puts(&b, ":[");
            for (size_t i = 0; i < sc->nfns; i++) {
                const sig_fn *fn = &sc->fns[i];
                ppi_buf_puts(&b, i ? ",[" : "[");
                ppi_buf_json_str(&b, fn->name);
                ppi_buf_putn(&b, ",", 1);
                ppi_buf_u64(&b, fn->id);
                ppi_buf_puts(&b, ",[");
                for (size_t k = 0; k < fn->nargs; k++) {
                    ppi_buf_puts(&b, k ? ",\"" : "\"");
                    ppi_buf_puts(&b, fn->args[k]);
                    ppi_buf_putn(&b, "\"", 1);
                }
                ppi_buf_puts(&b, fn->ret ? "],\"" : "],null]");
                if (fn->ret) {
                    ppi_buf_puts(&b, fn->ret);
                    ppi_buf_puts(&b, "\"]");
                }
            }
            ppi_buf_putn(&b, "]", 1);
        }
        ppi_buf_puts(&b, "}}");
        if (b.failed) {
            free(b.p);
            return NULL;
        }
        d->json = b.p;
        d->json_len = b.len;
    }
    if (len) *len = d->json_len;
    return d->json;
}

bool pp_manifest_doc_is_current(const pp_manifest_doc *doc) {
    struct stat st;
    uint64_t now[4];
    if (!doc || doc->generated || stat(doc->where, &st) != 0) return false;
    file_stamp(&st, now);
    return memcmp(now, doc->stamp, sizeof now) == 0;
}

/* ── the runtime side: checks with the runtime's mode, load and reload by path ─ */

/* Every host contract the manifest requires ([[dependency]] kind = "host_contract") is
 * provided, at the version it asks for (its min_version: "1.2", or a bare major). */
static int32_t host_contracts_provided(pp_runtime *rt, const pp_manifest_doc *d,
                                       pp_error *err) {
    for (size_t i = 0; i < d->m.dependencies_len; i++) {
        if (!ppi_view_eq(d->dep_extra[i].kind, "host_contract")) continue;
        StringView bare, ver;
        split_at(d->deps[i].contract, &bare, &ver);
        Version want = {0, 0, 0};
        if (parse_version(d->dep_extra[i].min_version, &want) != NULL) {
            want = (Version){0, 0, 0}; /* a bare major ("1") counts as "1.0" */
            if (!parse_u32(d->dep_extra[i].min_version, &want.major)) want.major = 0;
        }
        const HostContractInterface *iface =
            pp_runtime_find_host_contract(rt, contract_id_of(bare, want.major, true));
        const Version *have = iface ? &iface->contract_version : NULL;
        if (have && (have->minor >= want.minor)) continue;
        char name[256], spec[320];
        ppi_view_copy(name, sizeof name, d->m.name);
        snprintf(spec, sizeof spec, "%.*s@%u", (int)(bare.len > 255 ? 255 : bare.len),
                 (const char *)bare.ptr, want.major);
        if (!have)
            return ppi_fail(err, PP_ERR_HOST_CONTRACT_MISSING, name, spec, NULL,
                            "bundle `%s` requires host contract `%s` ([[dependency]] kind = "
                            "\"host_contract\"), which this runtime does not provide; provide it "
                            "before loading the bundle",
                            name, spec);
        return ppi_fail(err, PP_ERR_HOST_CONTRACT_MISSING, name, spec, NULL,
                        "bundle `%s` requires host contract `%s` at version %u.%u or later; this "
                        "runtime provides %u.%u.%u",
                        name, spec, want.major, want.minor, have->major, have->minor,
                        have->patch);
    }
    return PP_OK;
}

int32_t pp_runtime_check_manifest(pp_runtime *rt, pp_manifest_doc *doc, pp_error *err) {
    if (!rt || !doc)
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "pp_runtime_check_manifest: runtime and manifest are required");
    warn_sink sink = {doc, rt};
    int32_t st = run_checks(doc, &sink, PP_CHECK_KEYS, rt->compatibility, err);
    if (!st) st = pp_manifest_doc_validate(doc, err);
    if (!st) st = host_contracts_provided(rt, doc, err);
    if (st && err) ppi_set_last_error(rt, err->message);
    return st;
}

int32_t pp_runtime_load_manifest(pp_runtime *rt, pp_manifest_doc *doc, const pp_source *src,
                                 pp_error *err) {
    if (!rt || !doc)
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "pp_runtime_load_manifest: runtime and manifest are required");
    warn_sink sink = {doc, rt};
    int32_t st = run_checks(doc, &sink, PP_CHECK_FUNCTION_COUNTS, rt->compatibility, err);
    if (st) {
        if (err) ppi_set_last_error(rt, err->message);
        return st;
    }
    pp_source path_src = {PP_SOURCE_PATH, doc->dir};
    return pp_runtime_load(rt, &doc->m, src ? src : &path_src, err);
}

/* What a C host can do about signature_policy: it has no verifier. */
static int32_t signature_policy(pp_runtime *rt, const pp_manifest_doc *d, pp_error *err) {
    char name[256];
    ppi_view_copy(name, sizeof name, d->m.name);
    const char *why = "bundle signatures are verified by the Python driver (polyplug.signing) and "
                      "this runtime has no verifier";
    if (rt->signature_policy == SignaturePolicy_Required)
        return ppi_fail(err, PP_ERR_SIGNATURE_UNVERIFIED, name, NULL, why,
                        "bundle `%s`: signature_policy is Required, but %s: verify bundle.sig "
                        "before loading, or use SignaturePolicy_Off",
                        name, why);
    if (rt->signature_policy == SignaturePolicy_WarnOnly)
        ppi_logf(rt, LogLevel_Warn, "runtime",
                 "bundle `%s`: signature not checked (WarnOnly — continuing): %s", name, why);
    return PP_OK;
}

int32_t pp_runtime_load_path(pp_runtime *rt, StringView path, pp_error *err) {
    if (!rt)
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "pp_runtime_load_path: null runtime");
    pp_manifest_doc *doc = NULL;
    int32_t st = pp_manifest_doc_read(path, &doc, err);
    if (st) {
        if (err) ppi_set_last_error(rt, err->message);
        return st;
    }
    st = pp_runtime_check_manifest(rt, doc, err);
    if (!st && (st = signature_policy(rt, doc, err)) && err) ppi_set_last_error(rt, err->message);
    if (!st) st = pp_runtime_load_manifest(rt, doc, NULL, err);
    pp_manifest_doc_free(doc);
    return st;
}

int32_t pp_runtime_reload_path(pp_runtime *rt, StringView path, pp_error *err) {
    if (!rt)
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "pp_runtime_reload_path: null runtime");
    if (!rt->hot_reload_enabled)
        return ppi_fail(err, PP_ERR_HOT_RELOAD_DISABLED, NULL, NULL, NULL,
                        "hot-reload is disabled in runtime config");
    pp_error local;
    pp_error_clear(&local);
    pp_error *e = err ? err : &local;
    pp_manifest_doc *doc = NULL;
    int32_t st = pp_manifest_doc_read(path, &doc, e);
    if (!st) st = pp_runtime_check_manifest(rt, doc, e);
    if (!st) st = signature_policy(rt, doc, e);
    if (st) {
        /* name the bundle in the Failed phase when the manifest at least parsed */
        pp_runtime_notify_reload_failed(rt, doc ? doc->m.id : 0, doc ? doc->m.name : sv(""),
                                        sv(e->message));
        ppi_set_last_error(rt, e->message);
    } else {
        st = pp_runtime_reload(rt, &doc->m, e);
    }
    pp_manifest_doc_free(doc);
    return st;
}

/* ── the TOML parser on its own ────────────────────────────────────────────── */

int32_t pp_toml_to_json(StringView text, char **json, size_t *len, pp_error *err) {
    if (!json || (!text.ptr && text.len))
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "pp_toml_to_json: null argument");
    *json = NULL;
    char msg[512];
    size_t off;
    bool was_oom;
    ppt_doc *t = ppt_parse((const char *)text.ptr, text.len, false, msg, sizeof msg, &off,
                           &was_oom);
    if (!t) {
        if (was_oom) return ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
        char full[2048];
        size_t bad = ppi_utf8_check(text.ptr, text.len);
        if (bad < text.len)
            snprintf(full, sizeof full, "%s", msg);
        else
            ppt_format_error((const char *)text.ptr, text.len, off, msg, full, sizeof full);
        return ppi_fail(err, PP_ERR_MANIFEST, "", NULL, full, "invalid TOML: %s", full);
    }
    *json = ppt_to_json(t, len);
    ppt_doc_free(t);
    return *json ? PP_OK
                 : ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL,
                            "out of memory, or an integer literal longer than %d characters",
                            PPT_MAX_BIG_DIGITS);
}

void pp_toml_json_free(char *json) { free(json); }
