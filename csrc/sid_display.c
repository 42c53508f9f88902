/* sid_display.c - one QXL instance per display, driven the way QEMU's
 * ui/spice-display.c drives a GL (virtio-gpu / dmabuf) console:
 *
 *  - scanout: QEMU hands spice_qxl_gl_scanout{,2} a dup() of the dmabuf fd
 *    and spice-server closes it; here the dmabuf is a memfd.
 *  - draw: spice_gl_draw() allocates one cookie per draw and blocks the
 *    console (qemu_spice_gl_block) until interface_async_complete() gets
 *    that cookie; a timer warns after one second without completion.
 *  - async_complete dereferences the cookie (a QXLCookie pointer in QEMU):
 *    a cookie QEMU did not hand out crashes QEMU.  The shim records that as
 *    a fatal event instead of crashing.
 *  - set_client_capabilities: QEMU ignores it; the shim logs it (it is
 *    how the shim sees display-channel clients come and go).
 *
 * The do_* functions run on the core thread, the QXLInterface callbacks
 * on whichever thread spice-server calls them from (its worker, as in
 * QEMU), the public entry points (sid_display_*) on any thread.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <drm/drm_fourcc.h>

#include "sid_internal.h"

#define COOKIE_TAG 0x51D0000000000000ULL   /* never a valid pointer */

static sid_display *to_display(QXLInstance *qin)
{
    return (sid_display *)qin;   /* qxl is the first member */
}

/* ---- QXLInterface callbacks ---------------------------------------- */
static void iface_attached_worker(QXLInstance *qin)
{
    (void)qin;
}

static void iface_set_compression_level(QXLInstance *qin, int level)
{
    (void)qin;
    (void)level;
}

static void iface_get_init_info(QXLInstance *qin, QXLDevInitInfo *info)
{
    /* same values as QEMU's simple spice display (NUM_MEMSLOTS = 8,
     * MEMSLOT_GENERATION_BITS = 8, MEMSLOT_SLOT_BITS = 8, 1024 surfaces) */
    (void)qin;
    info->memslot_gen_bits = 8;
    info->memslot_id_bits = 8;
    info->num_memslots = 8;
    info->num_memslots_groups = 1;
    info->internal_groupslot_id = 0;
    info->qxl_ram_size = 16 * 1024 * 1024;
    info->n_surfaces = 1024;
}

static int iface_get_command(QXLInstance *qin, QXLCommandExt *ext)
{
    /* GL consoles have no QXL commands */
    (void)qin;
    (void)ext;
    return 0;
}

static int iface_req_cmd_notification(QXLInstance *qin)
{
    (void)qin;
    return 1;
}

static void iface_release_resource(QXLInstance *qin, QXLReleaseInfoExt ext)
{
    (void)qin;
    (void)ext;
}

static int iface_get_cursor_command(QXLInstance *qin, QXLCommandExt *ext)
{
    (void)qin;
    (void)ext;
    return 0;
}

static int iface_req_cursor_notification(QXLInstance *qin)
{
    (void)qin;
    return 1;
}

static void iface_notify_update(QXLInstance *qin, uint32_t update_id)
{
    (void)qin;
    (void)update_id;
}

static int iface_flush_resources(QXLInstance *qin)
{
    (void)qin;
    return 0;
}

static void iface_update_area_complete(QXLInstance *qin, uint32_t surface_id,
                                       QXLRect *rects, uint32_t num)
{
    (void)qin;
    (void)surface_id;
    (void)rects;
    (void)num;
}

static void iface_set_client_capabilities(QXLInstance *qin, uint8_t present,
                                          uint8_t caps[SPICE_CAPABILITIES_SIZE])
{
    sid_display *d = to_display(qin);
    int64_t capbits = 0;
    for (int i = 0; i < 4 && i < (int)SPICE_CAPABILITIES_SIZE; i++) {
        capbits |= (int64_t)caps[i] << (8 * i);
    }
    sid_log_add(&d->srv->log,
                present ? SID_EV_CLIENT_CONNECT : SID_EV_CLIENT_DISCONNECT,
                d->id, 0, capbits, 0, 0, 0,
                "set_client_capabilities(client_present=%d, caps=0x%08llx)",
                present, (unsigned long long)capbits);
}

static int iface_client_monitors_config(QXLInstance *qin,
                                        VDAgentMonitorsConfig *mc)
{
    (void)qin;
    (void)mc;
    return 0;   /* QEMU's GL console: monitors config is not supported */
}

