/* sid_bad_scanout.c - raw, unchecked scanouts: the fields of
 * spice_qxl_gl_scanout{,2} exactly as a device model could pass them, good
 * or bad, for the bad-input tests (tests/test_bad_scanouts*.py).
 *
 * QEMU passes spice a dup() of the guest's dmabuf and spice owns it; a
 * buggy device model could as well pass -1, a number that is not open, a
 * file that cannot be mapped (pipe, socket), a buffer smaller than its
 * geometry, or nonsense geometry, format or plane count.  This file makes
 * those file descriptors; sid_display.c makes the call on the core thread.
 *
 * Ownership is as for a good scanout: every fd handed to spice is a dup()
 * spice owns; the shim closes its own copies right after the call.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sid_internal.h"

/* Lowest fd number probed for SID_FD_CLOSED: far above what the process
 * uses, so that nothing opens it between the probe and spice's use. */
#define CLOSED_FD_BASE 900

/* The "guest" objects behind the fds of one raw scanout (shim's copies). */
typedef struct {
    int memfd;
    int pipe[2];
    int sock[2];
} raw_objects;

static void raw_objects_close(raw_objects *o)
{
    int *all[] = { &o->memfd, &o->pipe[0], &o->pipe[1], &o->sock[0], &o->sock[1] };
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++) {
        if (*all[i] >= 0) {
            close(*all[i]);
            *all[i] = -1;
        }
    }
}

static int make_sized_memfd(int display, const uint8_t *data, size_t len,
                            uint64_t size, char *err, size_t errlen)
{
    char name[64];
    snprintf(name, sizeof(name), "sid-scanout-d%d-raw", display);
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0) {
        sid_set_err(err, errlen, "memfd_create: %s", g_strerror(errno));
        return -1;
    }
    if (ftruncate(fd, (off_t)size) != 0) {
        sid_set_err(err, errlen, "ftruncate memfd to %llu bytes: %s",
                (unsigned long long)size, g_strerror(errno));
        close(fd);
        return -1;
    }
    size_t todo = len < size ? len : (size_t)size;
    size_t off = 0;
    while (off < todo) {
        ssize_t n = pwrite(fd, data + off, todo - off, (off_t)off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            sid_set_err(err, errlen, "writing memfd: %s", g_strerror(errno));
            close(fd);
            return -1;
        }
        off += (size_t)n;
    }
    return fd;
}

/* A number that is not an open file descriptor of this process. */
static int closed_fd_number(void)
{
    for (int fd = CLOSED_FD_BASE; fd < CLOSED_FD_BASE + 1000; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            return fd;
        }
    }
    return CLOSED_FD_BASE + 1000;
}

/* The fd handed to spice for one plane slot (owned by spice if it is a
 * dup() made here) in *out; SID_OK or SID_ERR_SYS. */
static int plane_fd(int kind, int raw, raw_objects *o, int display,
                    const uint8_t *data, size_t len, uint64_t memfd_size,
                    int *out, char *err, size_t errlen)
{
    int src = -1;
    switch (kind) {
    case SID_FD_VALUE:
        *out = raw;
        return SID_OK;
    case SID_FD_CLOSED:
        *out = closed_fd_number();
        return SID_OK;
    case SID_FD_MEMFD:
        if (o->memfd < 0) {
            o->memfd = make_sized_memfd(display, data, len, memfd_size, err, errlen);
            if (o->memfd < 0) {
                return SID_ERR_SYS;
            }
        }
        src = o->memfd;
        break;
    case SID_FD_PIPE:
        if (o->pipe[0] < 0 && pipe2(o->pipe, O_CLOEXEC) != 0) {
            sid_set_err(err, errlen, "pipe: %s", g_strerror(errno));
            return SID_ERR_SYS;
        }
        src = o->pipe[0];
        break;
    case SID_FD_SOCKET:
        if (o->sock[0] < 0 &&
            socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, o->sock) != 0) {
            sid_set_err(err, errlen, "socketpair: %s", g_strerror(errno));
            return SID_ERR_SYS;
        }
        src = o->sock[0];
        break;
    default:
        sid_set_err(err, errlen, "unknown fd kind %d", kind);
        return SID_ERR_ARG;
    }
    *out = fcntl(src, F_DUPFD_CLOEXEC, 0);
    if (*out < 0) {
        sid_set_err(err, errlen, "dup: %s", g_strerror(errno));
        return SID_ERR_SYS;
    }
    return SID_OK;
}

