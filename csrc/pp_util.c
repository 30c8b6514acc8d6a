/* pp_util.c — status catalogue, error filling, small string helpers, FNV-1a. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pp_internal.h"
#include "pp_version.h"
#include "luajit.h"

static const char *const status_exceptions[] = {
#define PP_ERRDEF(name, pyclass, text) pyclass,
#include "pp_errors.def"
#undef PP_ERRDEF
};

static const char *const status_names[] = {
#define PP_ERRDEF(name, pyclass, text) "PP_" #name,
#include "pp_errors.def"
#undef PP_ERRDEF
};

_Static_assert(PP_COUNTOF(status_exceptions) == PP_STATUS_COUNT, "status table size");

const char *pp_status_exception(int32_t status) {
    if (status < 0 || status >= PP_STATUS_COUNT) return "RuntimeError";
    return status_exceptions[status];
}

const char *pp_status_name(int32_t status) {
    if (status < 0 || status >= PP_STATUS_COUNT) return "PP_UNKNOWN";
    return status_names[status];
}

const char *pp_version(void) { return PP_VERSION_STRING; }

const char *pp_luajit_version(void) { return LUAJIT_VERSION; }

uint64_t pp_fnv1a64(const uint8_t *data, size_t len) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= data[i];
        h *= 0x00000100000001b3ULL;
    }
    return h;
}

void pp_error_clear(pp_error *err) {
    if (!err) return;
    err->status = PP_OK;
    err->abi_code = 0;
    err->bundle[0] = err->aux[0] = err->detail[0] = err->message[0] = '\0';
}

/* Truncate at a UTF-8 character boundary so Python can always decode the text. */
void ppi_strlcpy(char *dst, size_t cap, const char *src) {
    if (cap == 0) return;
    size_t n = src ? strlen(src) : 0;
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80) n--;
    }
    if (n) memcpy(dst, src, n);
    dst[n] = '\0';
}

void ppi_view_copy(char *dst, size_t cap, StringView v) {
    if (cap == 0) return;
    size_t n = v.len < cap ? v.len : cap - 1;
    while (n < v.len && n > 0 && (v.ptr[n] & 0xC0) == 0x80) n--;
    if (n) memcpy(dst, v.ptr, n);
    dst[n] = '\0';
}

int32_t ppi_fail(pp_error *err, int32_t status, const char *bundle, const char *aux,
                 const char *detail, const char *fmt, ...) {
    if (!err) return status;
    err->status = status;
    if (err->abi_code == 0) err->abi_code = AbiErrorCode_Generic;
    ppi_strlcpy(err->bundle, sizeof err->bundle, bundle);
    ppi_strlcpy(err->aux, sizeof err->aux, aux);
    ppi_strlcpy(err->detail, sizeof err->detail, detail);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof err->message) {
        /* keep the text decodable after vsnprintf cut it mid-character */
        char tmp[sizeof err->message];
        memcpy(tmp, err->message, sizeof tmp);
        ppi_strlcpy(err->message, sizeof err->message, tmp);
    }
    return status;
}

char *ppi_strndup_view(StringView v) {
    char *s = malloc(v.len + 1);
    if (!s) return NULL;
    if (v.len) memcpy(s, v.ptr, v.len);
    s[v.len] = '\0';
    return s;
}

char *ppi_strdup(const char *s) { return ppi_strndup_view(ppi_view(s)); }

StringView ppi_view(const char *s) {
    StringView v = {(const uint8_t *)s, s ? strlen(s) : 0};
    return v;
}

bool ppi_view_eq(StringView a, const char *b) {
    size_t n = strlen(b);
    return a.len == n && (n == 0 || memcmp(a.ptr, b, n) == 0);
}

size_t ppi_utf8_check(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        if (len - i >= 8) { /* eight ASCII bytes at a time */
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        size_t extra;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            extra = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            extra = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            extra = 3;
            cp = c & 0x07;
        } else {
            return i;
        }
        if (extra > len - i - 1) return i; /* truncated sequence */
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        /* overlong forms, surrogates, beyond U+10FFFF */
        if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) ||
            (extra == 3 && cp < 0x10000) || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return i;
        i += extra + 1;
    }
    return len;
}

bool ppi_utf8_valid(const uint8_t *s, size_t len) { return ppi_utf8_check(s, len) == len; }

/* pthread_self() is unique among live threads and costs a register read. */
bool ppi_grow(void **items, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t ncap = *cap ? *cap * 2 : 8;
    while (ncap < need) ncap *= 2;
    void *p = realloc(*items, ncap * elem);
    if (!p) return false;
    *items = p;
    *cap = ncap;
    return true;
}

bool ppi_read_regular_file(const char *path, char **data, size_t *len, const char **why) {
    *data = NULL;
    *len = 0;
    /* O_NONBLOCK: opening a FIFO for reading would wait for a writer */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        *why = errno == ENOENT ? "file does not exist" : strerror(errno);
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *why = "not a regular file (a FIFO, device or directory is never read)";
        close(fd);
        return false;
    }
    /* st_size bytes, the file as it was at fstat (no second read to find its end);
     * a file that reports no size (procfs and the like) is read to its end */
    size_t want = (size_t)st.st_size, cap = want + 1, n = 0;
    char *buf = malloc(cap);
    while (want == 0 || n < want) {
        if (!buf || (n + 1 >= cap && !ppi_grow((void **)&buf, &cap, cap * 2, 1))) {
            free(buf);
            close(fd);
            *why = "out of memory";
            return false;
        }
        ssize_t got = read(fd, buf + n, cap - n - 1);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            *why = strerror(errno);
            free(buf);
            close(fd);
            return false;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    close(fd);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return true;
}