/* The guest renders its next frame into the buffer QEMU let go of
 * (srv->lock held). */
static void rewrite_buffer(sid_display *d)
{
    if (!d->rewrite || d->rewrite_fd < 0) {
        return;
    }
    size_t off = 0;
    while (off < d->rewrite_len) {
        ssize_t n = pwrite(d->rewrite_fd, d->rewrite + off, d->rewrite_len - off,
                           (off_t)off);
        if (n <= 0 && errno != EINTR) {
            break;
        }
        off += n > 0 ? (size_t)n : 0;
    }
    sid_log_add(&d->srv->log, SID_EV_WARNING, d->id, 0, (int64_t)off, 0, 0, 0,
                "guest rewrote %zu of %zu bytes of its buffer at completion",
                off, d->rewrite_len);
    g_clear_pointer(&d->rewrite, g_free);
    if (!d->keep_guest) {
        close(d->rewrite_fd);
        d->rewrite_fd = -1;
    }
}

/* Keep a dup of the scanout's memfd if a rewrite is armed or the guest
 * paints into it (srv->lock). */
static void keep_buffer(sid_display *d, int guest_fd, uint32_t stride)
{
    if (!d->rewrite && !d->keep_guest) {
        return;
    }
    if (d->rewrite_fd >= 0) {
        close(d->rewrite_fd);
    }
    d->rewrite_fd = fcntl(guest_fd, F_DUPFD_CLOEXEC, 0);
    d->guest_stride = stride;
}

static void iface_async_complete(QXLInstance *qin, uint64_t cookie)
{
    sid_display *d = to_display(qin);
    sid_server *srv = d->srv;
    int64_t now = sid_monotonic_ns();

    pthread_mutex_lock(&srv->lock);
    if (cookie != 0 && cookie == d->pending_cookie) {
        int64_t latency = now - d->pending_since_ns;
        /* logged before waiters wake up (lock order: srv->lock, log->lock) */
        sid_log_add(&srv->log, SID_EV_DRAW_DONE, d->id, cookie, latency, 0, 0, 0,
                    "gl-draw-done after %.1f ms", latency / 1e6);
        d->pending_cookie = 0;
        g_hash_table_add(d->completed, g_memdup2(&cookie, sizeof(cookie)));
        rewrite_buffer(d);
        pthread_cond_broadcast(&srv->cond);
        pthread_mutex_unlock(&srv->lock);
        return;
    }
    bool repeated = g_hash_table_contains(d->completed, &cookie);
    uint64_t pending = d->pending_cookie;
    pthread_mutex_unlock(&srv->lock);
    sid_log_add(&srv->log, SID_EV_FATAL, d->id, cookie, 0, 0, 0, 0,
                "async_complete with %s cookie 0x%016llx (outstanding: 0x%016llx);"
                " QEMU would crash", repeated ? "repeated" :
                (cookie & 0xFFF0000000000000ULL) == COOKIE_TAG ? "unknown" : "invalid",
                (unsigned long long)cookie, (unsigned long long)pending);
}

const QXLInterface sid_qxl_interface = {
    .base = {
        .type = SPICE_INTERFACE_QXL,
        .description = "sid-shim gl display",
        .major_version = SPICE_INTERFACE_QXL_MAJOR,
        .minor_version = SPICE_INTERFACE_QXL_MINOR,
    },
    .attached_worker = iface_attached_worker,
    .set_compression_level = iface_set_compression_level,
    .get_init_info = iface_get_init_info,
    .get_command = iface_get_command,
    .req_cmd_notification = iface_req_cmd_notification,
    .release_resource = iface_release_resource,
    .get_cursor_command = iface_get_cursor_command,
    .req_cursor_notification = iface_req_cursor_notification,
    .notify_update = iface_notify_update,
    .flush_resources = iface_flush_resources,
    .async_complete = iface_async_complete,
    .update_area_complete = iface_update_area_complete,
    .set_client_capabilities = iface_set_client_capabilities,
    .client_monitors_config = iface_client_monitors_config,
};

static guint cookie_hash(gconstpointer p)
{
    return g_int64_hash(p);
}

static gboolean cookie_equal(gconstpointer a, gconstpointer b)
{
    return g_int64_equal(a, b);
}

void sid_display_init(sid_display *d, sid_server *srv, int id)
{
    memset(d, 0, sizeof(*d));
    d->qxl.base.sif = &sid_qxl_interface.base;
    d->qxl.id = id;
    d->srv = srv;
    d->id = id;
    d->completed = g_hash_table_new_full(cookie_hash, cookie_equal, g_free, NULL);
    d->rewrite_fd = -1;
}

