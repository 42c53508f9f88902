/* sid_refresh.c - QEMU 10.1's remote GL mode (ui/spice-display.c with a
 * remote client and gl=on): the guest's updates only count (spice_gl_update:
 * gl_updates++), and the console's refresh tick, every
 * 1000 / max-refresh-rate ms (default 30 per second), issues one
 * whole-surface spice_qxl_gl_draw_async() if updates are pending and the
 * console is not blocked by a draw still outstanding (spice_gl_refresh).
 * Updates made while a draw is outstanding are drawn at the first tick
 * after it completed.  Nothing is drawn on connect or while idle.
 *
 * Ticks and counts on the core thread (QEMU's main loop).
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

void sid_refresh_stop(sid_display *d)
{
    if (d->refresh_timer) {
        g_source_destroy(d->refresh_timer);
        g_source_unref(d->refresh_timer);
        d->refresh_timer = NULL;
    }
}

static void refresh_start(sid_display *d, int max_refresh_rate)
{
    sid_refresh_stop(d);
    d->refresh_timer = g_timeout_source_new(1000 / max_refresh_rate);
    g_source_set_callback(d->refresh_timer, refresh_tick, d, NULL);
    g_source_attach(d->refresh_timer, d->srv->core.ctx);
}

typedef struct {
    sid_server *srv;
    int rate;
} refresh_args;

static void do_set_refresh_rate(void *p)
{
    refresh_args *a = p;
    for (int i = 0; i < a->srv->n_displays; i++) {
        if (a->rate > 0) {
            refresh_start(&a->srv->displays[i], a->rate);
        } else {
            sid_refresh_stop(&a->srv->displays[i]);
        }
    }
}

int sid_server_set_refresh_rate(sid_server *srv, int max_refresh_rate,
                                char *err, size_t errlen)
{
    /* QEMU: "max refresh rate/fps is invalid" for <= 0; 0 here stops */
    if (!srv || max_refresh_rate < 0 || max_refresh_rate > 1000) {
        sid_set_err(err, errlen, "max refresh rate %d: use 1..1000 per second, "
                    "or 0 to stop", max_refresh_rate);
        return SID_ERR_ARG;
    }
    refresh_args a = { .srv = srv, .rate = max_refresh_rate };
    sid_core_call(&srv->core, do_set_refresh_rate, &a);
    return SID_OK;
}

static void do_update(void *p)
{
    sid_display *d = p;
    d->gl_updates++;
}

int sid_display_update(sid_server *srv, int display, char *err, size_t errlen)
{
    sid_display *d = sid_display_get(srv, display, err, errlen);
    if (!d) {
        return SID_ERR_ARG;
    }
    sid_core_call(&srv->core, do_update, d);
    return SID_OK;
}
