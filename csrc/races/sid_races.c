/* sid_races: TEST-ONLY race points and fd ownership ledger, loaded into a
 * shim server process with LD_PRELOAD (never linked into anything, never
 * part of libspice-server).  See README.md next to this file.
 *
 * It interposes, at library boundaries only:
 *   - spice_qxl_gl_scanout{,2}, spice_qxl_gl_draw_async   (QEMU -> spice)
 *   - gst_dmabuf_allocator_alloc{,_with_flags}             (spice -> GStreamer)
 *   - gst_app_sink_pull_sample                             (spice -> GStreamer)
 *   - close, dup, mmap/mmap64, read, fcntl/fcntl64         (libc)
 * and keeps an fd ownership ledger (the fds QEMU gave spice, the fds
 * wrapped in a GstMemory, keyed by (fd, inode)) plus named park points
 * where the calling thread blocks until the test releases it.
 *
 * Control: a shared-memory block (file named by $SID_RACES_SHM, created
 * by python/spice_initial_draw/races.py; its layout is sid_races.h).
 * Parked threads poll it; no sockets, no extra thread.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "sid_races.h"

#define MAX_FD 4096

static sid_ctl *ctl;
static __thread bool in_scanout;   /* stock's scanout() calls scanout2() */
static pthread_mutex_t ledger_lock = PTHREAD_MUTEX_INITIALIZER;

/* A ledger fd and GStreamer: ALLOC -> WRAPPED; then RELEASE -> RELEASED,
 * CLOSE -> NONE, or CLOSE -> CLOSED_IN_USE (a violation), RELEASE -> NONE. */
typedef enum {
    GST_NONE,             /* no GstMemory wraps it (any more) */
    GST_WRAPPED,          /* a live GstMemory wraps it */
    GST_CLOSED_IN_USE,    /* closed while that memory is alive */
    GST_RELEASED,         /* the memory is gone, the fd still open */
} gst_state;

typedef struct {
    bool given;           /* QEMU gave it to spice in a scanout */
    gst_state gst;
    bool reported;        /* a bad map of this GstMemory was recorded */
    uint32_t gen;
    uint64_t ino_given, ino_gst;
} fd_entry;
static fd_entry fds[MAX_FD];
static bool tracked[MAX_FD];     /* fast, lock-free filter */
static uint32_t gen_counter;

/* ---- real functions ------------------------------------------------------ */
static int (*real_close)(int);
static int (*real_dup)(int);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static void *(*real_mmap64)(void *, size_t, int, int, int, off_t);
static ssize_t (*real_read)(int, void *, size_t);
static int (*real_fcntl)(int, int, ...);
static int (*real_fcntl64)(int, int, ...);

static void *next_sym(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (!p) {
        /* libraries dlopen()ed later (libspice-server is loaded by ctypes,
         * GStreamer by spice) */
        p = dlsym(RTLD_DEFAULT, name);
        Dl_info self, found;
        if (p && dladdr(p, &found) && dladdr((void *)next_sym, &self)
            && found.dli_fbase == self.dli_fbase) {
            p = NULL;
        }
    }
    return p;
}

static void *lib_sym(const char *lib, const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (p) {
        return p;
    }
    void *h = dlopen(lib, RTLD_NOW | RTLD_NOLOAD);
    if (!h) {
        h = dlopen(lib, RTLD_NOW | RTLD_GLOBAL);
    }
    return h ? dlsym(h, name) : NULL;
}

#define REAL(var, name) \
    do { if (!(var)) { (var) = (__typeof__(var))next_sym(name); } } while (0)

/* Declares `real`: the definition of fn (the function being interposed)
 * in lib, which may be loaded after this library; found on first use. */
