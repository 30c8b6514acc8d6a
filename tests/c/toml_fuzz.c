/*
 * toml_fuzz.c — throws documents at the C manifest reader for a bounded time: the seed
 * corpus as given, hostile documents built here (deep nesting, huge strings, long
 * lines, NUL bytes, invalid UTF-8, many keys), every prefix of each seed, then random
 * mutations and splices of the seeds.  Each document goes through
 *
 *   pp_toml_to_json                               the parser on its own
 *   pp_manifest_doc_parse + json + check + validate  the manifest model
 *   pp_manifest_doc_read (every 64th, from a file)   the reading path
 *
 * It checks nothing but its own survival: tests/test_c_sanitizers.py builds it with
 * ASan+UBSan, where any memory error or undefined behaviour ends the run.
 *
 *   toml_fuzz --work DIR [--seconds S] [--seed N] SEED.toml...
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "polyplug.h"
#include "driver_util.h"

typedef struct doc {
    uint8_t *p;
    size_t len;
} doc;

static doc *g_seeds;
static size_t g_nseeds;
static const char *g_work;
static uint64_t g_rng = 0x9E3779B97F4A7C15ULL;
static size_t g_total, g_toml_ok, g_manifest_ok, g_valid;

static uint64_t rnd(void) { /* xorshift64* */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545F4914F6CDD1DULL;
}

static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "toml_fuzz: out of memory\n");
        exit(2);
    }
    return p;
}

static void run_one(const uint8_t *p, size_t len) {
    g_total++;
    StringView text = {p, len};
    pp_error err;
    pp_error_clear(&err);
    char *json = NULL;
    size_t jlen = 0;
    if (pp_toml_to_json(text, &json, &jlen, &err) == PP_OK) {
        g_toml_ok++;
        if (!json || strlen(json) != jlen) {
            fprintf(stderr, "toml_fuzz: JSON length mismatch\n");
            exit(3);
        }
        pp_toml_json_free(json);
    }
    StringView dir = {(const uint8_t *)g_work, strlen(g_work)};
    pp_manifest_doc *d = NULL;
    pp_error_clear(&err);
    if (pp_manifest_doc_parse(text, dir, g_total % 3 ? 0 : PP_MANIFEST_GENERATED, &d, &err) ==
        PP_OK) {
        g_manifest_ok++;
        size_t n;
        if (!pp_manifest_doc_json(d, &n)) exit(4);
        for (uint32_t mode = 0; mode <= 2; mode++) {
            pp_error_clear(&err);
            pp_manifest_doc_check(d, PP_CHECK_KEYS | PP_CHECK_FUNCTION_COUNTS, mode, &err);
            for (size_t i = 0; i < pp_manifest_doc_warning_count(d); i++)
                if (!pp_manifest_doc_warning(d, i)) exit(5);
        }
        pp_error_clear(&err);
        if (pp_manifest_doc_validate(d, &err) == PP_OK) g_valid++;
        const pp_manifest *m = pp_manifest_doc_view(d);
        if (!m || (m->provides_len && !m->provides)) exit(6);
        pp_manifest_doc_free(d);
    }
    if (g_total % 64 == 0) { /* the file-reading path too */
        char path[4096];
        snprintf(path, sizeof path, "%s/manifest.toml", g_work);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(p, 1, len, f) != len || fclose(f) != 0) {
            fprintf(stderr, "toml_fuzz: cannot write %s: %s\n", path, strerror(errno));
            exit(2);
        }
        d = NULL;
        pp_error_clear(&err);
        if (pp_manifest_doc_read(dir, &d, &err) == PP_OK) pp_manifest_doc_free(d);
    }
}

static doc read_seed(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "toml_fuzz: cannot read %s: %s\n", path, strerror(errno));
        exit(2);
    }
    doc d = {NULL, 0};
    size_t cap = 0;
    for (;;) {
        if (d.len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *p = realloc(d.p, cap);
            if (!p) exit(2);
            d.p = p;
        }
        size_t n = fread(d.p + d.len, 1, cap - d.len, f);
        if (n == 0) break;
        d.len += n;
    }
    fclose(f);
    return d;
}

/* `count` copies of `unit`, between `head` and `tail`. */
static void run_repeated(const char *head, const char *unit, size_t count, const char *tail) {
    size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
    uint8_t *p = xmalloc(hl + ul * count + tl);
    memcpy(p, head, hl);
    for (size_t i = 0; i < count; i++) memcpy(p + hl + i * ul, unit, ul);
    memcpy(p + hl + ul * count, tail, tl);
    run_one(p, hl + ul * count + tl);
    free(p);
}

