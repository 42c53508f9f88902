/*
 * sid_shim.h - public API of the QEMU-like spice-server driver ("shim").
 *
 * Everything between CDEF-BEGIN and CDEF-END is fed verbatim to
 * cffi's FFI.cdef() by gen_ffi.py, so keep that part free of preprocessor
 * directives and of anything cffi's C parser does not understand.
 *
 * All functions are thread-safe.  The spice_qxl_* and spice_server_* calls
 * they lead to are made on the shim's core-loop thread (the equivalent of
 * QEMU's main loop), whatever thread calls the shim.
 */
#ifndef SID_SHIM_H
#define SID_SHIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CDEF-BEGIN */
typedef struct sid_server sid_server;

/* Event kinds of the event log. */
enum {
    SID_EV_SERVER_STARTED = 1,   /* a = port */
    SID_EV_SCANOUT = 2,          /* display, a = width, b = height, c = planes, d = fourcc */
    SID_EV_DRAW = 3,             /* display, cookie, a..d = x, y, w, h */
    SID_EV_DRAW_DONE = 4,        /* display, cookie, a = latency in ns */
    SID_EV_WARNING = 5,          /* display, cookie, text */
    SID_EV_FATAL = 6,            /* display, cookie, text: QEMU would crash here */
    SID_EV_CLIENT_CONNECT = 7,   /* display, a = first 4 display-cap bytes, via set_client_capabilities */
    SID_EV_CLIENT_DISCONNECT = 8,/* display, via set_client_capabilities(client_present = 0) */
    SID_EV_CHANNEL = 9,          /* a = SID_CHANNEL_EVENT_*, b = channel type, c = channel id, d = connection id */
    SID_EV_SERVER_STOPPED = 10,
    SID_EV_MIGRATE_CONNECTED = 11, /* source: migrate_connect_complete */
    SID_EV_MIGRATE_END_DONE = 12,  /* source: migrate_end_complete */
    SID_EV_RUNSTATE = 13           /* a = 1: spice_server_vm_start, 0: vm_stop */
};

/* spice.h's SPICE_CHANNEL_EVENT_* and spice/enums.h's display channel type,
 * as SID_EV_CHANNEL records them (sid_core.c checks they are equal). */
enum {
    SID_CHANNEL_EVENT_CONNECTED = 1,
    SID_CHANNEL_EVENT_INITIALIZED = 2,
    SID_CHANNEL_EVENT_DISCONNECTED = 3
};
enum {
    SID_CHANNEL_TYPE_DISPLAY = 2
};

/* Error codes returned by the functions below (negative values). */
enum {
    SID_OK = 0,
    SID_ERR_ARG = -1,            /* invalid argument */
    SID_ERR_BUSY = -2,           /* a draw is outstanding on this display */
    SID_ERR_NO_SCANOUT = -3,     /* draw without a scanout */
    SID_ERR_SYS = -4,            /* system call failed (errno in message) */
    SID_ERR_SPICE = -5,          /* spice-server refused */
    SID_ERR_TIMEOUT = -6,        /* wait timed out */
    SID_ERR_STOPPED = -7         /* the server was stopped */
};

/* File descriptor kinds of sid_display_scanout_raw(). */
enum {
    SID_FD_MEMFD = 0,
    SID_FD_VALUE = 1,
    SID_FD_CLOSED = 2,
    SID_FD_PIPE = 3,
    SID_FD_SOCKET = 4
};
enum { SID_RAW_MAX_PLANES = 8 };

typedef struct {
    int64_t t_ns;        /* CLOCK_MONOTONIC, nanoseconds */
    int32_t kind;        /* SID_EV_* */
    int32_t display;     /* -1 when not display-specific */
    uint64_t cookie;
    int64_t a, b, c, d;
    char text[200];
} sid_event;

/* Create and start a server: core loop thread, spice server on 127.0.0.1
 * with a free TCP port, no ticket, video codecs `codecs`, `n_displays`
 * QXL instances.  NULL on failure with a message in err. */