#define LIB_REAL(lib, fn) \
    static __typeof__(fn) *real; \
    if (!real) { \
        real = (__typeof__(fn) *)lib_sym(lib, #fn); \
    }

#define SPICE_LIB "libspice-server.so.1"
#define SPICE_MAX_PLANES 4   /* fds spice_qxl_gl_scanout2 takes at most */
#define GST_ALLOCATORS_LIB "libgstallocators-1.0.so.0"
#define GST_APP_LIB "libgstapp-1.0.so.0"

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void thread_name(char out[16])
{
    memset(out, 0, 16);
    if (pthread_getname_np(pthread_self(), out, 16) != 0) {
        strcpy(out, "?");
    }
}

static bool is_thread(const char *name)
{
    char t[16];
    thread_name(t);
    return strcmp(t, name) == 0;
}

static void record(int kind, int fd, int fd2, uint64_t ino, uint64_t ino2,
                   const char *fmt, ...)
{
    if (!ctl) {
        return;
    }
    if (kind >= EV_USE_AFTER_CLOSE) {   /* the violations come last */
        __atomic_add_fetch(&ctl->n_violations, 1, __ATOMIC_SEQ_CST);
    }
    uint32_t i = __atomic_fetch_add(&ctl->n_events, 1, __ATOMIC_SEQ_CST);
    if (i >= MAX_EVENTS) {
        return;
    }
    sid_revent *e = &ctl->events[i];
    e->kind = kind;
    e->t_ns = now_ns();
    e->fd = fd;
    e->fd2 = fd2;
    e->ino = ino;
    e->ino2 = ino2;
    e->tid = (int32_t)syscall(SYS_gettid);
    thread_name(e->thread);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->what, sizeof(e->what), fmt ? fmt : "", ap);
    va_end(ap);
    __atomic_store_n(&e->seq, i + 1, __ATOMIC_RELEASE);
}

/* ---- park points -------------------------------------------------------- */
static void point(const char *name)
{
    if (!ctl || !__atomic_load_n(&ctl->any_armed, __ATOMIC_ACQUIRE)) {
        return;
    }
    uint32_t n = __atomic_load_n(&ctl->n_points, __ATOMIC_ACQUIRE);
    if (n > MAX_POINTS) {
        n = MAX_POINTS;
    }
    sid_point *p = NULL;
    for (uint32_t i = 0; i < n; i++) {
        if (strncmp(ctl->points[i].name, name, sizeof(ctl->points[i].name)) == 0) {
            p = &ctl->points[i];
            break;
        }
    }
    if (!p) {
        return;
    }
    __atomic_add_fetch(&p->hits, 1, __ATOMIC_SEQ_CST);
    /* Claiming an arm and taking a ticket are two steps: a park that ends
     * in between would release the tickets taken so far and miss ours.
     * inflight covers the gap; Python waits for it to drain. */
    __atomic_add_fetch(&p->inflight, 1, __ATOMIC_SEQ_CST);
    int32_t a = __atomic_load_n(&p->armed, __ATOMIC_SEQ_CST);
    do {
        if (a <= 0) {
            __atomic_sub_fetch(&p->inflight, 1, __ATOMIC_SEQ_CST);
            return;
        }
    } while (!__atomic_compare_exchange_n(&p->armed, &a, a - 1, 0,
                                          __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    p->last_tid = (int32_t)syscall(SYS_gettid);
    thread_name(p->last_thread);
    uint32_t ticket = __atomic_add_fetch(&p->parked, 1, __ATOMIC_SEQ_CST);
    __atomic_sub_fetch(&p->inflight, 1, __ATOMIC_SEQ_CST);
    record(EV_PARK, -1, (int)ticket, 0, 0, "%s", name);
    uint32_t timeout = __atomic_load_n(&ctl->park_timeout_ms, __ATOMIC_RELAXED);
    int64_t deadline = now_ns() + (int64_t)(timeout ? timeout : 10000) * 1000000;
    while (__atomic_load_n(&p->released, __ATOMIC_ACQUIRE) < ticket) {
        if (now_ns() > deadline) {
            record(EV_PARK_TIMEOUT, -1, (int)ticket, 0, 0, "%s", name);
            return;
        }
        struct timespec ts = { 0, 100000 };
        nanosleep(&ts, NULL);
    }
    record(EV_UNPARK, -1, (int)ticket, 0, 0, "%s", name);
}

/* ---- ledger ------------------------------------------------------------- */
static uint64_t fd_ino(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return 0;
    }
    return (uint64_t)st.st_ino;
}

static void fd_target(int fd, char *out, size_t len)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, out, len - 1);
    out[n > 0 ? n : 0] = '\0';
}

