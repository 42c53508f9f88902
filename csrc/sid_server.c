/* sid_server.c - spice server setup and teardown, in the order QEMU's
 * ui/spice-core.c (qemu_spice_init) and ui/spice-display.c use, and the
 * public entry points of the shim.
 *
 * Every spice_server_* / spice_qxl_* call is made on the core thread
 * (sid_core_call), as QEMU makes them from its main loop.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sid_internal.h"

static GMutex live_lock;
static sid_server *live_server;   /* one spice server per process, as QEMU */

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

/* A free loopback port: bind port 0, read it back, release it.  QEMU is
 * given a fixed port; a test harness cannot know one in advance. */
static int pick_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sa);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0) {
        port = ntohs(sa.sin_port);
    }
    close(fd);
    return port;
}

typedef struct {
    sid_server *srv;
    const char *codecs;
    const char *unix_path;      /* NULL: TCP on 127.0.0.1 */
    const sid_security *sec;    /* NULL: plain port, no ticket */
    int ret;
    char msg[256];
} start_args;

static void do_start(void *p)
{
    start_args *a = p;
    sid_server *srv = a->srv;

    for (int attempt = 0; attempt < 5; attempt++) {
        const sid_security *sec = a->sec;
        bool tls = sec && sec->ca_file;
        bool plain = !tls || sec->plain_port;
        int port = a->unix_path || !plain ? 0 : pick_free_port();
        int tls_port = tls ? pick_free_port() : 0;
        if (port < 0 || tls_port < 0) {
            snprintf(a->msg, sizeof(a->msg), "no free loopback port: %s",
                     g_strerror(errno));
            a->ret = SID_ERR_SYS;
            return;
        }
        SpiceServer *s = spice_server_new();
        if (a->unix_path) {
            /* QEMU's -spice unix=on,addr=PATH (ui/spice-core.c): no port,
             * spice_server_set_addr(..., SPICE_ADDR_FLAG_UNIX_ONLY) */
            spice_server_set_addr(s, a->unix_path, SPICE_ADDR_FLAG_UNIX_ONLY);
        } else {
            if (plain) {
                spice_server_set_port(s, port);
            }
            spice_server_set_addr(s, "127.0.0.1", SPICE_ADDR_FLAG_IPV4_ONLY);
        }
        if (tls && spice_server_set_tls(s, tls_port, sec->ca_file, sec->cert_file,
                                        sec->key_file, NULL, NULL,
                                        sec->ciphers) != 0) {
            spice_server_destroy(s);
            snprintf(a->msg, sizeof(a->msg), "spice_server_set_tls failed "
                     "(CA %s, certificate %s, key %s)", sec->ca_file,
                     sec->cert_file, sec->key_file);
            a->ret = SID_ERR_SPICE;
            return;
        }
        if (sec && sec->password) {
            /* QEMU's password=: fail_if_connected and
             * disconnect_if_connected 0 */
            spice_server_set_ticket(s, sec->password, sec->ticket_lifetime, 0, 0);
        } else {
            spice_server_set_noauth(s);
        }
        /* QEMU's default when -spice streaming-video is not given */
        spice_server_set_streaming_video(s, SPICE_STREAM_VIDEO_OFF);
        if (spice_server_set_video_codecs(s, a->codecs) != 0) {
            spice_server_destroy(s);
            snprintf(a->msg, sizeof(a->msg),
                     "spice-server installed none of the video codecs '%s'"
                     " (format encoder:codec;..., e.g. gstreamer:mjpeg)",
                     a->codecs);
            a->ret = SID_ERR_SPICE;
            return;
        }
        if (spice_server_init(s, &srv->core.iface) != 0) {
            /* most likely the port was taken in between: try another */
            spice_server_destroy(s);
            if (a->unix_path) {
                snprintf(a->msg, sizeof(a->msg),
                         "spice_server_init failed on unix socket %s",
                         a->unix_path);
                a->ret = SID_ERR_SPICE;
                return;
            }
            snprintf(a->msg, sizeof(a->msg),
                     "spice_server_init failed on 127.0.0.1:%d (TLS %d)",
                     port, tls_port);
            a->ret = SID_ERR_SPICE;
            continue;
        }
        srv->spice = s;
        srv->port = port;
        srv->tls_port = tls_port;
        a->ret = SID_OK;
        break;
    }
    if (a->ret != SID_OK) {
        return;
    }
    /* qemu_spice_display_init_one() for each console */
    for (int i = 0; i < srv->n_displays; i++) {
        if (spice_server_add_interface(srv->spice,
                                       &srv->displays[i].qxl.base) != 0) {
            snprintf(a->msg, sizeof(a->msg),
                     "spice_server_add_interface failed for display %d", i);
            a->ret = SID_ERR_SPICE;
            return;
        }
    }
    /* the VM is running: qemu_spice_display_start() */
    spice_server_vm_start(srv->spice);
}