static void run_hostile(void) {
    run_repeated("a = ", "[", 200000, "");
    run_repeated("a = ", "[", 128, "");
    run_repeated("a = ", "{b=", 50000, "1");
    run_repeated("[", "t.", 50000, "t]\nx = 1\n");
    run_repeated("", "a.", 50000, "b = 1\n");
    run_repeated("[[", "t.", 2000, "t]]\n");
    run_repeated("a = \"", "x", 4 << 20, "\"\n");
    run_repeated("a = '''", "\\\"'\n", 1 << 18, "'''\n");
    run_repeated("a = \"", "\\u00e9\\U0001F600", 1 << 16, "\"\n");
    run_repeated("a = [", "1,", 1 << 18, "]\n");
    run_repeated("", "# comment \t\r\n", 1 << 16, "a = 1");
    run_repeated("a = 1", " ", 1 << 20, "# end");
    run_repeated("a = ", "9", 100000, "\n");
    run_repeated("a = 0x", "f", 5000, "\n");
    run_repeated("[contracts.\"x@1\".functions]\n", "f = { id = 0, args = [\"u32\"] }\n", 1000, "");
    run_repeated("name = \"x\"\nloader = \"lua\"\nfile = \"", "../", 5000, "x.lua\"\n");
    char key[32];
    size_t cap = 1 << 20, len = 0;
    uint8_t *many = xmalloc(cap);
    for (int i = 0; i < 40000; i++) {
        int n = snprintf(key, sizeof key, "k%d = %d\n", i, i);
        memcpy(many + len, key, (size_t)n);
        len += (size_t)n;
    }
    run_one(many, len);
    memcpy(many + len, "k7 = 1\n", 7);
    run_one(many, len + 7);
    free(many);
#define BYTES(lit) {(const uint8_t *)(lit), sizeof(lit) - 1}
    static const struct {
        const uint8_t *p;
        size_t n;
    } bad[] = {
        BYTES("a = \0"),          BYTES("a = \"\xff\""),   BYTES("\xc0\x80"),
        BYTES("\xed\xa0\x80"),  BYTES("\xf4\x90\x80\x80"), BYTES("a = \"\xe2\x82"),
        BYTES("#\0\n"),          BYTES("a = 1\r"),         BYTES("\"\\ud800\" = 1"),
    };
#undef BYTES
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) run_one(bad[i].p, bad[i].n);
}

static void mutate_and_run(void) {
    const doc *s = &g_seeds[below(g_nseeds)];
    size_t cap = s->len * 2 + 64, len = s->len;
    uint8_t *p = xmalloc(cap);
    memcpy(p, s->p, len);
    static const char tokens[] = "[]{}=.,\"'#\\\n\r\t :+-_0xeE\x00\x7f";
    for (size_t k = 0, edits = 1 + below(6); k < edits; k++) {
        size_t pos = below(len + 1);
        switch (below(5)) {
        case 0: /* insert a token character */
            if (len + 1 >= cap) break;
            memmove(p + pos + 1, p + pos, len - pos);
            p[pos] = (uint8_t)tokens[below(sizeof tokens - 1)];
            len++;
            break;
        case 1: /* delete a run */
            if (pos < len) {
                size_t n = 1 + below(len - pos < 8 ? len - pos : 8);
                memmove(p + pos, p + pos + n, len - pos - n);
                len -= n;
            }
            break;
        case 2: /* replace with any byte */
            if (pos < len) p[pos] = (uint8_t)rnd();
            break;
        case 3: { /* splice in a piece of another seed */
            const doc *o = &g_seeds[below(g_nseeds)];
            size_t from = below(o->len), n = below(o->len - from + 1);
            if (n > 64) n = 64;
            if (len + n >= cap) break;
            memmove(p + pos + n, p + pos, len - pos);
            memcpy(p + pos, o->p + from, n);
            len += n;
            break;
        }
        default: /* duplicate a chunk in place */
            if (pos < len) {
                size_t n = 1 + below(len - pos < 32 ? len - pos : 32);
                if (len + n >= cap) break;
                memmove(p + pos + n, p + pos, len - pos);
                len += n;
            }
            break;
        }
    }
    run_one(p, len);
    free(p);
}

int main(int argc, char **argv) {
    double seconds = 10;
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--work") == 0 && i + 1 < argc)
            g_work = argv[++i];
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            g_rng = strtoull(argv[++i], NULL, 0) | 1;
        else
            break;
    }
    if (!g_work || i >= argc) {
        fprintf(stderr, "usage: toml_fuzz --work DIR [--seconds S] [--seed N] SEED.toml...\n");
        return 2;
    }
    mkdir(g_work, 0777);
    g_nseeds = (size_t)(argc - i);
    g_seeds = xmalloc(g_nseeds * sizeof *g_seeds);
    for (size_t k = 0; k < g_nseeds; k++) g_seeds[k] = read_seed(argv[i + (int)k]);
    double start = now_s();
    for (size_t k = 0; k < g_nseeds; k++) {
        run_one(g_seeds[k].p, g_seeds[k].len);
        for (size_t n = 0; n < g_seeds[k].len && n < 512; n++) run_one(g_seeds[k].p, n);
    }
    run_hostile();
    size_t mutations = 0;
    while (now_s() - start < seconds) {
        for (int k = 0; k < 100; k++) mutate_and_run();
        mutations += 100;
    }
    printf("toml_fuzz: %zu documents (%zu mutations) in %.1f s: %zu read as TOML, %zu as "
           "manifests, %zu valid\n",
           g_total, mutations, now_s() - start, g_toml_ok, g_manifest_ok, g_valid);
    for (size_t k = 0; k < g_nseeds; k++) free(g_seeds[k].p);
    free(g_seeds);
    return 0;
}