static void ledger_given(int fd)
{
    if (fd < 0 || fd >= MAX_FD) {
        return;
    }
    uint64_t ino = fd_ino(fd);
    pthread_mutex_lock(&ledger_lock);
    fds[fd].given = true;
    fds[fd].ino_given = ino;
    tracked[fd] = true;
    pthread_mutex_unlock(&ledger_lock);
    record(EV_GIVEN, fd, -1, ino, 0, "scanout fd");
}

static bool gst_alive(const fd_entry *e)
{
    return e->gst == GST_WRAPPED || e->gst == GST_CLOSED_IN_USE;
}

static bool ledger_close(int fd)
{
    if (fd < 0 || fd >= MAX_FD || !__atomic_load_n(&tracked[fd], __ATOMIC_RELAXED)) {
        return false;
    }
    uint64_t ino = fd_ino(fd);
    bool violation = false, was_given = false, was_gst = false;
    uint64_t gst_ino = 0;
    pthread_mutex_lock(&ledger_lock);
    fd_entry *e = &fds[fd];
    if (ino != e->ino_given && ino != e->ino_gst) {
        /* the number now names an unrelated file */
        pthread_mutex_unlock(&ledger_lock);
        return false;
    }
    if (e->given) {
        was_given = true;
        e->given = false;
    }
    if (e->gst != GST_NONE) {
        was_gst = true;
        gst_ino = e->ino_gst;
        if (gst_alive(e) && e->ino_gst == ino) {
            e->gst = GST_CLOSED_IN_USE;
            violation = true;
        } else if (e->gst == GST_RELEASED) {
            e->gst = GST_NONE;
        }
    }
    tracked[fd] = e->given || e->gst != GST_NONE;
    pthread_mutex_unlock(&ledger_lock);
    if (violation) {
        record(EV_CLOSED_IN_USE, fd, -1, ino, gst_ino,
               "closed while GStreamer's GstMemory still wraps it");
    } else if (was_given || was_gst) {
        record(EV_CLOSE, fd, -1, ino, 0, "%s", was_given ? "scanout fd"
                                                    : "GStreamer's fd");
    }
    return violation;
}

/* After a fd was closed in use: hand its number to a new memfd at once,
 * as the next guest buffer (or anything else) could take it. */
static void reuse_number(int fd, off_t size, int fill)
{
    int m = memfd_create("sid-races-reuse", MFD_CLOEXEC);
    if (m < 0) {
        return;
    }
    if (size > 0 && ftruncate(m, size) == 0) {
        char buf[65536];
        memset(buf, fill, sizeof(buf));
        for (off_t off = 0; off < size; off += (off_t)sizeof(buf)) {
            size_t n = (size_t)(size - off) < sizeof(buf) ? (size_t)(size - off) : sizeof(buf);
            if (pwrite(m, buf, n, off) < 0) {
                break;
            }
        }
    }
    if (m != fd) {
        if (fcntl(fd, F_GETFD) < 0 && dup3(m, fd, O_CLOEXEC) == fd) {
            real_close(m);
        } else {
            real_close(m);
            return;
        }
    }
    record(EV_REUSED_BY, fd, -1, fd_ino(fd), 0, "new memfd took the number");
}

typedef struct { int fd; uint32_t gen; } weak_data;