static void do_stop(void *p)
{
    sid_server *srv = p;
    for (int i = 0; i < srv->n_displays; i++) {
        sid_refresh_stop(&srv->displays[i]);
    }
    if (srv->spice) {
        spice_server_vm_stop(srv->spice);
        spice_server_destroy(srv->spice);
        srv->spice = NULL;
    }
}

static sid_server *server_new(const char *codecs, int n_displays,
                              const char *unix_path, const sid_security *sec,
                              char *err, size_t errlen)
{
    if (!codecs || n_displays < 1 || n_displays > SID_MAX_DISPLAYS) {
        sid_set_err(err, errlen, "invalid arguments: codecs=%s displays=%d "
                "(need a codec list and 1..%d displays)",
                codecs ? codecs : "(null)", n_displays, SID_MAX_DISPLAYS);
        return NULL;
    }
    g_mutex_lock(&live_lock);
    if (live_server) {
        g_mutex_unlock(&live_lock);
        sid_set_err(err, errlen, "a shim server is already running in this process;"
                " free it first (one spice server per process, as QEMU)");
        return NULL;
    }
    sid_server *srv = g_new0(sid_server, 1);
    live_server = srv;
    g_mutex_unlock(&live_lock);

    g_mutex_init(&srv->lock);
    g_cond_init(&srv->cond);
    sid_log_init(&srv->log);
    srv->n_displays = n_displays;
    for (int i = 0; i < n_displays; i++) {
        sid_display_init(&srv->displays[i], srv, i);
    }
    sid_core_set_current(&srv->core);
    sid_core_start(&srv->core, &srv->log);

    start_args a = { .srv = srv, .codecs = codecs, .unix_path = unix_path,
                     .sec = sec, .ret = SID_ERR_SPICE };
    sid_core_call(&srv->core, do_start, &a);
    if (a.ret != SID_OK) {
        sid_set_err(err, errlen, "%s", a.msg);
        sid_server_free(srv);
        return NULL;
    }
    if (unix_path) {
        sid_log_add(&srv->log, SID_EV_SERVER_STARTED, -1, 0, 0, n_displays,
                    0, 0, "listening on unix socket %s, codecs %s",
                    unix_path, codecs);
    } else {
        sid_log_add(&srv->log, SID_EV_SERVER_STARTED, -1, 0, srv->port,
                    n_displays, srv->tls_port, 0,
                    "listening on 127.0.0.1:%d (TLS %d), codecs %s%s",
                    srv->port, srv->tls_port, codecs,
                    sec && sec->password ? ", ticket" : ", no auth");
    }
    return srv;
}

sid_server *sid_server_new(const char *codecs, int n_displays,
                           char *err, size_t errlen)
{
    return sid_server_new_unix(codecs, n_displays, NULL, err, errlen);
}

sid_server *sid_server_new_unix(const char *codecs, int n_displays,
                                const char *unix_path,
                                char *err, size_t errlen)
{
    return server_new(codecs, n_displays, unix_path, NULL, err, errlen);
}

