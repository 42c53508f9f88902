/* sid_races.h - the control block libsid-races.so shares with the test
 * process: a file in /dev/shm named by $SID_RACES_SHM, created and mapped by
 * python/spice_initial_draw/races.py.  The part between CDEF-BEGIN and
 * CDEF-END is the ABI: csrc/gen_abi.py generates spice_initial_draw's
 * _races_abi.py (ctypes structures, RaceKind, the constants) from it, so
 * keep it free of anything cffi's C parser does not understand.
 */
#ifndef SID_RACES_H
#define SID_RACES_H

#include <stdint.h>

/* CDEF-BEGIN */
#define SID_RACES_MAGIC 0x52444953    /* "SIDR" */
#define SID_RACES_VERSION 1
#define MAX_POINTS 64
#define MAX_EVENTS 16384

typedef struct {
    char name[48];
    int32_t armed;        /* hits still to park (written by Python) */
    uint32_t hits;        /* every pass through the point */
    uint32_t parked;      /* threads parked so far (tickets) */
    uint32_t released;    /* tickets released so far (written by Python) */
    int32_t last_tid;
    char last_thread[16];
    uint32_t inflight;    /* threads between reading armed and taking a
                             ticket: Python disarms, waits for 0, then
                             releases every ticket taken */
} sid_point;

typedef struct {
    uint32_t seq;         /* index + 1 once the record is complete */
    int32_t kind;
    int64_t t_ns;
    int32_t fd, fd2;
    uint64_t ino, ino2;
    int32_t tid;
    char thread[16];
    char what[60];
} sid_revent;

typedef struct {
    uint32_t magic, version, ctl_size;
    uint32_t n_points;         /* written by Python */
    uint32_t n_events;
    uint32_t park_timeout_ms;  /* written by Python */
    uint32_t n_violations;
    uint32_t any_armed;        /* written by Python: 0 = fast path */
    uint32_t reuse_fill;       /* written by Python: 0 = off; else byte + 1:
                                  when a fd is closed while a GstMemory
                                  wraps it, put a new memfd filled with
                                  that byte at the same number at once */
    uint32_t pad;
    sid_point points[MAX_POINTS];
    sid_revent events[MAX_EVENTS];
} sid_ctl;

/* Event kinds of the ledger (Python: RaceKind); violations from 100 on. */
enum {
    EV_GIVEN = 1,        /* QEMU gave spice fd (ino) in a scanout */
    EV_CLOSE = 2,        /* a ledger fd was closed (what = owner) */
    EV_DUP = 3,          /* dup of a fd QEMU gave spice: fd -> fd2 */
    EV_ALLOC = 4,        /* GstMemory made of fd (ino), fd2 = 1 if DONT_CLOSE */
    EV_MAP = 5,          /* GStreamer mapped a ledger fd, inode as allocated */
    EV_RELEASE = 6,      /* GStreamer released the GstMemory of fd */
    EV_PARK = 7,
    EV_UNPARK = 8,
    EV_DRAW = 9,         /* QEMU: spice_qxl_gl_draw_async, fd = display */
    EV_SCANOUT_DONE = 10,/* QEMU: spice_qxl_gl_scanout returned */
    EV_PULLED = 11,      /* spice pulled an encoded sample */
    EV_REUSED_BY = 12,   /* the race library itself put a memfd at fd */
    EV_FCNTL = 13,       /* fcntl() of fd (ino), fd2 = cmd, ino2 = 1 if
                            made inside spice_qxl_gl_scanout{,2} (by spice,
                            on QEMU's thread), else 0 (only F_DUPFD_CLOEXEC
                            is recorded there: the shim's dup of a scanout) */
    EV_PARK_TIMEOUT = 50,
    EV_USE_AFTER_CLOSE = 100, /* GStreamer mapped a closed fd */
    EV_REUSED_FD = 101,       /* ... whose number now names another file */
    EV_CLOSED_IN_USE = 102    /* a fd was closed while a GstMemory used it */
};
/* CDEF-END */

#endif