static void gst_released(void *data, void *obj)
{
    (void)obj;
    weak_data *w = data;
    point("gst:release");
    pthread_mutex_lock(&ledger_lock);
    fd_entry *e = &fds[w->fd];
    if (e->gst != GST_NONE && e->gen == w->gen) {
        if (e->gst == GST_CLOSED_IN_USE) {
            e->gst = GST_NONE;
            tracked[w->fd] = e->given;
        } else {
            e->gst = GST_RELEASED;
        }
    }
    pthread_mutex_unlock(&ledger_lock);
    record(EV_RELEASE, w->fd, -1, 0, 0, "GstMemory released");
    free(w);
}

static void ledger_alloc(void *mem, int fd, bool dont_close)
{
    if (!mem || fd < 0 || fd >= MAX_FD) {
        return;
    }
    uint64_t ino = fd_ino(fd);
    weak_data *w = malloc(sizeof(*w));
    pthread_mutex_lock(&ledger_lock);
    fd_entry *e = &fds[fd];
    e->gst = GST_WRAPPED;
    e->reported = false;
    e->ino_gst = ino;
    e->gen = ++gen_counter;
    tracked[fd] = true;
    w->fd = fd;
    w->gen = e->gen;
    pthread_mutex_unlock(&ledger_lock);
    record(EV_ALLOC, fd, dont_close, ino, 0, "%s",
           dont_close ? "GstMemory, DONT_CLOSE" : "GstMemory owning its fd");
    static void (*weak_ref)(void *, void (*)(void *, void *), void *);
    REAL(weak_ref, "gst_mini_object_weak_ref");
    if (weak_ref) {
        weak_ref(mem, gst_released, w);
    }
}

static void ledger_map(int fd)
{
    if (fd < 0 || fd >= MAX_FD || !__atomic_load_n(&tracked[fd], __ATOMIC_RELAXED)) {
        return;
    }
    pthread_mutex_lock(&ledger_lock);
    bool is_gst = fds[fd].gst != GST_NONE;
    pthread_mutex_unlock(&ledger_lock);
    if (!is_gst) {
        return;
    }
    point("gst:before-map");
    uint64_t ino = fd_ino(fd);
    int errno_save = errno;
    pthread_mutex_lock(&ledger_lock);
    fd_entry *e = &fds[fd];
    uint64_t want = e->ino_gst;
    bool closed = e->gst == GST_CLOSED_IN_USE;
    bool report = e->gst != GST_NONE && !e->reported;
    if (report && (ino == 0 || ino != want || closed)) {
        e->reported = true;
    }
    pthread_mutex_unlock(&ledger_lock);
    if (!report) {
        record(EV_MAP, fd, -1, ino, 0, "mmap again");
    } else if (ino == 0) {
        record(EV_USE_AFTER_CLOSE, fd, -1, want, 0,
               "mmap of a closed fd (inode %llu)", (unsigned long long)want);
    } else if (ino != want) {
        char target[40];
        fd_target(fd, target, sizeof(target));
        record(EV_REUSED_FD, fd, -1, want, ino, "mmap hit %s", target);
    } else {
        record(EV_MAP, fd, -1, ino, 0, "mmap of the allocated inode");
    }
    errno = errno_save;
}

/* ---- libc ----------------------------------------------------------------- */
int close(int fd)
{
    REAL(real_close, "close");
    struct stat st;
    uint32_t fill = ctl ? __atomic_load_n(&ctl->reuse_fill, __ATOMIC_RELAXED) : 0;
    if (fill && (fd < 0 || fstat(fd, &st) != 0)) {
        st.st_size = 0;
    }
    if (ledger_close(fd) && fill) {
        int r = real_close(fd);
        reuse_number(fd, st.st_size, (int)(fill - 1));
        return r;
    }
    return real_close(fd);
}

