/*
 * pp_toml.c — a small, strict TOML 1.0 parser for manifest.toml (see pp_toml.h).
 *
 * Shape: one pass over the source, recursive only for arrays and inline tables,
 * whose depth is bounded by PPT_MAX_DEPTH (so is the depth of tables made by
 * headers and dotted keys).  Errors carry a byte offset; the caller turns it into a
 * line, a column and a quoted snippet.
 *
 * The table rules are TOML's, in tomllib's reading:
 *   - a key is defined once; `[t]` is declared once;
 *   - F_EXPLICIT marks a table declared by a header, or one that dotted keys of an
 *     earlier section created or extended (those are F_PENDING until the next
 *     header): neither a header nor a dotted key may open it again;
 *   - F_FROZEN marks inline tables and array values: nothing may be added to them
 *     or below them;
 *   - F_AOT marks an array made by `[[...]]`; headers walk into its last element.
 */
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pp_toml.h"

enum { F_EXPLICIT = 1, F_FROZEN = 2, F_AOT = 4, F_PENDING = 8 };

/* ── arena ─────────────────────────────────────────────────────────────────── */

struct ppi_arena_block {
    ppi_arena_block *next;
    size_t cap;
    _Alignas(16) unsigned char data[];
};

enum { ARENA_FIRST_BLOCK = 8192, ARENA_MAX_BLOCK = 1 << 20 };

void *ppi_arena_alloc(ppi_arena *a, size_t n) {
    if (n > SIZE_MAX / 2) return NULL;
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->cap - a->used < n) {
        size_t cap = a->head ? a->head->cap * 2 : a->first ? a->first : ARENA_FIRST_BLOCK;
        if (cap > ARENA_MAX_BLOCK) cap = ARENA_MAX_BLOCK;
        if (cap < n) cap = n;
        ppi_arena_block *b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = a->head;
        b->cap = cap;
        a->head = b;
        a->used = 0;
        a->cap = cap;
    }
    void *p = a->head->data + a->used;
    a->used += n;
    memset(p, 0, n);
    return p;
}

char *ppi_arena_strndup(ppi_arena *a, const void *s, size_t len) {
    char *p = ppi_arena_alloc(a, len + 1);
    if (p && len) memcpy(p, s, len);
    return p;
}

