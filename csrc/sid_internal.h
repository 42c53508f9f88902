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
 *   sid_migrate.c  the migration interface, migrate connect/start/end,
 *                  the VM's run state
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

#include <pthread.h>
#include <stdbool.h>
#include <glib.h>
#include <spice.h>
#include "sid_shim.h"

#define SID_MAX_DISPLAYS 8
#define SID_MAX_PLANES 4        /* QEMU's DMABUF_MAX_PLANES */
#define SID_DRAW_WARN_MS 1000   /* QEMU: "no gl-draw-done within one second" */

/* ---- event log ---------------------------------------------------- */
typedef struct sid_log {
    pthread_mutex_t lock;       /* pthread: see sid_server.lock */
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
    pthread_mutex_t call_lock;  /* sid_core_call's hand-off (sid_core.c) */
    pthread_cond_t call_done;
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
    bool have_scanout;
    uint64_t next_seq;
    uint64_t pending_cookie;    /* 0: no draw outstanding */
    int64_t pending_since_ns;
    GSource *warn_timer;
    GHashTable *completed;      /* cookies already completed */
    uint8_t *rewrite;           /* armed rewrite at completion, or NULL */
    size_t rewrite_len;
    int rewrite_fd;             /* the current scanout's memfd while armed,
                                 * or while the guest paints (keep_guest) */
    bool keep_guest;            /* keep rewrite_fd for sid_display_paint() */
    uint32_t guest_stride;      /* plane 0's stride of the kept buffer */
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

/* The shim's QemuDmaBuf: the fields of one spice_qxl_gl_scanout{,2} call.
 * SID_RAW_MAX_PLANES slots, so that a raw scanout can pass any num_planes
 * (sid_bad_scanout.c); a good one uses SID_MAX_PLANES at most. */
typedef struct sid_dmabuf {
    int fds[SID_RAW_MAX_PLANES];
    uint32_t offsets[SID_RAW_MAX_PLANES];
    uint32_t strides[SID_RAW_MAX_PLANES];
    uint32_t num_planes;
    uint32_t width, height, fourcc;
    uint64_t modifier;
    bool y0_top;
    bool scanout2;              /* spice_qxl_gl_scanout2, else plane 0 only */
    bool no_arrays;             /* scanout2 with NULL fds, offsets, strides */
} sid_dmabuf;

/* From any thread, run on the core thread: scan out buf (spice owns the fds
 * it was given from then on); draw with a fresh cookie. */
void sid_display_do_scanout(sid_display *d, const sid_dmabuf *buf);
int sid_display_do_draw(sid_display *d, uint32_t x, uint32_t y, uint32_t w,
                        uint32_t h, uint64_t *cookie);

/* ---- server ------------------------------------------------------- */
struct sid_server {
    sid_core core;
    sid_log log;
    SpiceServer *spice;
    int port;
    int tls_port;
    int n_displays;
    sid_display displays[SID_MAX_DISPLAYS];
    SpiceMigrateInstance migrate; /* QEMU's spice_migrate */
    bool running;               /* spice_server_vm_start called */
    /* pthread, not GMutex, in all of the shim: TSan sees pthread locks and
     * so what they order (a completion on spice's thread before the next
     * draw on the core thread, as QEMU's bottom half), not GLib's futexes */
    pthread_mutex_t lock;       /* draw state of all displays */
    pthread_cond_t cond;        /* signalled on every draw completion */
    bool stopping;
};

/* sid_migrate.c: add the migration interface (core thread, after
 * spice_server_init, as qemu_spice_init) */
int sid_migrate_add_interface(struct sid_server *srv);

#endif