sid_server *sid_server_new(const char *codecs, int n_displays,
                           char *err, size_t errlen);
/* The same, listening on the unix socket `unix_path` only (QEMU's
 * -spice unix=on,addr=PATH, the only way QEMU offers gl=on): no TCP port
 * (sid_server_port() is 0).  A local client there that advertises
 * SPICE_DISPLAY_CAP_GL_SCANOUT gets the scanout's fd (GL_SCANOUT_UNIX);
 * unix_path NULL: same as sid_server_new(). */
sid_server *sid_server_new_unix(const char *codecs, int n_displays,
                                const char *unix_path,
                                char *err, size_t errlen);
/* How QEMU secures -spice for a remote user (ui/spice-core.c): tls-port=
 * with x509 files and tls-ciphers=, a password (a ticket), and whether the
 * plain port= is open as well.  Paths are PEM files; NULL: not set. */
typedef struct {
    const char *ca_file, *cert_file, *key_file; /* all NULL: no TLS port */
    const char *ciphers;        /* NULL: spice-server's default */
    bool plain_port;            /* also listen on a plain TCP port */
    const char *password;       /* NULL: disable-ticketing */
    int ticket_lifetime;        /* seconds; 0: never expires */
} sid_security;
/* The same as sid_server_new(), secured by `sec` (NULL: as
 * sid_server_new()); with a TLS port and no plain port, sid_server_port()
 * is 0. */
sid_server *sid_server_new_secure(const char *codecs, int n_displays,
                                  const sid_security *sec,
                                  char *err, size_t errlen);
/* QEMU's -spice seamless-migration=on and -incoming (sid_migrate.c). */
typedef struct {
    bool seamless;              /* spice_server_set_seamless_migration(1) before init */
    bool incoming;              /* a migration target: the VM does not run (no
                                 * spice_server_vm_start) until
                                 * sid_server_set_running(srv, true) */
} sid_migration;
/* sid_server_new_unix() or sid_server_new_secure() (unix_path NULL), with
 * QEMU's migration settings `mig` (NULL: QEMU's defaults, seamless off). */
sid_server *sid_server_new_migratable(const char *codecs, int n_displays,
                                      const char *unix_path,
                                      const sid_security *sec,
                                      const sid_migration *mig,
                                      char *err, size_t errlen);
/* The source side of a migration, as ui/spice-core.c does it:
 * client_migrate_info (spice_server_migrate_connect; SID_EV_MIGRATE_CONNECTED
 * once the client connected to the target), the migration's setup
 * (spice_server_migrate_start) and its end (spice_server_migrate_end;
 * SID_EV_MIGRATE_END_DONE once spice is done). */
int sid_server_migrate_info(sid_server *srv, const char *host, int port,
                            int tls_port, const char *subject,
                            char *err, size_t errlen);
int sid_server_migrate_start(sid_server *srv, char *err, size_t errlen);
int sid_server_migrate_end(sid_server *srv, bool completed, char *err,
                           size_t errlen);
/* The VM's run state (vm_change_state_handler): spice_server_vm_start or
 * spice_server_vm_stop; the source stops before migrate_end, the target
 * starts once the incoming migration is loaded. */
int sid_server_set_running(sid_server *srv, bool running, char *err,
                           size_t errlen);
/* QEMU's set_password / expire_password: spice_server_set_ticket(), from
 * QEMU's main loop.  password NULL: no ticket is valid any more. */
int sid_server_set_ticket(sid_server *srv, const char *password, int lifetime,
                          char *err, size_t errlen);
/* QEMU 10.1's remote GL mode (sid_refresh.c): from now on each display
 * draws only from its refresh tick, max_refresh_rate times a second, when
 * the guest updated it (sid_display_update()); 0 stops the ticks. */
int sid_server_set_refresh_rate(sid_server *srv, int max_refresh_rate,
                                char *err, size_t errlen);