void sid_display_cleanup(sid_display *d)
{
    sid_refresh_stop(d);
    if (d->warn_timer) {
        g_source_destroy(d->warn_timer);
        g_source_unref(d->warn_timer);
        d->warn_timer = NULL;
    }
    if (d->completed) {
        g_hash_table_destroy(d->completed);
        d->completed = NULL;
    }
    g_clear_pointer(&d->rewrite, g_free);
    if (d->rewrite_fd >= 0) {
        close(d->rewrite_fd);
        d->rewrite_fd = -1;
    }
}

/* ---- operations on the core thread ----------------------------------- */
typedef struct {
    sid_display *d;
    const sid_dmabuf *buf;
} scanout_args;

/* The shim's only spice_qxl_gl_scanout{,2} call (spice_gl_scanout_dmabuf) */
static void do_scanout(void *p)
{
    scanout_args *a = p;
    sid_display *d = a->d;
    const sid_dmabuf *b = a->buf;
    if (b->scanout2 && b->no_arrays) {
        spice_qxl_gl_scanout2(&d->qxl, NULL, b->width, b->height, NULL, NULL,
                              b->num_planes, b->fourcc, b->modifier, b->y0_top);
    } else if (b->scanout2) {
        spice_qxl_gl_scanout2(&d->qxl, b->fds, b->width, b->height, b->offsets,
                              b->strides, b->num_planes, b->fourcc, b->modifier,
                              b->y0_top);
    } else {
        spice_qxl_gl_scanout(&d->qxl, b->fds[0], b->width, b->height,
                             b->strides[0], b->fourcc, b->y0_top);
    }
    /* QEMU believes it has a scanout whatever spice made of it, and draws */
    d->have_scanout = true;
    d->width = b->width;
    d->height = b->height;
}

void sid_display_do_scanout(sid_display *d, const sid_dmabuf *buf)
{
    scanout_args a = { .d = d, .buf = buf };
    sid_core_call(&d->srv->core, do_scanout, &a);
}

static gboolean warn_timer_cb(gpointer p)
{
    sid_display *d = p;
    sid_server *srv = d->srv;
    pthread_mutex_lock(&srv->lock);
    uint64_t pending = d->pending_cookie;
    pthread_mutex_unlock(&srv->lock);
    if (pending) {
        sid_log_add(&srv->log, SID_EV_WARNING, d->id, pending, 0, 0, 0, 0,
                    "spice: no gl-draw-done within one second");
    }
    return G_SOURCE_REMOVE;
}

typedef struct {
    sid_display *d;
    uint32_t x, y, w, h;
    uint64_t cookie;
    int ret;
} draw_args;

static void do_draw(void *p)
{
    draw_args *a = p;
    sid_display *d = a->d;
    sid_server *srv = d->srv;

    if (!d->have_scanout) {
        a->ret = SID_ERR_NO_SCANOUT;
        return;
    }
    pthread_mutex_lock(&srv->lock);
    if (d->pending_cookie) {
        pthread_mutex_unlock(&srv->lock);
        a->ret = SID_ERR_BUSY;
        return;
    }
    uint64_t cookie = COOKIE_TAG | ((uint64_t)d->id << 40) | ++d->next_seq;
    d->pending_cookie = cookie;
    d->pending_since_ns = sid_monotonic_ns();
    pthread_mutex_unlock(&srv->lock);

    sid_log_add(&srv->log, SID_EV_DRAW, d->id, cookie, a->x, a->y, a->w, a->h,
                "gl_draw_async %u,%u %ux%u", a->x, a->y, a->w, a->h);
    /* qemu_spice_gl_block(ssd, true): arm the one-second warning */
    if (d->warn_timer) {
        g_source_destroy(d->warn_timer);
        g_source_unref(d->warn_timer);
    }
    d->warn_timer = g_timeout_source_new(SID_DRAW_WARN_MS);
    g_source_set_callback(d->warn_timer, warn_timer_cb, d, NULL);
    g_source_attach(d->warn_timer, srv->core.ctx);

    /* no lock held: spice may complete synchronously (no buffer case) */
    spice_qxl_gl_draw_async(&d->qxl, a->x, a->y, a->w, a->h, cookie);
    a->cookie = cookie;
    a->ret = SID_OK;
}

