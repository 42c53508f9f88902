/* sid_log.c - the shim's event log: append-only, thread-safe, timestamps
 * from CLOCK_MONOTONIC (same clock as Python's time.monotonic_ns()). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sid_internal.h"

void sid_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int64_t sid_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void sid_log_init(sid_log *log)
{
    pthread_mutex_init(&log->lock, NULL);
    log->events = g_array_new(FALSE, TRUE, sizeof(sid_event));
    log->fatal_count = 0;
}

void sid_log_clear(sid_log *log)
{
    if (log->events) {
        g_array_free(log->events, TRUE);
        log->events = NULL;
    }
    pthread_mutex_destroy(&log->lock);
}

void sid_log_add(sid_log *log, int kind, int display, uint64_t cookie,
                 int64_t a, int64_t b, int64_t c, int64_t d,
                 const char *fmt, ...)
{
    sid_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = kind;
    ev.display = display;
    ev.cookie = cookie;
    ev.a = a;
    ev.b = b;
    ev.c = c;
    ev.d = d;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ev.text, sizeof(ev.text), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_lock(&log->lock);
    /* stamped under the lock: the log's order is the order of its times,
     * whichever threads (QEMU's, the worker) add events at once */
    ev.t_ns = sid_monotonic_ns();
    g_array_append_val(log->events, ev);
    if (kind == SID_EV_FATAL) {
        log->fatal_count++;
    }
    pthread_mutex_unlock(&log->lock);
    if (kind == SID_EV_WARNING || kind == SID_EV_FATAL) {
        /* QEMU prints these on stderr too */
        fprintf(stderr, "sid-shim: %s: %s\n",
                kind == SID_EV_FATAL ? "FATAL" : "warning", ev.text);
    }
}

size_t sid_log_len(sid_log *log)
{
    pthread_mutex_lock(&log->lock);
    size_t n = log->events->len;
    pthread_mutex_unlock(&log->lock);
    return n;
}

int sid_log_copy(sid_log *log, size_t index, sid_event *out)
{
    int ret = SID_ERR_ARG;
    pthread_mutex_lock(&log->lock);
    if (index < log->events->len) {
        *out = g_array_index(log->events, sid_event, index);
        ret = SID_OK;
    }
    pthread_mutex_unlock(&log->lock);
    return ret;
}

int sid_log_fatal_count(sid_log *log)
{
    pthread_mutex_lock(&log->lock);
    int n = log->fatal_count;
    pthread_mutex_unlock(&log->lock);
    return n;
}

size_t sid_log_count(sid_server *srv)
{
    return sid_log_len(&srv->log);
}

int sid_log_get(sid_server *srv, size_t index, sid_event *out)
{
    return sid_log_copy(&srv->log, index, out);
}

int sid_fatal_count(sid_server *srv)
{
    return sid_log_fatal_count(&srv->log);
}