/* spice_gl_update(): the guest updated the display (QEMU counts updates;
 * the next refresh tick draws the whole surface). */
int sid_display_update(sid_server *srv, int display, char *err, size_t errlen);
/* Stop the server and free everything (closes the listening socket). */
void sid_server_free(sid_server *srv);
int sid_server_port(sid_server *srv);
int sid_server_tls_port(sid_server *srv);
int sid_server_n_displays(sid_server *srv);

/* Scanout from a memfd holding `len` bytes copied from data (stand-in for a
 * DMA-BUF).  Single plane: spice_qxl_gl_scanout(dup(fd), ...). */
int sid_display_scanout(sid_server *srv, int display,
                        const uint8_t *data, size_t len,
                        uint32_t width, uint32_t height, uint32_t stride,
                        uint32_t fourcc, bool y0_top,
                        char *err, size_t errlen);
/* Multi-plane: spice_qxl_gl_scanout2.  Plane i is at offsets[i] with
 * strides[i] inside `data`; with separate_fds each plane gets its own
 * memfd (holding the whole buffer), otherwise every plane is a dup() of
 * one memfd, as for a single multi-plane DMA-BUF. */
int sid_display_scanout2(sid_server *srv, int display,
                         const uint8_t *data, size_t len,
                         uint32_t width, uint32_t height,
                         const uint32_t *offsets, const uint32_t *strides,
                         uint32_t num_planes, uint32_t fourcc,
                         uint64_t modifier, bool y0_top, bool separate_fds,
                         char *err, size_t errlen);
/* QEMU's scanout disable, as QEMU makes it: with qemu_10_1 false,
 * qemu_spice_gl_scanout_disable before 10.1, spice_qxl_gl_scanout(-1, 0, 0,
 * 0, 0, false); true, QEMU 10.1's spice_server_gl_scanout(NULL, 0, 0, NULL,
 * NULL, 0, DRM_FORMAT_INVALID, DRM_FORMAT_MOD_INVALID, false), which is
 * spice_qxl_gl_scanout2 with 0 planes and no arrays. */
int sid_display_scanout_disable(sid_server *srv, int display, bool qemu_10_1,
                                char *err, size_t errlen);
/* Raw scanout: the fields exactly as a (buggy or hostile) device model
 * could pass them, for the bad-input tests.  Each of the `n` plane slots
 * (n <= SID_RAW_MAX_PLANES) gets a file descriptor of kind fd_kinds[i]:
 *   SID_FD_MEMFD   a dup() of one memfd of memfd_size bytes (ftruncate,
 *                  sparse) holding data[0..min(len, memfd_size)), shared by
 *                  every MEMFD slot as one multi-plane DMA-BUF;
 *   SID_FD_VALUE   raw_fds[i] passed as is (e.g. -1);
 *   SID_FD_CLOSED  a number that is not an open fd in this process;
 *   SID_FD_PIPE    a dup() of the read end of a pipe (not mappable);
 *   SID_FD_SOCKET  a dup() of one end of a socketpair (not mappable).
 * num_planes is passed unchecked (0, or more than n, is allowed: the
 * arrays spice-server gets are SID_RAW_MAX_PLANES long whatever n is).
 * use_scanout2 false: spice_qxl_gl_scanout(fd[0], width, height,
 * strides[0], fourcc, y0_top); true: spice_qxl_gl_scanout2 with all the
 * fields.  spice owns the fds it is given (it closes them), as with a good
 * scanout. */
int sid_display_scanout_raw(sid_server *srv, int display, bool use_scanout2,
                            const uint8_t *data, size_t len,
                            uint64_t memfd_size,
                            const int32_t *fd_kinds, const int32_t *raw_fds,
                            const uint32_t *offsets, const uint32_t *strides,
                            uint32_t n, uint32_t num_planes,
                            uint32_t width, uint32_t height, uint32_t fourcc,
                            uint64_t modifier, bool y0_top,
                            char *err, size_t errlen);
