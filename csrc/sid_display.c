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
 * Runs on the core thread except the QXLInterface callbacks, which
 * spice-server may call from its worker thread (as in QEMU).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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
    close(d->rewrite_fd);
    d->rewrite_fd = -1;
}

void sid_display_keep_buffer(sid_display *d, int guest_fd)
{
    if (!d->rewrite) {
        return;
    }
    if (d->rewrite_fd >= 0) {
        close(d->rewrite_fd);
    }
    d->rewrite_fd = fcntl(guest_fd, F_DUPFD_CLOEXEC, 0);
}

static void iface_async_complete(QXLInstance *qin, uint64_t cookie)
{
    sid_display *d = to_display(qin);
    sid_server *srv = d->srv;
    int64_t now = sid_monotonic_ns();

    g_mutex_lock(&srv->lock);
    if (cookie != 0 && cookie == d->pending_cookie) {
        int64_t latency = now - d->pending_since_ns;
        /* logged before waiters wake up (lock order: srv->lock, log->lock) */
        sid_log_add(&srv->log, SID_EV_DRAW_DONE, d->id, cookie, latency, 0, 0, 0,
                    "gl-draw-done after %.1f ms", latency / 1e6);
        d->pending_cookie = 0;
        g_hash_table_add(d->completed, g_memdup2(&cookie, sizeof(cookie)));
        rewrite_buffer(d);
        g_cond_broadcast(&srv->cond);
        g_mutex_unlock(&srv->lock);
        return;
    }
    gboolean repeated = g_hash_table_contains(d->completed, &cookie);
    uint64_t pending = d->pending_cookie;
    g_mutex_unlock(&srv->lock);
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
    int fds[4];
    uint32_t width, height, offsets[4], strides[4], num_planes, fourcc;
    uint64_t modifier;
    int y0_top;
    int single;
} scanout_args;

static void do_scanout(void *p)
{
    scanout_args *a = p;
    sid_display *d = a->d;
    if (a->single) {
        spice_qxl_gl_scanout(&d->qxl, a->fds[0], a->width, a->height,
                             a->strides[0], a->fourcc, a->y0_top);
    } else {
        spice_qxl_gl_scanout2(&d->qxl, a->fds, a->width, a->height,
                              a->offsets, a->strides, a->num_planes,
                              a->fourcc, a->modifier, a->y0_top);
    }
    d->have_scanout = 1;
    d->width = a->width;
    d->height = a->height;
}

int sid_display_do_scanout(sid_display *d, const int *fds, uint32_t width,
                           uint32_t height, const uint32_t *offsets,
                           const uint32_t *strides, uint32_t num_planes,
                           uint32_t fourcc, uint64_t modifier, int y0_top,
                           int single)
{
    scanout_args a = { .d = d, .width = width, .height = height,
                       .num_planes = num_planes, .fourcc = fourcc,
                       .modifier = modifier, .y0_top = y0_top,
                       .single = single };
    for (uint32_t i = 0; i < num_planes; i++) {
        a.fds[i] = fds[i];
        a.offsets[i] = offsets[i];
        a.strides[i] = strides[i];
    }
    sid_core_call(&d->srv->core, do_scanout, &a);
    sid_log_add(&d->srv->log, SID_EV_SCANOUT, d->id, 0, width, height,
                num_planes, fourcc, "%s %ux%u stride=%u fourcc=0x%08x y0_top=%d",
                single ? "gl_scanout" : "gl_scanout2", width, height,
                strides[0], fourcc, y0_top);
    return SID_OK;
}

