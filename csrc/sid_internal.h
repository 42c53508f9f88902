/*
 * sid_internal.h - types shared between the shim's source files.
 *
 * Layout: one responsibility per file.
 *   sid_log.c      event log (thread-safe, monotonic timestamps), error
 *                  messages
 *   sid_core.c     SpiceCoreInterface on a GMainContext running on its own
 *                  thread (QEMU's main loop) + marshalling of calls onto it
 *   sid_display.c  one QXL instance per display: QXLInterface callbacks,
 *                  scanouts from memfds, draws, cookies, the 1 s warning;
 *                  the display entry points, marshalled onto the core thread
 *   sid_refresh.c  QEMU 10.1's remote GL mode: updates, the refresh tick
 *   sid_server.c   spice server setup/teardown, port choice, ticket
 *   sid_info.c     library path / version helpers
 *   sid_bad_scanout.c  raw (possibly invalid) scanouts: fds of every kind
 *                  QEMU could pass, unchecked geometry, for the bad-input
 *                  tests
 *
 * All state lives in a sid_server context.  The only process-wide state
 * is the pointer to the live server (SpiceCoreInterface callbacks carry no
 * user data): see sid_core.c.  It is reset by sid_server_free().
 */
#ifndef SID_INTERNAL_H
#define SID_INTERNAL_H

#include <glib.h>
#include <spice.h>
#include "sid_shim.h"

#define SID_MAX_DISPLAYS 8
#define SID_DRAW_WARN_MS 1000   /* QEMU: "no gl-draw-done within one second" */

/* ---- event log ---------------------------------------------------- */
typedef struct sid_log {
    GMutex lock;
    GArray *events;             /* of sid_event */
    int fatal_count;
} sid_log;

/* Format an error message for the caller's (err, errlen) buffer, if any. */
void sid_set_err(char *err, size_t errlen, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

void sid_log_init(sid_log *log);
void sid_log_clear(sid_log *log);
void sid_log_add(sid_log *log, int kind, int display, uint64_t cookie,
                 int64_t a, int64_t b, int64_t c, int64_t d,
                 const char *fmt, ...) G_GNUC_PRINTF(9, 10);
size_t sid_log_len(sid_log *log);
int sid_log_copy(sid_log *log, size_t index, sid_event *out);
int sid_log_fatal_count(sid_log *log);

/* ---- core loop ---------------------------------------------------- */
typedef struct sid_core {
    SpiceCoreInterface iface;   /* handed to spice_server_init() */
    GMainContext *ctx;
    GMainLoop *loop;
    GThread *thread;
    sid_log *log;
} sid_core;

int sid_core_start(sid_core *core, sid_log *log);
void sid_core_stop(sid_core *core);
/* Run fn(data) on the core thread and wait for it to return. */
void sid_core_call(sid_core *core, void (*fn)(void *), void *data);
/* Process-wide pointer used by the SpiceCoreInterface callbacks. */
void sid_core_set_current(sid_core *core);

/* ---- displays ----------------------------------------------------- */
typedef struct sid_display {
    QXLInstance qxl;            /* first member: container_of is a cast */
    struct sid_server *srv;
    int id;
    int have_scanout;
    uint64_t next_seq;
    uint64_t pending_cookie;    /* 0: no draw outstanding */
    int64_t pending_since_ns;
    GSource *warn_timer;
    GHashTable *completed;      /* cookies already completed */
    uint8_t *rewrite;           /* armed rewrite at completion, or NULL */
    size_t rewrite_len;
    int rewrite_fd;             /* the current scanout's memfd while armed */
    uint32_t width, height;     /* of the current scanout (QEMU's surface) */
    unsigned gl_updates;        /* guest updates since the last refresh draw */
    GSource *refresh_timer;     /* QEMU 10.1 remote mode: the refresh tick */
} sid_display;

void sid_display_init(sid_display *d, struct sid_server *srv, int id);
void sid_display_cleanup(sid_display *d);
/* The display of a public call, or NULL with a message in err. */
sid_display *sid_display_get(struct sid_server *srv, int display, char *err,
                             size_t errlen);
/* sid_refresh.c: stop QEMU 10.1's refresh tick (core thread) */
void sid_refresh_stop(sid_display *d);
extern const QXLInterface sid_qxl_interface;
/* called from any thread; marshal onto the core thread */
int sid_display_do_scanout(sid_display *d, const int *fds, uint32_t width,
                           uint32_t height, const uint32_t *offsets,
                           const uint32_t *strides, uint32_t num_planes,
                           uint32_t fourcc, uint64_t modifier, int y0_top,
                           int single);
/* Raw scanout (sid_bad_scanout.c): fds/offsets/strides have SID_RAW_MAX_PLANES
 * entries; num_planes is passed to spice unchecked. */
void sid_display_do_scanout_raw(sid_display *d, int use_scanout2,
                                const int *fds, uint32_t width,
                                uint32_t height, const uint32_t *offsets,
                                const uint32_t *strides, uint32_t num_planes,
                                uint32_t fourcc, uint64_t modifier, int y0_top);
/* Keep a dup of the scanout's memfd if a rewrite is armed (srv->lock). */
void sid_display_keep_buffer(sid_display *d, int guest_fd);
int sid_display_do_draw(sid_display *d, uint32_t x, uint32_t y, uint32_t w,
                        uint32_t h, uint64_t *cookie);
void sid_display_fake_complete(sid_display *d, uint64_t cookie);

/* ---- server ------------------------------------------------------- */
struct sid_server {
    sid_core core;
    sid_log log;
    SpiceServer *spice;
    int port;
    int tls_port;
    int n_displays;
    sid_display displays[SID_MAX_DISPLAYS];
    GMutex lock;                /* draw state of all displays */
    GCond cond;                 /* signalled on every draw completion */
    int stopping;
};

#endif