sid_server *sid_server_new_secure(const char *codecs, int n_displays,
                                  const sid_security *sec,
                                  char *err, size_t errlen)
{
    if (sec && sec->ca_file && (!sec->cert_file || !sec->key_file)) {
        sid_set_err(err, errlen, "a TLS port needs a CA, a certificate and a key"
                    " (got CA %s, certificate %s, key %s)", sec->ca_file,
                    sec->cert_file ? sec->cert_file : "(none)",
                    sec->key_file ? sec->key_file : "(none)");
        return NULL;
    }
    return server_new(codecs, n_displays, NULL, sec, err, errlen);
}

void sid_server_free(sid_server *srv)
{
    if (!srv) {
        return;
    }
    g_mutex_lock(&srv->lock);
    srv->stopping = 1;
    g_cond_broadcast(&srv->cond);
    g_mutex_unlock(&srv->lock);
    if (srv->core.thread) {
        sid_core_call(&srv->core, do_stop, srv);
        sid_core_stop(&srv->core);
    }
    for (int i = 0; i < srv->n_displays; i++) {
        sid_display_cleanup(&srv->displays[i]);
    }
    sid_core_set_current(NULL);
    sid_log_clear(&srv->log);
    g_cond_clear(&srv->cond);
    g_mutex_clear(&srv->lock);
    g_mutex_lock(&live_lock);
    if (live_server == srv) {
        live_server = NULL;
    }
    g_mutex_unlock(&live_lock);
    g_free(srv);
}

int sid_server_port(sid_server *srv)
{
    return srv->port;
}

int sid_server_tls_port(sid_server *srv)
{
    return srv->tls_port;
}

typedef struct {
    sid_server *srv;
    const char *password;
    int lifetime;
    int ret;
} ticket_args;

static void do_set_ticket(void *p)
{
    ticket_args *a = p;
    a->ret = spice_server_set_ticket(a->srv->spice, a->password, a->lifetime, 0, 0);
}

int sid_server_set_ticket(sid_server *srv, const char *password, int lifetime,
                          char *err, size_t errlen)
{
    if (!srv || !srv->spice || lifetime < 0) {
        sid_set_err(err, errlen, "set_ticket needs a running server and a "
                    "lifetime >= 0 (got %d)", lifetime);
        return SID_ERR_ARG;
    }
    ticket_args a = { .srv = srv, .password = password, .lifetime = lifetime };
    sid_core_call(&srv->core, do_set_ticket, &a);
    if (a.ret != 0) {
        sid_set_err(err, errlen, "spice_server_set_ticket failed (%d)", a.ret);
        return SID_ERR_SPICE;
    }
    return SID_OK;
}

int sid_server_n_displays(sid_server *srv)
{
    return srv->n_displays;
}

static sid_display *get_display(sid_server *srv, int display, char *err,
                                size_t errlen)
{
    if (!srv || display < 0 || display >= srv->n_displays) {
        sid_set_err(err, errlen, "no display %d (server has %d)", display,
                srv ? srv->n_displays : 0);
        return NULL;
    }
    return &srv->displays[display];
}

/* The "guest buffer": a sealed-size memfd, stand-in for a DMA-BUF. */
static int make_memfd(const char *name, const uint8_t *data, size_t len,
                      char *err, size_t errlen)
{
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        sid_set_err(err, errlen, "memfd_create: %s", g_strerror(errno));
        return -1;
    }
    size_t off = 0;
    if (ftruncate(fd, (off_t)len) != 0) {
        goto fail;
    }
    while (off < len) {
        ssize_t n = pwrite(fd, data + off, len - off, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            goto fail;
        }
        off += (size_t)n;
    }
    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
    return fd;
fail:
    sid_set_err(err, errlen, "writing memfd of %zu bytes: %s", len, g_strerror(errno));
    close(fd);
    return -1;
}