void ppi_arena_free(ppi_arena *a) {
    ppi_arena_block *b = a->head;
    while (b) {
        ppi_arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->used = a->cap = 0;
}

/* Make room for `need` elements in an arena-backed growable array. */
static bool arena_grow(ppi_arena *a, void **items, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t ncap = *cap ? *cap * 2 : 4;
    while (ncap < need) ncap *= 2;
    if (ncap > SIZE_MAX / elem) return false;
    void *p = ppi_arena_alloc(a, ncap * elem);
    if (!p) return false;
    if (*cap) memcpy(p, *items, *cap * elem);
    *items = p;
    *cap = ncap;
    return true;
}

/* ── text buffers ──────────────────────────────────────────────────────────── */

static bool buf_reserve(ppi_buf *b, size_t extra) {
    if (b->failed) return false;
    if (b->len + extra + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void ppi_buf_putn(ppi_buf *b, const void *s, size_t n) {
    if (!buf_reserve(b, n)) return;
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void ppi_buf_puts(ppi_buf *b, const char *s) { ppi_buf_putn(b, s, strlen(s)); }

void ppi_buf_printf(ppi_buf *b, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n >= 0 && buf_reserve(b, (size_t)n)) {
        vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    } else {
        b->failed = true;
    }
    va_end(ap2);
}

void ppi_buf_u64(ppi_buf *b, uint64_t v) {
    char digits[20];
    size_t n = 0;
    do {
        digits[sizeof digits - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    ppi_buf_putn(b, digits + sizeof digits - n, n);
}

void ppi_buf_json_str(ppi_buf *b, StringView s) {
    static const char hex[] = "0123456789abcdef";
    ppi_buf_putn(b, "\"", 1);
    size_t run = 0; /* bytes copied verbatim, flushed in one piece */
    for (size_t i = 0; i < s.len; i++) {
        uint8_t c = s.ptr[i];
        const char *esc = NULL;
        char u[7];
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c == '\b') esc = "\\b";
        else if (c == '\f') esc = "\\f";
        else if (c < 0x20) {
            memcpy(u, "\\u00", 4);
            u[4] = hex[c >> 4];
            u[5] = hex[c & 15];
            u[6] = '\0';
            esc = u;
        }
        if (!esc) {
            run++;
            continue;
        }
        ppi_buf_putn(b, s.ptr + i - run, run);
        run = 0;
        ppi_buf_puts(b, esc);
    }
    ppi_buf_putn(b, s.ptr + s.len - run, run);
    ppi_buf_putn(b, "\"", 1);
}

/* ── positions and error text ──────────────────────────────────────────────── */

void ppt_position(const char *src, size_t len, size_t off, size_t *line, size_t *col) {
    if (off > len) off = len;
    size_t ln = 1, start = 0;
    for (size_t i = 0; i < off; i++) {
        if (src[i] == '\n') {
            ln++;
            start = i + 1;
        }
    }
    size_t c = 1;
    for (size_t i = start; i < off; i++)
        if (((uint8_t)src[i] & 0xC0) != 0x80) c++;
    *line = ln;
    *col = c;
}

enum { SNIPPET_WIDTH = 100 };

void ppt_format_error(const char *src, size_t len, size_t off, const char *msg, char *out,
                      size_t cap) {
    if (off >= len) {
        snprintf(out, cap, "%s (at end of document)", msg);
        return;
    }
    size_t line, col;
    ppt_position(src, len, off, &line, &col);
    size_t start = off;
    while (start > 0 && src[start - 1] != '\n') start--;
    /* the window: up to SNIPPET_WIDTH characters starting half a width before col */
    size_t skip = col - 1 > SNIPPET_WIDTH / 2 ? col - 1 - SNIPPET_WIDTH / 2 : 0;
    size_t p = start, chars = 0;
    while (chars < skip) {
        p++;
        while (p < len && ((uint8_t)src[p] & 0xC0) == 0x80) p++;
        chars++;
    }
    ppi_buf b = {0};
    ppi_buf_printf(&b, "%s (at line %zu, column %zu)\n%zu | ", msg, line, col, line);
    for (size_t n = 0; n < SNIPPET_WIDTH && p < len && src[p] != '\n'; n++) {
        size_t q = p + 1;
        while (q < len && ((uint8_t)src[q] & 0xC0) == 0x80) q++;
        uint8_t c = (uint8_t)src[p];
        if (c < 0x20 || c == 0x7f)
            ppi_buf_putn(&b, "?", 1);
        else
            ppi_buf_putn(&b, src + p, q - p);
        p = q;
    }
    char gutter[24];
    int g = snprintf(gutter, sizeof gutter, "%zu", line);
    ppi_buf_putn(&b, "\n", 1);
    for (int i = 0; i < g; i++) ppi_buf_putn(&b, " ", 1);
    ppi_buf_puts(&b, " | ");
    for (size_t i = skip; i + 1 < col; i++) ppi_buf_putn(&b, " ", 1);
    ppi_buf_putn(&b, "^", 1);
    if (b.failed)
        snprintf(out, cap, "%s (at line %zu, column %zu)", msg, line, col);
    else
        ppi_strlcpy(out, cap, b.p);
    free(b.p);
}

/* ── the parser ────────────────────────────────────────────────────────────── */

typedef struct map_slot {
    const ppt_value *table;
    uint32_t hash;
    uint32_t idx; /* entry index in the table; UINT32_MAX = empty */
} map_slot;

typedef struct parser {
    const char *s;
    size_t n, p;
    ppi_arena *A; /* the document's: strings */
    ppi_arena *T; /* the tree's: nodes and their arrays */
    ppt_value *root, *cur;
    map_slot *slots; /* (table, key) -> entry, for every table of the document */
    size_t slots_cap, slots_len;
    ppt_value **pending; /* tables dotted keys touched in this section */
    size_t pending_len, pending_cap;
    char *msg;
    size_t msgcap, err_off;
    bool failed, oom;
} parser;

static bool fail_at(parser *P, size_t off, const char *fmt, ...) PP_PRINTF(3, 4);
static bool fail_at(parser *P, size_t off, const char *fmt, ...) {
    if (!P->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(P->msg, P->msgcap, fmt, ap);
        va_end(ap);
        P->err_off = off;
        P->failed = true;
    }
    return false;
}

static bool fail_oom(parser *P) {
    P->oom = true;
    return fail_at(P, P->p, "out of memory");
}

static const char *type_name(const ppt_value *v) {
    switch (v->type) {
    case PPT_STRING: return "a string";
    case PPT_INTEGER: return "an integer";
    case PPT_FLOAT: return "a float";
    case PPT_BOOL: return "a boolean";
    case PPT_ARRAY: return v->flags & F_AOT ? "an array of tables" : "an array";
    default: return v->flags & F_FROZEN ? "an inline table" : "a table";
    }
}

const char *ppt_show_key(StringView key, char *buf, size_t cap) {
    bool bare = key.len > 0;
    for (size_t i = 0; i < key.len && bare; i++) {
        uint8_t c = key.ptr[i];
        bare = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-';
    }
    ppi_buf b = {0};
    if (bare)
        ppi_buf_putn(&b, key.ptr, key.len);
    else
        ppi_buf_json_str(&b, key);
    if (b.failed || b.len < cap) {
        ppi_strlcpy(buf, cap, b.failed ? "?" : b.p);
    } else { /* cap > 4: shorten on a character boundary and mark it */
        ppi_strlcpy(buf, cap - 3, b.p);
        strcat(buf, "...");
    }
    free(b.p);
    return buf;
}

static uint32_t key_hash(const ppt_value *t, StringView key) {
    uint64_t h = 0xcbf29ce484222325ULL ^ ((uint64_t)(uintptr_t)t * 0x9E3779B97F4A7C15ULL);
    for (size_t i = 0; i < key.len; i++) {
        h ^= key.ptr[i];
        h *= 0x00000100000001b3ULL;
    }
    return (uint32_t)(h ^ (h >> 32));
}

static bool key_eq(StringView a, StringView b) {
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static ppt_entry *map_find(parser *P, const ppt_value *t, StringView key) {
    if (!P->slots_cap) return NULL;
    uint32_t h = key_hash(t, key);
    size_t mask = P->slots_cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        map_slot *s = &P->slots[i];
        if (s->idx == UINT32_MAX) return NULL;
        if (s->table == t && s->hash == h && key_eq(t->u.tab.items[s->idx].key, key))
            return &t->u.tab.items[s->idx];
    }
}

static void map_put(map_slot *slots, size_t cap, const ppt_value *t, uint32_t h, uint32_t idx) {
    size_t mask = cap - 1;
    size_t i = h & mask;
    while (slots[i].idx != UINT32_MAX) i = (i + 1) & mask;
    slots[i].table = t;
    slots[i].hash = h;
    slots[i].idx = idx;
}

static bool map_grow(parser *P) {
    size_t ncap = P->slots_cap ? P->slots_cap * 2 : 64;
    map_slot *ns = malloc(ncap * sizeof *ns);
    if (!ns) return false;
    for (size_t i = 0; i < ncap; i++) ns[i].idx = UINT32_MAX;
    for (size_t i = 0; i < P->slots_cap; i++)
        if (P->slots[i].idx != UINT32_MAX)
            map_put(ns, ncap, P->slots[i].table, P->slots[i].hash, P->slots[i].idx);
    free(P->slots);
    P->slots = ns;
    P->slots_cap = ncap;
    return true;
}

static ppt_value *new_value(parser *P, uint8_t type, size_t depth, size_t off) {
    if (depth > PPT_MAX_DEPTH) {
        fail_at(P, off, "values nested too deeply (more than %d levels of tables and arrays)",
                PPT_MAX_DEPTH);
        return NULL;
    }
    ppt_value *v = ppi_arena_alloc(P->T, sizeof *v);
    if (!v) {
        fail_oom(P);
        return NULL;
    }
    v->type = type;
    v->depth = (uint16_t)depth;
    v->off = off;
    return v;
}

/* Add key -> v to table t; the caller checked the key is new. */
static bool table_add(parser *P, ppt_value *t, StringView key, size_t key_off, ppt_value *v) {
    if (t->u.tab.len >= UINT32_MAX - 1) return fail_at(P, key_off, "too many keys in one table");
    if (!arena_grow(P->T, (void **)&t->u.tab.items, &t->u.tab.cap, t->u.tab.len + 1,
                    sizeof(ppt_entry)))
        return fail_oom(P);
    if ((P->slots_len + 1) * 2 > P->slots_cap && !map_grow(P)) return fail_oom(P);
    ppt_entry *e = &t->u.tab.items[t->u.tab.len];
    e->key = key;
    e->key_off = key_off;
    e->value = v;
    map_put(P->slots, P->slots_cap, t, key_hash(t, key), (uint32_t)t->u.tab.len);
    P->slots_len++;
    t->u.tab.len++;
    return true;
}

static bool array_add(parser *P, ppt_value *a, ppt_value *v) {
    if (!arena_grow(P->T, (void **)&a->u.arr.items, &a->u.arr.cap, a->u.arr.len + 1,
                    sizeof(ppt_value *)))
        return fail_oom(P);
    a->u.arr.items[a->u.arr.len++] = v;
    return true;
}

/* ── characters ── */

static int peek(const parser *P, size_t k) {
    return P->p + k < P->n ? (uint8_t)P->s[P->p + k] : -1;
}

static bool is_ctrl(int c) { return (c >= 0 && c < 0x20) || c == 0x7f; }

static bool is_bare(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

static bool is_digit(int c) { return c >= '0' && c <= '9'; }

/* Length of the newline at p: 1 for LF, 2 for CRLF, 0 otherwise. */
static size_t newline_at(const parser *P, size_t p) {
    if (p < P->n && P->s[p] == '\n') return 1;
    if (p + 1 < P->n && P->s[p] == '\r' && P->s[p + 1] == '\n') return 2;
    return 0;
}

static void skip_ws(parser *P) {
    while (P->p < P->n && (P->s[P->p] == ' ' || P->s[P->p] == '\t')) P->p++;
}

static const char *char_name(int c, char *buf, size_t cap) {
    if (c < 0) return "the end of the document";
    if (c == '\n') return "a newline";
    if (c < 0x20 || c == 0x7f)
        snprintf(buf, cap, "control character U+%04X", (unsigned)c);
    else if (c >= 0x80)
        snprintf(buf, cap, "a non-ASCII character");
    else
        snprintf(buf, cap, "`%c`", c);
    return buf;
}

/* A comment runs to the end of the line; only tab may appear among control chars. */
static bool skip_comment(parser *P) {
    if (peek(P, 0) != '#') return true;
    const uint8_t *s = (const uint8_t *)P->s;
    size_t p = P->p + 1;
    for (; p < P->n; p++) {
        uint8_t c = s[p];
        if ((c >= 0x20 && c != 0x7f) || c == '\t') continue;
        if (newline_at(P, p)) break;
        char nb[40];
        return fail_at(P, p, "%s is not allowed in a comment", char_name(c, nb, sizeof nb));
    }
    P->p = p;
    return true;
}

/* Whitespace, newlines and comments between array items. */
static bool skip_array_space(parser *P) {
    for (;;) {
        skip_ws(P);
        size_t nl = newline_at(P, P->p);
        if (nl) {
            P->p += nl;
            continue;
        }
        if (peek(P, 0) == '#') {
            if (!skip_comment(P)) return false;
            continue;
        }
        return true;
    }
}

/* ── strings ── */

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t put_utf8(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * The body of a string from P->p up to (not including) its closing delimiter, which
 * is left at P->p.  With out == NULL it validates and reports in *plain whether the
 * body can be used as it is in the source; with out != NULL it decodes a body that
 * was validated before into out (which has room for the source span) and sets *olen.
 */
static bool string_body(parser *P, bool basic, bool multi, char *out, size_t *olen,
                        bool *plain) {
    size_t o = 0;
    size_t start = P->p;
    const char quote = basic ? '"' : '\'';
    for (;;) {
        int c = peek(P, 0);
        if (c < 0) {
            return fail_at(P, start > 0 ? start - 1 : 0, "unterminated string (it starts here)");
        }
        if (c == quote) {
            if (!multi || (peek(P, 1) == quote && peek(P, 2) == quote)) break;
        } else if (basic && c == '\\') {
            if (plain) *plain = false;
            int e = peek(P, 1);
            size_t at = P->p;
            P->p += 2;
            uint32_t cp = 0;
            int digits = 0;
            switch (e) {
            case 'b': cp = '\b'; break;
            case 't': cp = '\t'; break;
            case 'n': cp = '\n'; break;
            case 'f': cp = '\f'; break;
            case 'r': cp = '\r'; break;
            case '"': cp = '"'; break;
            case '\\': cp = '\\'; break;
            case 'u': digits = 4; break;
            case 'U': digits = 8; break;
            default:
                if (multi && (e == ' ' || e == '\t' || e == '\n' || e == '\r')) {
                    /* line-ending backslash: drop the whitespace up to the next
                     * non-blank character, across newlines */
                    P->p = at + 1;
                    skip_ws(P);
                    if (P->p >= P->n) continue; /* reported as unterminated */
                    size_t nl = newline_at(P, P->p);
                    if (!nl)
                        return fail_at(P, at, "a `\\` at the end of a line may only be followed "
                                              "by whitespace");
                    for (;;) {
                        skip_ws(P);
                        nl = newline_at(P, P->p);
                        if (!nl) break;
                        P->p += nl;
                    }
                    continue;
                }
                {
                    char shown[48] = "", nb[40];
                    if (e >= 0x20 && e < 0x7f)
                        shown[0] = (char)e;
                    else if (e >= 0)
                        snprintf(shown, sizeof shown, "<%s>", char_name(e, nb, sizeof nb));
                    return fail_at(P, at,
                                   "invalid escape `\\%s` (TOML has \\b \\t \\n \\f \\r \\\" "
                                   "\\\\ \\uXXXX and \\UXXXXXXXX)",
                                   shown);
                }
            }
            for (int k = 0; k < digits; k++) {
                int h = hexval(peek(P, 0));
                if (h < 0)
                    return fail_at(P, at, "`\\%c` needs exactly %d hexadecimal digits", e,
                                   digits);
                cp = cp * 16 + (uint32_t)h;
                P->p++;
            }
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return fail_at(P, at, "escape `\\%c%.*s` is not a Unicode scalar value", e,
                               digits, P->s + at + 2);
            if (out) o += put_utf8(out + o, cp);
            continue;
        } else if (c == '\n' || (c == '\r' && peek(P, 1) == '\n')) {
            if (!multi)
                return fail_at(P, P->p, "a string on one line cannot contain a newline (use %s "
                                        "for a multi-line string)",
                               basic ? "\"\"\"" : "'''");
            if (c == '\r') {
                if (plain) *plain = false;
                P->p++; /* CRLF reads as LF, as in tomllib */
                c = '\n';
            }
        } else if (is_ctrl(c) && c != '\t') {
            char nb[40];
            return fail_at(P, P->p, "%s is not allowed in a string (write it as an escape)",
                           char_name(c, nb, sizeof nb));
        }
        if (out) out[o++] = (char)c;
        P->p++;
    }
    if (olen) *olen = o;
    return true;
}

/* A string value or quoted key at P->p (on its opening quote). */
static bool parse_string(parser *P, bool allow_multi, StringView *outv) {
    bool basic = P->s[P->p] == '"';
    char q = basic ? '"' : '\'';
    bool multi = allow_multi && peek(P, 1) == q && peek(P, 2) == q;
    P->p += multi ? 3 : 1;
    if (multi) P->p += newline_at(P, P->p); /* a newline right after the opening is trimmed */
    size_t start = P->p;
    bool plain = true;
    if (!string_body(P, basic, multi, NULL, NULL, &plain)) return false;
    size_t end = P->p;
    P->p += multi ? 3 : 1;
    size_t extra = 0; /* up to two quotes right before the closing ones belong to it */
    while (multi && extra < 2 && peek(P, 0) == q) {
        extra++;
        P->p++;
    }
    if (plain) {
        outv->ptr = (const uint8_t *)P->s + start;
        outv->len = end - start + extra;
        return true;
    }
    char *buf = ppi_arena_alloc(P->A, end - start + extra + 1);
    if (!buf) return fail_oom(P);
    size_t after = P->p, olen = 0;
    P->p = start;
    string_body(P, basic, multi, buf, &olen, NULL);
    P->p = after;
    memset(buf + olen, q, extra);
    outv->ptr = (const uint8_t *)buf;
    outv->len = olen + extra;
    return true;
}

/* ── keys ── */

static bool parse_key_part(parser *P, StringView *key, size_t *off) {
    int c = peek(P, 0);
    *off = P->p;
    if (is_bare(c)) {
        size_t start = P->p;
        while (is_bare(peek(P, 0))) P->p++;
        key->ptr = (const uint8_t *)P->s + start;
        key->len = P->p - start;
        return true;
    }
    if (c == '"' || c == '\'') return parse_string(P, false, key);
    char nb[40];
    return fail_at(P, P->p, "expected a key (letters, digits, `_`, `-`, or a quoted string), "
                            "found %s",
                   char_name(c, nb, sizeof nb));
}

/* After a key part: is there a `.` and another part? (consumes the dot) */
static bool key_continues(parser *P) {
    skip_ws(P);
    if (peek(P, 0) != '.') return false;
    P->p++;
    skip_ws(P);
    return true;
}

static void add_pending(parser *P, ppt_value *t) {
    if (t->flags & F_PENDING) return;
    if (!ppi_grow((void **)&P->pending, &P->pending_cap, P->pending_len + 1,
                  sizeof *P->pending)) {
        fail_oom(P);
        return;
    }
    t->flags |= F_PENDING;
    P->pending[P->pending_len++] = t;
}

static void finalize_pending(parser *P) {
    for (size_t i = 0; i < P->pending_len; i++) {
        P->pending[i]->flags |= F_EXPLICIT;
        P->pending[i]->flags &= (uint8_t)~F_PENDING;
    }
    P->pending_len = 0;
}

/* One step of a dotted key in a key/value pair: into (or creating) table `key` of t. */
static ppt_value *dotted_step(parser *P, ppt_value *t, StringView key, size_t off,
                              bool in_inline) {
    char kb[80];
    ppt_entry *e = map_find(P, t, key);
    ppt_value *c;
    if (!e) {
        c = new_value(P, PPT_TABLE, (size_t)t->depth + 1, off);
        if (!c || !table_add(P, t, key, off, c)) return NULL;
    } else {
        c = e->value;
        if (c->type != PPT_TABLE) {
            fail_at(P, off, "cannot use `%s` as a table: it already holds %s",
                    ppt_show_key(key, kb, sizeof kb), type_name(c));
            return NULL;
        }
        if (c->flags & F_FROZEN) {
            fail_at(P, off, "cannot add to `%s`: an inline table is complete as written",
                    ppt_show_key(key, kb, sizeof kb));
            return NULL;
        }
        if (!in_inline && (c->flags & F_EXPLICIT)) {
            fail_at(P, off, "cannot add to table `%s` with a dotted key: it is defined "
                            "elsewhere; write the key in that table's section",
                    ppt_show_key(key, kb, sizeof kb));
            return NULL;
        }
    }
    if (!in_inline) add_pending(P, c);
    return P->failed ? NULL : c;
}

static ppt_value *parse_value(parser *P, size_t depth);

/* `key = value` into table t (the current section, or an inline table being read). */
static bool parse_keyval(parser *P, ppt_value *t, bool in_inline) {
    StringView key;
    size_t off;
    if (!parse_key_part(P, &key, &off)) return false;
    while (key_continues(P)) {
        t = dotted_step(P, t, key, off, in_inline);
        if (!t) return false;
        if (!parse_key_part(P, &key, &off)) return false;
    }
    if (peek(P, 0) != '=') {
        char nb[40];
        return fail_at(P, P->p, "expected `=` after the key, found %s",
                       char_name(peek(P, 0), nb, sizeof nb));
    }
    P->p++;
    skip_ws(P);
    if (map_find(P, t, key)) {
        char kb[80];
        return fail_at(P, off, "duplicate key `%s`", ppt_show_key(key, kb, sizeof kb));
    }
    ppt_value *v = parse_value(P, (size_t)t->depth + 1);
    if (!v) return false;
    return table_add(P, t, key, off, v);
}

/* ── numbers ── */

/* Digits of `base` with single `_` between them; returns the count of digits. */
static size_t scan_digits(parser *P, int base) {
    size_t n = 0;
    for (;;) {
        int c = peek(P, 0);
        int d = base == 16 ? hexval(c) : is_digit(c) ? c - '0' : -1;
        if (d < 0 || d >= base) {
            if (c == '_' && n > 0) {
                int c2 = peek(P, 1);
                int d2 = base == 16 ? hexval(c2) : is_digit(c2) ? c2 - '0' : -1;
                if (d2 >= 0 && d2 < base) {
                    P->p++;
                    continue;
                }
            }
            return n;
        }
        n++;
        P->p++;
    }
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void make_c_locale(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

static ppt_value *parse_number(parser *P, size_t depth) {
    size_t start = P->p;
    int c = peek(P, 0);
    ppt_value *v = new_value(P, PPT_INTEGER, depth, start);
    if (!v) return NULL;
    int base = 10;
    bool neg = false, is_float = false;
    if (c == '0' && (peek(P, 1) == 'x' || peek(P, 1) == 'o' || peek(P, 1) == 'b')) {
        int k = peek(P, 1);
        base = k == 'x' ? 16 : k == 'o' ? 8 : 2;
        P->p += 2;
        if (!scan_digits(P, base)) {
            fail_at(P, start, "`0%c` must be followed by %s digits", k,
                    base == 16 ? "hexadecimal" : base == 8 ? "octal" : "binary");
            return NULL;
        }
    } else {
        if (c == '+' || c == '-') {
            neg = c == '-';
            P->p++;
        }
        int first = peek(P, 0);
        if (first == 'i' || first == 'n') {
            if (P->p + 3 <= P->n && (memcmp(P->s + P->p, "inf", 3) == 0 ||
                                     memcmp(P->s + P->p, "nan", 3) == 0)) {
                bool nan = first == 'n';
                P->p += 3;
                v->type = PPT_FLOAT;
                v->u.f = nan ? (neg ? -NAN : NAN) : (neg ? -INFINITY : INFINITY);
                v->text.ptr = (const uint8_t *)P->s + start;
                v->text.len = P->p - start;
                return v;
            }
        }
        if (first == '0') {
            P->p++;
        } else if (!scan_digits(P, 10)) {
            char nb[40];
            fail_at(P, start, "expected a value (a string, number, boolean, array or inline "
                              "table), found %s",
                    char_name(peek(P, 0), nb, sizeof nb));
            return NULL;
        }
        if (peek(P, 0) == '.' && is_digit(peek(P, 1))) {
            P->p++;
            scan_digits(P, 10);
            is_float = true;
        }
        if ((peek(P, 0) == 'e' || peek(P, 0) == 'E')) {
            size_t save = P->p;
            P->p++;
            if (peek(P, 0) == '+' || peek(P, 0) == '-') P->p++;
            if (is_digit(peek(P, 0))) {
                scan_digits(P, 10);
                is_float = true;
            } else {
                P->p = save;
            }
        }
    }
    v->text.ptr = (const uint8_t *)P->s + start;
    v->text.len = P->p - start;
    if (is_float) {
        char tmp[128];
        char *buf = v->text.len < sizeof tmp ? tmp : malloc(v->text.len + 1);
        if (!buf) {
            fail_oom(P);
            return NULL;
        }
        size_t k = 0;
        for (size_t i = 0; i < v->text.len; i++)
            if (v->text.ptr[i] != '_') buf[k++] = (char)v->text.ptr[i];
        buf[k] = '\0';
        pthread_once(&c_locale_once, make_c_locale);
        v->type = PPT_FLOAT;
        v->u.f = c_locale ? strtod_l(buf, NULL, c_locale) : strtod(buf, NULL);
        if (buf != tmp) free(buf);
        return v;
    }
    uint64_t mag = 0;
    bool big = false;
    for (size_t i = (neg || v->text.ptr[0] == '+') ? 1 : 0, skip = base == 10 ? 0 : 2;
         i < v->text.len && !big; i++) {
        if (skip) {
            skip--;
            continue;
        }
        int ch = v->text.ptr[i];
        if (ch == '_') continue;
        uint64_t d = (uint64_t)hexval(ch);
        big = mag > (UINT64_MAX - d) / (uint64_t)base;
        mag = mag * (uint64_t)base + d;
    }
    v->u.i.big = big;
    v->u.i.mag = big ? 0 : mag;
    v->u.i.neg = neg && (big || mag != 0);
    return v;
}

/* Does a date or a time start at P->p?  (4 digits and `-`, or 2 digits and `:`) */
static bool looks_like_datetime(const parser *P) {
    int k = 0;
    while (k < 4 && is_digit(peek(P, k))) k++;
    return (k == 4 && peek(P, 4) == '-') || (k >= 2 && peek(P, 2) == ':');
}

/* ── values ── */

static ppt_value *parse_array(parser *P, size_t depth) {
    ppt_value *a = new_value(P, PPT_ARRAY, depth, P->p);
    if (!a) return NULL;
    size_t open = P->p++;
    if (!skip_array_space(P)) return NULL;
    while (peek(P, 0) != ']') {
        ppt_value *v = parse_value(P, depth + 1);
        if (!v || !array_add(P, a, v) || !skip_array_space(P)) return NULL;
        int c = peek(P, 0);
        if (c == ']') break;
        if (c != ',') {
            char nb[40];
            fail_at(P, c < 0 ? open : P->p,
                    c < 0 ? "unclosed array (it starts here)"
                          : "expected `,` or `]` after an array item, found %s",
                    char_name(c, nb, sizeof nb));
            return NULL;
        }
        P->p++;
        if (!skip_array_space(P)) return NULL;
    }
    P->p++;
    a->flags |= F_FROZEN;
    return a;
}

static ppt_value *parse_inline_table(parser *P, size_t depth) {
    ppt_value *t = new_value(P, PPT_TABLE, depth, P->p);
    if (!t) return NULL;
    P->p++;
    skip_ws(P);
    if (peek(P, 0) == '}') {
        P->p++;
        t->flags |= F_FROZEN;
        return t;
    }
    for (;;) {
        if (!parse_keyval(P, t, true)) return NULL;
        skip_ws(P);
        int c = peek(P, 0);
        if (c == '}') break;
        if (c != ',') {
            char nb[40];
            fail_at(P, P->p, "expected `,` or `}` in an inline table, found %s%s",
                    char_name(c, nb, sizeof nb),
                    c == '\n' || c == '\r' ? " (an inline table must be on one line)" : "");
            return NULL;
        }
        P->p++;
        skip_ws(P);
    }
    P->p++;
    t->flags |= F_FROZEN;
    return t;
}

static ppt_value *parse_value(parser *P, size_t depth) {
    int c = peek(P, 0);
    size_t start = P->p;
    if (c == '"' || c == '\'') {
        ppt_value *v = new_value(P, PPT_STRING, depth, start);
        if (!v || !parse_string(P, true, &v->u.str)) return NULL;
        return v;
    }
    if (c == 't' && P->p + 4 <= P->n && memcmp(P->s + P->p, "true", 4) == 0) {
        ppt_value *v = new_value(P, PPT_BOOL, depth, start);
        if (v) v->u.b = true;
        P->p += 4;
        return v;
    }
    if (c == 'f' && P->p + 5 <= P->n && memcmp(P->s + P->p, "false", 5) == 0) {
        ppt_value *v = new_value(P, PPT_BOOL, depth, start);
        P->p += 5;
        return v;
    }
    if (c == '[') return parse_array(P, depth);
    if (c == '{') return parse_inline_table(P, depth);
    if (looks_like_datetime(P)) {
        fail_at(P, start, "dates and times are not supported in manifest.toml; write the value "
                          "as a string");
        return NULL;
    }
    return parse_number(P, depth);
}

/* ── statements ── */

/* Walk into (or create) table `key` of t while reading a [header] or [[header]]. */
static ppt_value *header_step(parser *P, ppt_value *t, StringView key, size_t off) {
    char kb[80];
    ppt_entry *e = map_find(P, t, key);
    if (!e) {
        ppt_value *c = new_value(P, PPT_TABLE, (size_t)t->depth + 1, off);
        if (!c || !table_add(P, t, key, off, c)) return NULL;
        return c;
    }
    ppt_value *c = e->value;
    if (c->type == PPT_ARRAY && (c->flags & F_AOT)) return c->u.arr.items[c->u.arr.len - 1];
    if (c->type == PPT_TABLE && !(c->flags & F_FROZEN)) return c;
    fail_at(P, off, "cannot use `%s` as a table: it already holds %s",
            ppt_show_key(key, kb, sizeof kb), type_name(c));
    return NULL;
}

static bool parse_header(parser *P) {
    bool aot = peek(P, 1) == '[';
    size_t open = P->p;
    P->p += aot ? 2 : 1;
    skip_ws(P);
    finalize_pending(P);
    ppt_value *t = P->root;
    StringView key;
    size_t off;
    if (!parse_key_part(P, &key, &off)) return false;
    while (key_continues(P)) {
        t = header_step(P, t, key, off);
        if (!t || !parse_key_part(P, &key, &off)) return false;
    }
    if (aot ? !(peek(P, 0) == ']' && peek(P, 1) == ']') : peek(P, 0) != ']') {
        char nb[40];
        return fail_at(P, P->p, "expected `%s` to close the %s header, found %s",
                       aot ? "]]" : "]", aot ? "[[array of tables]]" : "[table]",
                       char_name(peek(P, 0), nb, sizeof nb));
    }
    P->p += aot ? 2 : 1;
    char kb[80];
    ppt_entry *e = map_find(P, t, key);
    ppt_value *target;
    if (aot) {
        ppt_value *arr;
        if (!e) {
            arr = new_value(P, PPT_ARRAY, (size_t)t->depth + 1, open);
            if (!arr || !table_add(P, t, key, off, arr)) return false;
            arr->flags |= F_AOT | F_EXPLICIT;
        } else if (e->value->type == PPT_ARRAY && (e->value->flags & F_AOT)) {
            arr = e->value;
        } else {
            return fail_at(P, off, "cannot make `%s` an array of tables: it already holds %s",
                           ppt_show_key(key, kb, sizeof kb), type_name(e->value));
        }
        target = new_value(P, PPT_TABLE, (size_t)arr->depth + 1, open);
        if (!target || !array_add(P, arr, target)) return false;
    } else if (!e) {
        target = new_value(P, PPT_TABLE, (size_t)t->depth + 1, open);
        if (!target || !table_add(P, t, key, off, target)) return false;
    } else {
        target = e->value;
        if (target->type != PPT_TABLE || (target->flags & (F_EXPLICIT | F_FROZEN))) {
            if (target->type == PPT_TABLE && !(target->flags & F_FROZEN))
                return fail_at(P, off, "table `%s` is defined twice",
                               ppt_show_key(key, kb, sizeof kb));
            return fail_at(P, off, "cannot declare table `%s`: it already holds %s",
                           ppt_show_key(key, kb, sizeof kb), type_name(target));
        }
    }
    target->flags |= F_EXPLICIT;
    P->cur = target;
    return true;
}

static bool parse_document(parser *P) {
    for (;;) {
        skip_ws(P);
        if (P->p >= P->n) return true;
        size_t nl = newline_at(P, P->p);
        if (nl) {
            P->p += nl;
            continue;
        }
        int c = peek(P, 0);
        if (c == '[') {
            if (!parse_header(P)) return false;
        } else if (is_bare(c) || c == '"' || c == '\'') {
            if (!parse_keyval(P, P->cur, false)) return false;
        } else if (c != '#') {
            char nb[40];
            return fail_at(P, P->p, "expected a key, a [table] header or a comment, found %s",
                           char_name(c, nb, sizeof nb));
        }
        skip_ws(P);
        if (!skip_comment(P)) return false;
        if (P->p >= P->n) return true;
        nl = newline_at(P, P->p);
        if (!nl) {
            char nb[40];
            return fail_at(P, P->p, "expected the end of the line, found %s",
                           char_name(peek(P, 0), nb, sizeof nb));
        }
        P->p += nl;
    }
}

ppt_doc *ppt_parse(const char *src, size_t len, bool utf8_checked, char *msg, size_t msgcap,
                   size_t *err_off, bool *oom) {
    *oom = false;
    *err_off = 0;
    if (msgcap) msg[0] = '\0';
    size_t bad = utf8_checked ? len : ppi_utf8_check((const uint8_t *)src, len);
    if (bad < len) {
        snprintf(msg, msgcap, "invalid UTF-8 (byte 0x%02x at offset %zu)", (uint8_t)src[bad],
                 bad);
        *err_off = bad;
        return NULL;
    }
    /* room for the source, its unescaped strings and a reader's model, in one block */
    ppi_arena arena = {0}, tree = {0};
    arena.first = len < (1 << 20) ? len + len / 2 + 1024 : 0;
    ppt_doc *doc = ppi_arena_alloc(&arena, sizeof *doc);
    char *copy = doc ? ppi_arena_strndup(&arena, src, len) : NULL;
    ppt_value *root = copy ? ppi_arena_alloc(&tree, sizeof *root) : NULL;
    if (!root) {
        ppi_arena_free(&tree);
        ppi_arena_free(&arena);
        snprintf(msg, msgcap, "out of memory");
        *oom = true;
        return NULL;
    }
    root->type = PPT_TABLE;
    parser P = {0};
    P.s = copy;
    P.n = len;
    P.A = &arena;
    P.T = &tree;
    P.root = P.cur = root;
    P.msg = msg;
    P.msgcap = msgcap;
    bool ok = parse_document(&P);
    free(P.slots);
    free(P.pending);
    if (!ok) {
        *err_off = P.err_off;
        *oom = P.oom;
        ppi_arena_free(&tree);
        ppi_arena_free(&arena);
        return NULL;
    }
    doc->arena = arena;
    doc->tree = tree;
    doc->src = copy;
    doc->len = len;
    doc->root = root;
    return doc;
}

void ppt_doc_drop_tree(ppt_doc *doc) {
    if (!doc) return;
    ppi_arena_free(&doc->tree);
    doc->root = NULL;
}

void ppt_doc_free(ppt_doc *doc) {
    if (!doc) return;
    ppi_arena_free(&doc->tree);
    ppi_arena arena = doc->arena; /* the doc lives in its own arena */
    ppi_arena_free(&arena);
}

const ppt_entry *ppt_find(const ppt_value *t, const char *key) {
    if (!t || t->type != PPT_TABLE) return NULL;
    size_t n = strlen(key);
    for (size_t i = 0; i < t->u.tab.len; i++) {
        const ppt_entry *e = &t->u.tab.items[i];
        if (e->key.len == n && memcmp(e->key.ptr, key, n) == 0) return e;
    }
    return NULL;
}

/* ── JSON ──────────────────────────────────────────────────────────────────── */

/* A `big` integer literal in decimal (no sign, no `_`); false if it is too long. */
static bool big_decimal(ppi_buf *b, StringView text) {
    if (text.len > PPT_MAX_BIG_DIGITS) return false;
    size_t i = text.len && (text.ptr[0] == '+' || text.ptr[0] == '-') ? 1 : 0;
    int base = 10;
    if (text.len > i + 1 && text.ptr[i] == '0' && text.ptr[i + 1] != '_') {
        base = text.ptr[i + 1] == 'x' ? 16 : text.ptr[i + 1] == 'o' ? 8 : 2;
        i += 2;
    }
    uint8_t digits[PPT_MAX_BIG_DIGITS * 2]; /* little-endian decimal digits */
    size_t n = 0;
    for (; i < text.len; i++) {
        if (text.ptr[i] == '_') continue;
        unsigned carry = (unsigned)hexval(text.ptr[i]);
        for (size_t k = 0; k < n; k++) {
            unsigned x = digits[k] * (unsigned)base + carry;
            digits[k] = (uint8_t)(x % 10);
            carry = x / 10;
        }
        for (; carry; carry /= 10) digits[n++] = (uint8_t)(carry % 10);
    }
    if (!n) digits[n++] = 0;
    while (n) {
        char c = (char)('0' + digits[--n]);
        ppi_buf_putn(b, &c, 1);
    }
    return true;
}

static bool json_value(ppi_buf *b, const ppt_value *v) {
    switch (v->type) {
    case PPT_STRING: ppi_buf_json_str(b, v->u.str); break;
    case PPT_INTEGER:
        if (v->u.i.neg) ppi_buf_putn(b, "-", 1);
        if (v->u.i.big) return big_decimal(b, v->text);
        ppi_buf_u64(b, v->u.i.mag);
        break;
    case PPT_FLOAT: {
        double f = v->u.f;
        if (isnan(f)) {
            ppi_buf_puts(b, "NaN");
        } else if (isinf(f)) {
            ppi_buf_puts(b, f < 0 ? "-Infinity" : "Infinity");
        } else {
            char num[40];
            snprintf(num, sizeof num, "%.17g", f);
            ppi_buf_puts(b, num);
            if (!strpbrk(num, ".e")) ppi_buf_puts(b, ".0");
        }
        break;
    }
    case PPT_BOOL: ppi_buf_puts(b, v->u.b ? "true" : "false"); break;
    case PPT_ARRAY:
        ppi_buf_putn(b, "[", 1);
        for (size_t i = 0; i < v->u.arr.len; i++) {
            if (i) ppi_buf_putn(b, ",", 1);
            if (!json_value(b, v->u.arr.items[i])) return false;
        }
        ppi_buf_putn(b, "]", 1);
        break;
    default:
        ppi_buf_putn(b, "{", 1);
        for (size_t i = 0; i < v->u.tab.len; i++) {
            if (i) ppi_buf_putn(b, ",", 1);
            ppi_buf_json_str(b, v->u.tab.items[i].key);
            ppi_buf_putn(b, ":", 1);
            if (!json_value(b, v->u.tab.items[i].value)) return false;
        }
        ppi_buf_putn(b, "}", 1);
        break;
    }
    return true;
}

char *ppt_to_json(const ppt_doc *doc, size_t *len) {
    ppi_buf b = {0};
    if (!json_value(&b, doc->root) || b.failed) {
        free(b.p);
        return NULL;
    }
    if (len) *len = b.len;
    return b.p;
}