/* spice_qxl_gl_draw_async with a fresh cookie, stored in *cookie.
 * SID_ERR_BUSY while a draw is outstanding (QEMU blocks its console). */
int sid_display_draw(sid_server *srv, int display,
                     uint32_t x, uint32_t y, uint32_t w, uint32_t h,
                     uint64_t *cookie, char *err, size_t errlen);
/* Wait until the draw with `cookie` is completed through async_complete.
 * SID_OK, SID_ERR_TIMEOUT, SID_ERR_ARG (unknown cookie). */
int sid_display_wait_draw(sid_server *srv, int display, uint64_t cookie,
                          int timeout_ms);
/* Whether a draw is outstanding on the display. */
bool sid_display_draw_pending(sid_server *srv, int display);
/* Test hook: call the QXLInterface.async_complete callback as
 * spice-server would, with any cookie (to exercise the fatal-error path). */
void sid_test_async_complete(sid_server *srv, int display, uint64_t cookie);
/* Test hook, the sanitizers' positive control (the shim is not built with
 * them: the misuse goes through memset(), which their runtimes intercept).
 * SID_MISUSE_RACE: QEMU's thread (the core thread) and a thread of its own
 * write one buffer with nothing ordering the two (TSan: a data race).
 * SID_MISUSE_USE_AFTER_FREE: QEMU's thread writes a freed block (ASan:
 * heap-use-after-free, which aborts the process). */
enum { SID_MISUSE_RACE = 1, SID_MISUSE_USE_AFTER_FREE = 2 };
void sid_test_misuse_memory(sid_server *srv, int what);
/* Test hook, the guest reusing its buffer: when the next draw on the
 * display completes, write `data` (len bytes) into the buffer of the
 * scanout that is current then, inside async_complete, before waiters
 * wake up.  Arm it before that scanout: the shim then keeps its own fd of
 * the scanout's memfd (QEMU keeps the guest's dmabuf) until the rewrite.
 * One-shot; logged as an SID_EV_WARNING "guest rewrote ...". */
int sid_display_rewrite_on_complete(sid_server *srv, int display,
                                    const uint8_t *data, size_t len,
                                    char *err, size_t errlen);

/* A guest that renders into its own buffer (sid_paint.c): from the next
 * scanout on, the shim keeps its fd of the scanout's memfd, as QEMU keeps
 * the guest's dmabuf, and sid_display_paint() fills rectangles of it in
 * place: n_rects quintuples of x, y, w, h and an XRGB8888 value, clipped
 * to the scanout (single plane, 4 bytes a pixel).  Paint between a draw's
 * completion and the next draw, as a guest renders into the buffer QEMU
 * let go of; the next scanout replaces the kept buffer. */
int sid_display_keep_buffer(sid_server *srv, int display, char *err,
                            size_t errlen);
int sid_display_paint(sid_server *srv, int display, const uint32_t *rects,
                      size_t n_rects, char *err, size_t errlen);

/* Event log: number of events, copy of event i (0 on success). */
size_t sid_log_count(sid_server *srv);
int sid_log_get(sid_server *srv, size_t index, sid_event *out);
/* Number of fatal errors recorded. */
int sid_fatal_count(sid_server *srv);

/* Absolute path of the loaded libspice-server (dladdr on spice_server_new),
 * and the version spice-server was compiled with (SPICE_SERVER_VERSION). */
const char *sid_spice_library_path(void);
uint32_t sid_spice_header_version(void);
int64_t sid_monotonic_ns(void);
/* The video codecs spice-server uses (spice_server_get_video_codecs, as
 * "encoder:codec;..."), copied into buf (truncated to len - 1 bytes);
 * returns the full length, or -1 before the server was started. */
int sid_server_video_codecs(sid_server *srv, char *buf, size_t len);
/* CDEF-END */

#endif
