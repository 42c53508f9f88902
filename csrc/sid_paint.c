/* sid_paint.c - a guest that renders into its own buffer: the shim keeps
 * the scanout's memfd (QEMU keeps the guest's dmabuf) and fills rectangles
 * of it in place, so that a stream of frames costs no new buffer, no new
 * scanout and no copy of the whole picture (the live-frame benchmark). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "sid_internal.h"

int sid_display_keep_buffer(sid_server *srv, int display, char *err,
                            size_t errlen)
{
    sid_display *d = sid_display_get(srv, display, err, errlen);
    if (!d) {
        return SID_ERR_ARG;
    }
    pthread_mutex_lock(&srv->lock);
    d->keep_guest = true;
    pthread_mutex_unlock(&srv->lock);
    return SID_OK;
}

static void fill(uint8_t *map, size_t size, uint32_t stride, const uint32_t *r,
                 uint32_t width, uint32_t height)
{
    uint32_t x = MIN(r[0], width), y = MIN(r[1], height);
    uint32_t w = MIN(r[2], width - x), h = MIN(r[3], height - y);
    for (uint32_t row = y; row < y + h; row++) {
        size_t off = (size_t)row * stride + (size_t)x * 4;
        if (off + (size_t)w * 4 > size) {
            return;
        }
        uint32_t *px = (uint32_t *)(map + off);
        for (uint32_t i = 0; i < w; i++) {
            px[i] = r[4];
        }
    }
}

int sid_display_paint(sid_server *srv, int display, const uint32_t *rects,
                      size_t n_rects, char *err, size_t errlen)
{
    sid_display *d = sid_display_get(srv, display, err, errlen);
    if (!d) {
        return SID_ERR_ARG;
    }
    int ret = SID_OK;
    pthread_mutex_lock(&srv->lock);
    struct stat st;
    if (d->rewrite_fd < 0 || !d->keep_guest) {
        sid_set_err(err, errlen, "display %d: no kept buffer (keep_buffer, then"
                    " scanout)", display);
        ret = SID_ERR_NO_SCANOUT;
    } else if (fstat(d->rewrite_fd, &st) != 0) {
        sid_set_err(err, errlen, "fstat: %s", g_strerror(errno));
        ret = SID_ERR_SYS;
    } else {
        uint8_t *map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE,
                            MAP_SHARED, d->rewrite_fd, 0);
        if (map == MAP_FAILED) {
            sid_set_err(err, errlen, "mmap: %s", g_strerror(errno));
            ret = SID_ERR_SYS;
        } else {
            for (size_t i = 0; i < n_rects; i++) {
                fill(map, (size_t)st.st_size, d->guest_stride, rects + 5 * i,
                     d->width, d->height);
            }
            munmap(map, (size_t)st.st_size);
        }
    }
    pthread_mutex_unlock(&srv->lock);
    return ret;
}
