/*
 * pp_log.c — the logging funnel.  Records are filtered before they are formatted,
 * and delivered with no runtime lock held (callers guarantee it: ppi_logf is never
 * called while holding rt->lock or the registry lock).  A record emitted deep in a
 * call's C stack is held back until the thread's outermost call ends.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pp_internal.h"

/* Below this much C stack, a record emitted inside a call waits for the call's end. */
#define LOG_STACK (64u * 1024u)
enum { DEFERRED_MAX = 32 }; /* records held back per thread; later ones are counted */

typedef struct ppi_deferred_log {
    struct ppi_deferred_log *next;
    ppi_log_sink sink; /* by value: the runtime outlives the thread's outermost call */
    uint32_t level;
    size_t scope_len, message_len;
    char text[]; /* scope, then message */
} ppi_deferred_log;

static void deliver(const ppi_log_sink *sink, uint32_t level, StringView scope,
                    StringView message) {
    if (sink->fn) {
        if (level <= sink->max_level) sink->fn(sink->user_data, level, scope, message);
        return;
    }
    /* No callback: Warn and above go to stderr whatever log_max_level says. */
    if (level <= LogLevel_Warn) {
        fprintf(stderr, "[polyplug] [%.*s] %.*s\n", (int)scope.len,
                scope.ptr ? (const char *)scope.ptr : "", (int)message.len,
                message.ptr ? (const char *)message.ptr : "");
    }
}

static void defer(ppi_thread *t, const ppi_log_sink *sink, uint32_t level, StringView scope,
                  StringView message) {
    ppi_deferred_log *d = t->deferred_len < DEFERRED_MAX
                              ? malloc(sizeof *d + scope.len + message.len)
                              : NULL;
    if (!d) {
        t->deferred_dropped++;
        return;
    }
    d->next = NULL;
    d->sink = *sink;
    d->level = level;
    d->scope_len = scope.len;
    d->message_len = message.len;
    if (scope.len) memcpy(d->text, scope.ptr, scope.len);
    if (message.len) memcpy(d->text + scope.len, message.ptr, message.len);
    ppi_deferred_log **tail = &t->deferred;
    while (*tail) tail = &(*tail)->next;
    *tail = d;
    t->deferred_len++;
}

void ppi_log_emit(const ppi_log_sink *sink, uint32_t level, StringView scope,
                  StringView message) {
    if (level < LogLevel_Error || level > LogLevel_Trace) level = LogLevel_Error;
    ppi_thread *t = ppi_self();
    if (PP_UNLIKELY(t->call && ppi_cstack_left() < LOG_STACK)) /* inside a call */
        defer(t, sink, level, scope, message);
    else
        deliver(sink, level, scope, message);
}

void ppi_log_flush_deferred(void) {
    ppi_thread *t = ppi_self();
    ppi_log_sink last = {0};
    while (t->deferred) {
        ppi_deferred_log *d = t->deferred;
        t->deferred = d->next; /* a callback that logs again appends behind */
        t->deferred_len--;
        last = d->sink;
        deliver(&d->sink, d->level, (StringView){(const uint8_t *)d->text, d->scope_len},
                (StringView){(const uint8_t *)d->text + d->scope_len, d->message_len});
        free(d);
    }
    if (t->deferred_dropped && (last.fn || last.max_level)) {
        char text[160];
        snprintf(text, sizeof text,
                 "%u log record(s) dropped: emitted with little C stack left, past the %d "
                 "held back for the end of the call",
                 t->deferred_dropped, DEFERRED_MAX);
        deliver(&last, LogLevel_Warn, ppi_view("runtime"), ppi_view(text));
    }
    t->deferred_dropped = 0;
}

static bool wanted(const ppi_log_sink *sink, uint32_t level) {
    return sink->fn ? level <= sink->max_level : level <= LogLevel_Warn;
}

void ppi_logf(pp_runtime *rt, uint32_t level, const char *scope, const char *fmt, ...) {
    if (!rt || !wanted(&rt->log, level)) return;
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof buf) { /* cut: do not end inside a UTF-8 sequence */
        size_t end = sizeof buf - 1;
        while (end > 0 && ((unsigned char)buf[end] & 0xC0) == 0x80) end--;
        buf[end] = '\0';
    }
    ppi_log_emit(&rt->log, level, ppi_view(scope), ppi_view(buf));
}

void pp_runtime_log(pp_runtime *rt, uint32_t level, StringView scope, StringView message) {
    if (!rt) return;
    ppi_log_emit(&rt->log, level, scope, message);
}