int sid_display_do_draw(sid_display *d, uint32_t x, uint32_t y, uint32_t w,
                        uint32_t h, uint64_t *cookie)
{
    draw_args a = { .d = d, .x = x, .y = y, .w = w, .h = h };
    sid_core_call(&d->srv->core, do_draw, &a);
    if (a.ret == SID_OK && cookie) {
        *cookie = a.cookie;
    }
    return a.ret;
}

typedef struct {
    sid_display *d;
    uint64_t cookie;
} complete_args;

static void do_fake_complete(void *p)
{
    complete_args *a = p;
    iface_async_complete(&a->d->qxl, a->cookie);
}

/* ---- public entry points (any thread) -------------------------------- */
sid_display *sid_display_get(sid_server *srv, int display, char *err, size_t errlen)
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

/* The guest's buffer behind a scanout (QEMU: its dmabuf; here memfds). */
typedef struct {
    const uint8_t *data;
    size_t len;
    bool separate_fds;          /* a memfd per plane, else dup()s of one */
} guest_buffer;

/* Scan out the planes of buf from memfds holding g's data: spice gets
 * dup()s in buf->fds and closes them; the shim closes its own (QEMU). */
static int scanout_guest_buffer(sid_display *d, const guest_buffer *g,
                                sid_dmabuf *buf, char *err, size_t errlen)
{
    if (buf->num_planes < 1 || buf->num_planes > SID_MAX_PLANES || !g->data ||
        buf->width == 0 || buf->height == 0) {
        sid_set_err(err, errlen, "invalid scanout: %ux%u, %u planes (need 1..4)",
                buf->width, buf->height, buf->num_planes);
        return SID_ERR_ARG;
    }
    for (uint32_t i = 0; i < buf->num_planes; i++) {
        if (buf->strides[i] == 0 || (uint64_t)buf->offsets[i] > g->len) {
            sid_set_err(err, errlen, "plane %u: offset %u / stride %u do not fit"
                    " a buffer of %zu bytes", i, buf->offsets[i], buf->strides[i],
                    g->len);
            return SID_ERR_ARG;
        }
    }
    int guest[SID_MAX_PLANES] = { -1, -1, -1, -1 };
    int ret = SID_OK;
    for (int i = 0; i < SID_RAW_MAX_PLANES; i++) {
        buf->fds[i] = -1;
    }
    for (uint32_t i = 0; i < buf->num_planes; i++) {
        if (i == 0 || g->separate_fds) {
            char name[64];
            snprintf(name, sizeof(name), "sid-scanout-d%d-p%u", d->id, i);
            guest[i] = make_memfd(name, g->data, g->len, err, errlen);
            if (guest[i] < 0) {
                ret = SID_ERR_SYS;
                goto out;
            }
        }
        int src = g->separate_fds ? guest[i] : guest[0];
        buf->fds[i] = fcntl(src, F_DUPFD_CLOEXEC, 0);
        if (buf->fds[i] < 0) {
            sid_set_err(err, errlen, "dup: %s", g_strerror(errno));
            ret = SID_ERR_SYS;
            goto out;
        }
    }
    sid_display_do_scanout(d, buf);
    sid_log_add(&d->srv->log, SID_EV_SCANOUT, d->id, 0, buf->width, buf->height,
                buf->num_planes, buf->fourcc,
                "%s %ux%u stride=%u fourcc=0x%08x y0_top=%d",
                buf->scanout2 ? "gl_scanout2" : "gl_scanout", buf->width,
                buf->height, buf->strides[0], buf->fourcc, buf->y0_top);
    pthread_mutex_lock(&d->srv->lock);
    keep_buffer(d, guest[0], buf->strides[0]);
    pthread_mutex_unlock(&d->srv->lock);
    for (uint32_t i = 0; i < buf->num_planes; i++) {
        buf->fds[i] = -1;   /* owned by spice-server now */
    }
out:
    for (int i = 0; i < SID_MAX_PLANES; i++) {
        if (buf->fds[i] >= 0) {
            close(buf->fds[i]);
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
                        uint32_t fourcc, bool y0_top,
                        char *err, size_t errlen)
{
    if ((uint64_t)stride * height > len) {
        sid_set_err(err, errlen, "buffer of %zu bytes is smaller than stride %u x"
                " height %u", len, stride, height);
        return SID_ERR_ARG;
    }
    sid_display *d = sid_display_get(srv, display, err, errlen);
    if (!d) {
        return SID_ERR_ARG;
    }
    guest_buffer g = { .data = data, .len = len };
    sid_dmabuf buf = { .strides = { stride }, .num_planes = 1, .width = width,
                       .height = height, .fourcc = fourcc, .y0_top = y0_top };
    return scanout_guest_buffer(d, &g, &buf, err, errlen);
}

int sid_display_scanout2(sid_server *srv, int display,
                         const uint8_t *data, size_t len,
                         uint32_t width, uint32_t height,
                         const uint32_t *offsets, const uint32_t *strides,
                         uint32_t num_planes, uint32_t fourcc,
                         uint64_t modifier, bool y0_top, bool separate_fds,
                         char *err, size_t errlen)
{
    sid_display *d = sid_display_get(srv, display, err, errlen);
    if (!d) {
        return SID_ERR_ARG;
    }
    guest_buffer g = { .data = data, .len = len, .separate_fds = separate_fds };
    sid_dmabuf buf = { .num_planes = num_planes, .width = width, .height = height,
                       .fourcc = fourcc, .modifier = modifier, .y0_top = y0_top,
                       .scanout2 = true };
    /* more than SID_MAX_PLANES is refused by scanout_guest_buffer() */
    for (uint32_t i = 0; i < num_planes && i < SID_MAX_PLANES; i++) {
        buf.offsets[i] = offsets[i];
        buf.strides[i] = strides[i];
    }
    return scanout_guest_buffer(d, &g, &buf, err, errlen);
}

int sid_display_scanout_disable(sid_server *srv, int display, bool qemu_10_1,
                                char *err, size_t errlen)
{
    sid_display *d = sid_display_get(srv, display, err, errlen);
    if (!d) {
        return SID_ERR_ARG;
    }
    sid_dmabuf buf = { .num_planes = 0, .fourcc = 0 /* DRM_FORMAT_INVALID */,
                       .modifier = DRM_FORMAT_MOD_INVALID, .scanout2 = qemu_10_1,
                       .no_arrays = qemu_10_1 };
    for (int i = 0; i < SID_RAW_MAX_PLANES; i++) {
        buf.fds[i] = -1;
    }
    sid_display_do_scanout(d, &buf);
    sid_log_add(&d->srv->log, SID_EV_SCANOUT, d->id, 0, 0, 0, 0, 0,
                "scanout disable (%s)", qemu_10_1 ?
                "QEMU 10.1: gl_scanout2, 0 planes, no arrays" : "gl_scanout, fd -1, 0x0");
    return SID_OK;
}

int sid_display_draw(sid_server *srv, int display,
                     uint32_t x, uint32_t y, uint32_t w, uint32_t h,
                     uint64_t *cookie, char *err, size_t errlen)
{
    sid_display *d = sid_display_get(srv, display, err, errlen);
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
    sid_display *d = sid_display_get(srv, display, NULL, 0);
    if (!d) {
        return SID_ERR_ARG;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    int ret;
    pthread_mutex_lock(&srv->lock);
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
        if (pthread_cond_timedwait(&srv->cond, &srv->lock, &deadline) == ETIMEDOUT) {
            ret = g_hash_table_contains(d->completed, &cookie) ? SID_OK
                                                               : SID_ERR_TIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&srv->lock);
    return ret;
}

bool sid_display_draw_pending(sid_server *srv, int display)
{
    sid_display *d = sid_display_get(srv, display, NULL, 0);
    if (!d) {
        return false;
    }
    pthread_mutex_lock(&srv->lock);
    bool pending = d->pending_cookie != 0;
    pthread_mutex_unlock(&srv->lock);
    return pending;
}

void sid_test_async_complete(sid_server *srv, int display, uint64_t cookie)
{
    sid_display *d = sid_display_get(srv, display, NULL, 0);
    if (d) {
        complete_args a = { .d = d, .cookie = cookie };
        sid_core_call(&srv->core, do_fake_complete, &a);
    }
}

int sid_display_rewrite_on_complete(sid_server *srv, int display,
                                    const uint8_t *data, size_t len,
                                    char *err, size_t errlen)
{
    sid_display *d = sid_display_get(srv, display, err, errlen);
    if (!d) {
        return SID_ERR_ARG;
    }
    if (!data || len == 0) {
        sid_set_err(err, errlen, "rewrite_on_complete: no data");
        return SID_ERR_ARG;
    }
    pthread_mutex_lock(&srv->lock);
    g_free(d->rewrite);
    d->rewrite = g_memdup2(data, len);
    d->rewrite_len = len;
    pthread_mutex_unlock(&srv->lock);
    return SID_OK;
}