static gboolean warn_timer_cb(gpointer p)
{
    sid_display *d = p;
    sid_server *srv = d->srv;
    g_mutex_lock(&srv->lock);
    uint64_t pending = d->pending_cookie;
    g_mutex_unlock(&srv->lock);
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
    g_mutex_lock(&srv->lock);
    if (d->pending_cookie) {
        g_mutex_unlock(&srv->lock);
        a->ret = SID_ERR_BUSY;
        return;
    }
    uint64_t cookie = COOKIE_TAG | ((uint64_t)d->id << 40) | ++d->next_seq;
    d->pending_cookie = cookie;
    d->pending_since_ns = sid_monotonic_ns();
    g_mutex_unlock(&srv->lock);

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

static void do_fake_complete(void *p)
{
    void **args = p;
    sid_display *d = args[0];
    iface_async_complete(&d->qxl, *(uint64_t *)args[1]);
}

void sid_display_fake_complete(sid_display *d, uint64_t cookie)
{
    void *args[2] = { d, &cookie };
    sid_core_call(&d->srv->core, do_fake_complete, args);
}

/* ---- raw scanouts (sid_bad_scanout.c) -------------------------------- */
typedef struct {
    sid_display *d;
    int use_scanout2;
    const int *fds;
    const uint32_t *offsets, *strides;
    uint32_t width, height, num_planes, fourcc;
    uint64_t modifier;
    int y0_top;
} raw_scanout_args;

static void do_scanout_raw(void *p)
{
    raw_scanout_args *a = p;
    sid_display *d = a->d;
    if (!a->use_scanout2) {
        spice_qxl_gl_scanout(&d->qxl, a->fds[0], a->width, a->height,
                             a->strides[0], a->fourcc, a->y0_top);
    } else {
        spice_qxl_gl_scanout2(&d->qxl, a->fds, a->width, a->height,
                              a->offsets, a->strides, a->num_planes,
                              a->fourcc, a->modifier, a->y0_top);
    }
    /* QEMU believes it has a scanout whatever spice made of it, and draws */
    d->have_scanout = 1;
    d->width = a->width;
    d->height = a->height;
}

void sid_display_do_scanout_raw(sid_display *d, int use_scanout2,
                                const int *fds, uint32_t width,
                                uint32_t height, const uint32_t *offsets,
                                const uint32_t *strides, uint32_t num_planes,
                                uint32_t fourcc, uint64_t modifier, int y0_top)
{
    raw_scanout_args a = { .d = d, .use_scanout2 = use_scanout2, .fds = fds,
                           .offsets = offsets, .strides = strides,
                           .width = width, .height = height,
                           .num_planes = num_planes, .fourcc = fourcc,
                           .modifier = modifier, .y0_top = y0_top };
    sid_core_call(&d->srv->core, do_scanout_raw, &a);
    sid_log_add(&d->srv->log, SID_EV_SCANOUT, d->id, 0, width, height,
                num_planes, fourcc,
                "%s (raw) %ux%u stride=%u offset=%u planes=%u fourcc=0x%08x"
                " fd=%d y0_top=%d",
                use_scanout2 ? "gl_scanout2" : "gl_scanout", width, height,
                strides[0], offsets[0], num_planes, fourcc, fds[0], y0_top);
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

static int scanout_impl(sid_server *srv, int display, const uint8_t *data,
                        size_t len, uint32_t width, uint32_t height,
                        const uint32_t *offsets, const uint32_t *strides,
                        uint32_t num_planes, uint32_t fourcc, uint64_t modifier,
                        int y0_top, int separate_fds, int single,
                        char *err, size_t errlen)
{
    sid_display *d = sid_display_get(srv, display, err, errlen);
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

int sid_display_draw_pending(sid_server *srv, int display)
{
    sid_display *d = sid_display_get(srv, display, NULL, 0);
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
    sid_display *d = sid_display_get(srv, display, NULL, 0);
    if (d) {
        sid_display_fake_complete(d, cookie);
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
    g_mutex_lock(&srv->lock);
    g_free(d->rewrite);
    d->rewrite = g_memdup2(data, len);
    d->rewrite_len = len;
    g_mutex_unlock(&srv->lock);
    return SID_OK;
}