static int scanout_impl(sid_server *srv, int display, const uint8_t *data,
                        size_t len, uint32_t width, uint32_t height,
                        const uint32_t *offsets, const uint32_t *strides,
                        uint32_t num_planes, uint32_t fourcc, uint64_t modifier,
                        int y0_top, int separate_fds, int single,
                        char *err, size_t errlen)
{
    sid_display *d = get_display(srv, display, err, errlen);
    if (!d) {
        return SID_ERR_ARG;
    }
    if (num_planes < 1 || num_planes > 4 || !data || width == 0 || height == 0) {
        sid_set_err(err, errlen, "invalid scanout: %ux%u, %u planes (need 1..4)",
                width, height, num_planes);
        return SID_ERR_ARG;
    }
    for (uint32_t i = 0; i < num_planes; i++) {
        if (strides[i] == 0 || (uint64_t)offsets[i] > len) {
            sid_set_err(err, errlen, "plane %u: offset %u / stride %u do not fit"
                    " a buffer of %zu bytes", i, offsets[i], strides[i], len);
            return SID_ERR_ARG;
        }
    }
    /* The guest's dmabuf(s): the shim keeps them open for the lifetime of
     * the scanout call only; spice gets dup()s and closes them (QEMU). */
    int guest[4] = { -1, -1, -1, -1 };
    int fds[4] = { -1, -1, -1, -1 };
    int ret = SID_OK;
    for (uint32_t i = 0; i < num_planes; i++) {
        if (i == 0 || separate_fds) {
            char name[64];
            snprintf(name, sizeof(name), "sid-scanout-d%d-p%u", display, i);
            guest[i] = make_memfd(name, data, len, err, errlen);
            if (guest[i] < 0) {
                ret = SID_ERR_SYS;
                goto out;
            }
        }
        int src = separate_fds ? guest[i] : guest[0];
        fds[i] = fcntl(src, F_DUPFD_CLOEXEC, 0);
        if (fds[i] < 0) {
            sid_set_err(err, errlen, "dup: %s", g_strerror(errno));
            ret = SID_ERR_SYS;
            goto out;
        }
    }
    ret = sid_display_do_scanout(d, fds, width, height, offsets, strides,
                                 num_planes, fourcc, modifier, y0_top, single);
    g_mutex_lock(&srv->lock);
    sid_display_keep_buffer(d, guest[0]);
    g_mutex_unlock(&srv->lock);
    for (uint32_t i = 0; i < num_planes; i++) {
        fds[i] = -1;   /* owned by spice-server now */
    }
out:
    for (int i = 0; i < 4; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
        if (guest[i] >= 0) {
            close(guest[i]);
        }
    }
    return ret;
}

int sid_display_scanout(sid_server *srv, int display,
                        const uint8_t *data, size_t len,
                        uint32_t width, uint32_t height, uint32_t stride,
                        uint32_t fourcc, int y0_top,
                        char *err, size_t errlen)
{
    uint32_t offset = 0;
    if ((uint64_t)stride * height > len) {
        sid_set_err(err, errlen, "buffer of %zu bytes is smaller than stride %u x"
                " height %u", len, stride, height);
        return SID_ERR_ARG;
    }
    return scanout_impl(srv, display, data, len, width, height, &offset,
                        &stride, 1, fourcc, 0, y0_top, 0, 1, err, errlen);
}

int sid_display_scanout2(sid_server *srv, int display,
                         const uint8_t *data, size_t len,
                         uint32_t width, uint32_t height,
                         const uint32_t *offsets, const uint32_t *strides,
                         uint32_t num_planes, uint32_t fourcc,
                         uint64_t modifier, int y0_top, int separate_fds,
                         char *err, size_t errlen)
{
    return scanout_impl(srv, display, data, len, width, height, offsets,
                        strides, num_planes, fourcc, modifier, y0_top,
                        separate_fds, 0, err, errlen);
}

int sid_display_draw(sid_server *srv, int display,
                     uint32_t x, uint32_t y, uint32_t w, uint32_t h,
                     uint64_t *cookie, char *err, size_t errlen)
{
    sid_display *d = get_display(srv, display, err, errlen);
    if (!d) {
        return SID_ERR_ARG;
    }
    int ret = sid_display_do_draw(d, x, y, w, h, cookie);
    if (ret == SID_ERR_BUSY) {
        sid_set_err(err, errlen, "display %d: a draw is still outstanding (QEMU"
                " blocks the console until async_complete); wait for it first",
                display);
    } else if (ret == SID_ERR_NO_SCANOUT) {
        sid_set_err(err, errlen, "display %d: draw without a scanout; call"
                " scanout first", display);
    }
    return ret;
}