int dup(int fd)
{
    REAL(real_dup, "dup");
    int r = real_dup(fd);
    if (r >= 0 && fd >= 0 && fd < MAX_FD && __atomic_load_n(&tracked[fd], __ATOMIC_RELAXED)) {
        record(EV_DUP, fd, r, fd_ino(fd), 0, "dup");
    }
    return r;
}

/* asm names: with _FILE_OFFSET_BITS=64 the headers redirect mmap to mmap64 */
void *sid_races_mmap(void *, size_t, int, int, int, off_t) __asm__("mmap");
void *sid_races_mmap64(void *, size_t, int, int, int, off_t) __asm__("mmap64");

void *sid_races_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    REAL(real_mmap, "mmap");
    if (fd >= 0) {
        ledger_map(fd);
    }
    return real_mmap(addr, len, prot, flags, fd, off);
}

void *sid_races_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    REAL(real_mmap64, "mmap64");
    if (fd >= 0) {
        ledger_map(fd);
    }
    return real_mmap64(addr, len, prot, flags, fd, off);
}

ssize_t read(int fd, void *buf, size_t n)
{
    REAL(real_read, "read");
    if (ctl && __atomic_load_n(&ctl->any_armed, __ATOMIC_RELAXED)
        && is_thread("SPICE Worker")) {
        point("worker:read");
    }
    return real_read(fd, buf, n);
}

/* fcntl() made inside a scanout call: spice probing QEMU's fds on QEMU's
 * thread (hardening 1 no longer does).  Outside one, only F_DUPFD_CLOEXEC
 * is recorded: the shim's dup() of each scanout's buffer, which shows that
 * a library loaded after this one (the shim, like libspice-server) has
 * its fcntl() calls seen here. */
static void fcntl_seen(int fd, int cmd)
{
    if (!ctl || (!in_scanout && cmd != F_DUPFD_CLOEXEC)) {
        return;
    }
    int errno_save = errno;
    record(EV_FCNTL, fd, cmd, fd_ino(fd), in_scanout ? 1 : 0, "fcntl cmd %d%s",
           cmd, in_scanout ? " in a scanout call" : "");
    errno = errno_save;
}

/* asm names, as mmap's: with _FILE_OFFSET_BITS=64 the headers redirect
 * fcntl to fcntl64.  The third argument, if any, is an int or a pointer:
 * passed on as one. */
int sid_races_fcntl(int, int, ...) __asm__("fcntl");
int sid_races_fcntl64(int, int, ...) __asm__("fcntl64");

int sid_races_fcntl(int fd, int cmd, ...)
{
    REAL(real_fcntl, "fcntl");
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    fcntl_seen(fd, cmd);
    return real_fcntl(fd, cmd, arg);
}

/* what callers built with _FILE_OFFSET_BITS=64 call (meson's default:
 * libspice-server and the shim) */
int sid_races_fcntl64(int fd, int cmd, ...)
{
    REAL(real_fcntl64, "fcntl64");
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    fcntl_seen(fd, cmd);
    return real_fcntl64(fd, cmd, arg);
}

/* ---- spice-server's public API (QEMU's thread) ----------------------------- */
typedef struct QXLInstance QXLInstance;

void spice_qxl_gl_scanout(QXLInstance *qxl, int fd, uint32_t width,
                          uint32_t height, uint32_t stride, uint32_t format,
                          int y_0_top)
{
    LIB_REAL(SPICE_LIB, spice_qxl_gl_scanout);
    if (in_scanout) {
        real(qxl, fd, width, height, stride, format, y_0_top);
        return;
    }
    point("qemu:scanout");
    ledger_given(fd);
    in_scanout = true;
    real(qxl, fd, width, height, stride, format, y_0_top);
    in_scanout = false;
    record(EV_SCANOUT_DONE, fd, -1, 0, 0, "%ux%u", width, height);
    point("qemu:after-scanout");
}