int sid_display_scanout_raw(sid_server *srv, int display, bool use_scanout2,
                            const uint8_t *data, size_t len,
                            uint64_t memfd_size,
                            const int32_t *fd_kinds, const int32_t *raw_fds,
                            const uint32_t *offsets, const uint32_t *strides,
                            uint32_t n, uint32_t num_planes,
                            uint32_t width, uint32_t height, uint32_t fourcc,
                            uint64_t modifier, bool y0_top,
                            char *err, size_t errlen)
{
    sid_display *d = sid_display_get(srv, display, err, errlen);
    if (!d) {
        return SID_ERR_ARG;
    }
    if (n < 1 || n > SID_RAW_MAX_PLANES || !fd_kinds || !raw_fds ||
        !offsets || !strides || (len && !data)) {
        sid_set_err(err, errlen, "raw scanout: need 1..%d plane slots, got %u",
                SID_RAW_MAX_PLANES, n);
        return SID_ERR_ARG;
    }
    /* what spice gets: always SID_RAW_MAX_PLANES entries, unused ones -1/0 */
    sid_dmabuf buf = { .num_planes = num_planes, .width = width, .height = height,
                       .fourcc = fourcc, .modifier = modifier, .y0_top = y0_top,
                       .scanout2 = use_scanout2 };
    bool owned[SID_RAW_MAX_PLANES];   /* a dup() made here */
    raw_objects o = { -1, { -1, -1 }, { -1, -1 } };
    int ret = SID_OK;

    for (int i = 0; i < SID_RAW_MAX_PLANES; i++) {
        buf.fds[i] = -1;
        owned[i] = false;
    }
    for (uint32_t i = 0; i < n; i++) {
        buf.offsets[i] = offsets[i];
        buf.strides[i] = strides[i];
        ret = plane_fd(fd_kinds[i], raw_fds[i], &o, display, data, len,
                       memfd_size, &buf.fds[i], err, errlen);
        if (ret != SID_OK) {
            buf.fds[i] = -1;
            goto out;
        }
        owned[i] = fd_kinds[i] == SID_FD_MEMFD || fd_kinds[i] == SID_FD_PIPE ||
                   fd_kinds[i] == SID_FD_SOCKET;
    }
    sid_display_do_scanout(d, &buf);
    sid_log_add(&d->srv->log, SID_EV_SCANOUT, d->id, 0, width, height,
                num_planes, fourcc,
                "%s (raw) %ux%u stride=%u offset=%u planes=%u fourcc=0x%08x"
                " fd=%d y0_top=%d",
                use_scanout2 ? "gl_scanout2" : "gl_scanout", width, height,
                buf.strides[0], buf.offsets[0], num_planes, fourcc, buf.fds[0],
                y0_top);
    /* spice owns the fds it was given: spice_qxl_gl_scanout hands over one,
     * spice_qxl_gl_scanout2 num_planes (at most the slots filled here) */
    {
        uint32_t given = use_scanout2 ? MIN(num_planes, n) : 1;
        for (uint32_t i = 0; i < given; i++) {
            owned[i] = false;
        }
    }
out:
    for (int i = 0; i < SID_RAW_MAX_PLANES; i++) {
        if (owned[i] && buf.fds[i] >= 0) {
            close(buf.fds[i]);
        }
    }
    raw_objects_close(&o);
    return ret;
}
