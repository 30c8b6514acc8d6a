/*
 * pp_toml.h — the strict TOML reader behind manifest.toml (internal, `ppt_` prefix).
 *
 * TOML 1.0 as far as a manifest can use it: comments, the four string forms with
 * their escapes, integers (decimal with `_`, hex, octal, binary), floats, booleans,
 * arrays, inline tables, bare/quoted/dotted keys, [table] and [[array of tables]].
 * Rejected by design, each with a message naming line and column:
 *   - dates and times (offset/local date-times, local dates, local times);
 *   - nesting deeper than PPT_MAX_DEPTH (tables and arrays, however written).
 * Integers whose magnitude exceeds 2^64 - 1 parse (flagged `big`; the manifest model
 * refuses them where it reads a number, and ppt_to_json writes them exactly up to
 * PPT_MAX_BIG_DIGITS characters).
 * Everything else follows tomllib's reading of the spec (the differential fuzz in
 * tests/test_toml.py holds the two together).
 *
 * A parsed document is one allocation arena: the source copy, every node, every
 * unescaped string.  ppt_doc_free releases all of it.
 */
#ifndef PP_TOML_H
#define PP_TOML_H

#include "pp_internal.h"

enum { PPT_STRING = 1, PPT_INTEGER, PPT_FLOAT, PPT_BOOL, PPT_ARRAY, PPT_TABLE };

/* Deepest allowed node: the root table is depth 0, `a.b = [ [1] ]` puts 1 at depth 4. */
enum { PPT_MAX_DEPTH = 128 };
enum { PPT_MAX_BIG_DIGITS = 1000 };

/* ── arena ─────────────────────────────────────────────────────────────────── */

typedef struct ppi_arena_block ppi_arena_block;
typedef struct ppi_arena {
    ppi_arena_block *head;
    size_t used, cap; /* within head */
    size_t first;     /* size of the first block (0: a default) */
} ppi_arena;

/* Zeroed, 16-byte aligned memory that lives until ppi_arena_free; NULL on OOM. */
void *ppi_arena_alloc(ppi_arena *a, size_t n);
/* A copy of `len` bytes with a NUL after them (NULL on OOM). */
char *ppi_arena_strndup(ppi_arena *a, const void *s, size_t len);
void ppi_arena_free(ppi_arena *a);

/* ── the value tree ────────────────────────────────────────────────────────── */

typedef struct ppt_value ppt_value;

typedef struct ppt_entry {
    StringView key;
    size_t key_off; /* byte offset of the key in the source */
    ppt_value *value;
} ppt_entry;

struct ppt_value {
    uint8_t type;
    uint8_t flags; /* parser bookkeeping (see pp_toml.c) */
    uint16_t depth;
    size_t off;      /* byte offset where the value starts in the source */
    StringView text; /* integers and floats: the literal as written */
    union {
        StringView str;
        struct {
            uint64_t mag; /* meaningless when big */
            bool neg, big;
        } i;
        double f;
        bool b;
        struct {
            ppt_value **items;
            size_t len, cap;
        } arr;
        struct {
            ppt_entry *items;
            size_t len, cap;
        } tab;
    } u;
};

/* Two arenas: `arena` holds the document itself, the source copy and unescaped
 * strings (what views into the document point at); `tree` holds the nodes, which a
 * reader that has built its own model of the document can drop. */
typedef struct ppt_doc {
    ppi_arena arena;
    ppi_arena tree;
    const char *src; /* NUL-terminated copy of the source, owned by `arena` */
    size_t len;
    ppt_value *root; /* NULL once the tree is dropped */
} ppt_doc;

/* Parse `len` bytes of UTF-8 TOML (checked here unless the caller did: `utf8_checked`).
 * On failure returns NULL, writes the reason to msg (no position) and the byte offset
 * to *err_off; *oom tells an allocation failure apart from a syntax error. */
ppt_doc *ppt_parse(const char *src, size_t len, bool utf8_checked, char *msg, size_t msgcap,
                   size_t *err_off, bool *oom);
void ppt_doc_free(ppt_doc *doc);
/* Free the value tree; strings taken from it stay valid until ppt_doc_free. */
void ppt_doc_drop_tree(ppt_doc *doc);

/* Look up `key` in table `t` (NULL if absent or `t` is not a table). */
const ppt_entry *ppt_find(const ppt_value *t, const char *key);

/* `key` for messages: as written when it is a bare key, else JSON-quoted; shortened
 * (with "...") to fit `cap` (at least 8). */
const char *ppt_show_key(StringView key, char *buf, size_t cap);

/* 1-based line and column (in characters) of byte offset `off`. */
void ppt_position(const char *src, size_t len, size_t off, size_t *line, size_t *col);
/* "<msg> (at line L, column C)" followed by the offending line and a caret under the
 * column; control characters in the quoted line show as '?'.  "end of document" when
 * `off` is past the end. */
void ppt_format_error(const char *src, size_t len, size_t off, const char *msg, char *out,
                      size_t cap);

/* ── small text helpers shared with pp_manifest.c ─────────────────────────── */

/* A growable NUL-terminated byte buffer; `failed` sticks after an allocation failure. */
typedef struct ppi_buf {
    char *p;
    size_t len, cap;
    bool failed;
} ppi_buf;

void ppi_buf_putn(ppi_buf *b, const void *s, size_t n);
void ppi_buf_puts(ppi_buf *b, const char *s);
void ppi_buf_printf(ppi_buf *b, const char *fmt, ...) PP_PRINTF(2, 3);
void ppi_buf_u64(ppi_buf *b, uint64_t v);
/* `s` as a JSON string literal (escaping quotes, backslashes and control characters;
 * other bytes are copied as they are, like Python's json.dumps(ensure_ascii=False)). */
void ppi_buf_json_str(ppi_buf *b, StringView s);

/* The whole document as JSON (tables as objects in document order, integers as
 * numbers, floats with a '.' or exponent, nan/inf as NaN/Infinity).  Malloc'd; NULL on
 * OOM or for an integer literal longer than PPT_MAX_BIG_DIGITS. */
char *ppt_to_json(const ppt_doc *doc, size_t *len);

#endif /* PP_TOML_H */