void spice_qxl_gl_scanout2(QXLInstance *qxl, int *fd, uint32_t width,
                           uint32_t height, uint32_t *offset, uint32_t *stride,
                           uint32_t num_planes, uint32_t format,
                           uint64_t modifier, int y_0_top)
{
    LIB_REAL(SPICE_LIB, spice_qxl_gl_scanout2);
    if (in_scanout) {
        real(qxl, fd, width, height, offset, stride, num_planes, format,
             modifier, y_0_top);
        return;
    }
    point("qemu:scanout");
    for (uint32_t i = 0; i < num_planes && i < SPICE_MAX_PLANES; i++) {
        ledger_given(fd[i]);
    }
    in_scanout = true;
    real(qxl, fd, width, height, offset, stride, num_planes, format, modifier,
         y_0_top);
    in_scanout = false;
    record(EV_SCANOUT_DONE, num_planes ? fd[0] : -1, -1, 0, 0, "%ux%u",
           width, height);
    point("qemu:after-scanout");
}

void spice_qxl_gl_draw_async(QXLInstance *qxl, uint32_t x, uint32_t y,
                             uint32_t w, uint32_t h, uint64_t cookie)
{
    LIB_REAL(SPICE_LIB, spice_qxl_gl_draw_async);
    point("qemu:draw");
    record(EV_DRAW, -1, -1, cookie, 0, "draw %ux%u", w, h);
    real(qxl, x, y, w, h, cookie);
}

/* ---- GStreamer, as spice-server calls it (worker thread) --------------------- */
#define GST_FD_MEMORY_FLAG_DONT_CLOSE (1 << 2)

void *gst_dmabuf_allocator_alloc_with_flags(void *allocator, int fd,
                                            size_t size, int flags)
{
    LIB_REAL(GST_ALLOCATORS_LIB, gst_dmabuf_allocator_alloc_with_flags);
    point("worker:before-encode");
    void *mem = real(allocator, fd, size, flags);
    ledger_alloc(mem, fd, (flags & GST_FD_MEMORY_FLAG_DONT_CLOSE) != 0);
    return mem;
}

void *gst_dmabuf_allocator_alloc(void *allocator, int fd, size_t size)
{
    LIB_REAL(GST_ALLOCATORS_LIB, gst_dmabuf_allocator_alloc);
    point("worker:before-encode");
    void *mem = real(allocator, fd, size);
    ledger_alloc(mem, fd, false);
    return mem;
}

void *gst_app_sink_pull_sample(void *appsink)
{
    LIB_REAL(GST_APP_LIB, gst_app_sink_pull_sample);
    void *sample = real(appsink);
    record(EV_PULLED, -1, -1, 0, 0, "%s", sample ? "sample" : "no sample");
    point("gst:encoded");
    return sample;
}

/* ---- set-up ----------------------------------------------------------------- */
__attribute__((constructor))
static void sid_races_init(void)
{
    const char *path = getenv("SID_RACES_SHM");
    if (!path || !*path) {
        return;
    }
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "sid_races: cannot open %s: %s\n", path, strerror(errno));
        return;
    }
    void *p = mmap(NULL, sizeof(sid_ctl), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    REAL(real_close, "close");
    real_close(fd);
    if (p == MAP_FAILED) {
        fprintf(stderr, "sid_races: mmap %s: %s\n", path, strerror(errno));
        return;
    }
    sid_ctl *c = p;
    if (c->magic != SID_RACES_MAGIC || c->version != SID_RACES_VERSION
        || c->ctl_size != sizeof(sid_ctl)) {
        fprintf(stderr, "sid_races: %s: layout mismatch (size %u, want %zu)\n",
                path, c->ctl_size, sizeof(sid_ctl));
        munmap(p, sizeof(sid_ctl));
        return;
    }
    ctl = c;
}

/* Exported for the record: lets a process check the library is active. */
int sid_races_active(void)
{
    return ctl != NULL;
}