int sid_display_wait_draw(sid_server *srv, int display, uint64_t cookie,
                          int timeout_ms)
{
    sid_display *d = get_display(srv, display, NULL, 0);
    if (!d) {
        return SID_ERR_ARG;
    }
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    int ret;
    g_mutex_lock(&srv->lock);
    for (;;) {
        if (g_hash_table_contains(d->completed, &cookie)) {
            ret = SID_OK;
            break;
        }
        if (d->pending_cookie != cookie) {
            ret = SID_ERR_ARG;
            break;
        }
        if (srv->stopping) {
            ret = SID_ERR_STOPPED;
            break;
        }
        if (!g_cond_wait_until(&srv->cond, &srv->lock, deadline)) {
            ret = g_hash_table_contains(d->completed, &cookie) ? SID_OK
                                                               : SID_ERR_TIMEOUT;
            break;
        }
    }
    g_mutex_unlock(&srv->lock);
    return ret;
}

typedef struct {
    sid_server *srv;
    int rate;
} refresh_args;

static void do_set_refresh_rate(void *p)
{
    refresh_args *a = p;
    for (int i = 0; i < a->srv->n_displays; i++) {
        if (a->rate > 0) {
            sid_refresh_start(&a->srv->displays[i], a->rate);
        } else {
            sid_refresh_stop(&a->srv->displays[i]);
        }
    }
}

int sid_server_set_refresh_rate(sid_server *srv, int max_refresh_rate,
                                char *err, size_t errlen)
{
    /* QEMU: "max refresh rate/fps is invalid" for <= 0; 0 here stops */
    if (!srv || max_refresh_rate < 0 || max_refresh_rate > 1000) {
        sid_set_err(err, errlen, "max refresh rate %d: use 1..1000 per second, "
                    "or 0 to stop", max_refresh_rate);
        return SID_ERR_ARG;
    }
    refresh_args a = { .srv = srv, .rate = max_refresh_rate };
    sid_core_call(&srv->core, do_set_refresh_rate, &a);
    return SID_OK;
}

static void do_update(void *p)
{
    sid_refresh_update(p);
}

int sid_display_update(sid_server *srv, int display, char *err, size_t errlen)
{
    sid_display *d = get_display(srv, display, err, errlen);
    if (!d) {
        return SID_ERR_ARG;
    }
    sid_core_call(&srv->core, do_update, d);
    return SID_OK;
}

int sid_display_draw_pending(sid_server *srv, int display)
{
    sid_display *d = get_display(srv, display, NULL, 0);
    if (!d) {
        return 0;
    }
    g_mutex_lock(&srv->lock);
    int pending = d->pending_cookie != 0;
    g_mutex_unlock(&srv->lock);
    return pending;
}

void sid_test_async_complete(sid_server *srv, int display, uint64_t cookie)
{
    sid_display *d = get_display(srv, display, NULL, 0);
    if (d) {
        sid_display_fake_complete(d, cookie);
    }
}

int sid_display_rewrite_on_complete(sid_server *srv, int display,
                                    const uint8_t *data, size_t len,
                                    char *err, size_t errlen)
{
    sid_display *d = get_display(srv, display, err, errlen);
    if (!d) {
        return SID_ERR_ARG;
    }
    if (!data || len == 0) {
        sid_set_err(err, errlen, "rewrite_on_complete: no data");
        return SID_ERR_ARG;
    }
    g_mutex_lock(&srv->lock);
    g_free(d->rewrite);
    d->rewrite = g_memdup2(data, len);
    d->rewrite_len = len;
    g_mutex_unlock(&srv->lock);
    return SID_OK;
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
