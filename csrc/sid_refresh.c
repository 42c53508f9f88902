/* sid_refresh.c - QEMU 10.1's remote GL mode (ui/spice-display.c with a
 * remote client and gl=on): the guest's updates only count (spice_gl_update:
 * gl_updates++), and the console's refresh tick, every
 * 1000 / max-refresh-rate ms (default 30 per second), issues one
 * whole-surface spice_qxl_gl_draw_async() if updates are pending and the
 * console is not blocked by a draw still outstanding (spice_gl_refresh).
 * Updates made while a draw is outstanding are drawn at the first tick
 * after it completed.  Nothing is drawn on connect or while idle.
 *
 * All on the core thread (QEMU's main loop).
 */
#include "sid_internal.h"

static gboolean refresh_tick(gpointer opaque)
{
    sid_display *d = opaque;

    /* a draw outstanding (blocked) or no scanout: the updates wait */
    if (d->gl_updates &&
        sid_display_do_draw(d, 0, 0, d->width, d->height, NULL) == SID_OK) {
        d->gl_updates = 0;
    }
    return G_SOURCE_CONTINUE;
}

void sid_refresh_start(sid_display *d, int max_refresh_rate)
{
    sid_refresh_stop(d);
    d->refresh_timer = g_timeout_source_new(1000 / max_refresh_rate);
    g_source_set_callback(d->refresh_timer, refresh_tick, d, NULL);
    g_source_attach(d->refresh_timer, d->srv->core.ctx);
}

void sid_refresh_stop(sid_display *d)
{
    if (d->refresh_timer) {
        g_source_destroy(d->refresh_timer);
        g_source_unref(d->refresh_timer);
        d->refresh_timer = NULL;
    }
}

void sid_refresh_update(sid_display *d)
{
    d->gl_updates++;
}
