/* sid_core.c - SpiceCoreInterface on a GMainContext driven by its own
 * thread: the shim's equivalent of QEMU's main loop (ui/spice-core.c,
 * which implements timers and watches with QEMU timers and fd handlers).
 *
 * SpiceCoreInterface callbacks get no user pointer, so the live core is
 * found through one process-wide pointer (QEMU has one spice server per
 * process as well).  sid_server_new() refuses a second live server; the
 * pointer is cleared by sid_server_free(), so nothing survives a test.
 */
#include <glib-unix.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "sid_internal.h"

static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static sid_core *current;

void sid_core_set_current(sid_core *core)
{
    pthread_mutex_lock(&current_lock);
    current = core;
    pthread_mutex_unlock(&current_lock);
}

static sid_core *get_current(void)
{
    pthread_mutex_lock(&current_lock);
    sid_core *core = current;
    pthread_mutex_unlock(&current_lock);
    return core;
}

/* ---- timers --------------------------------------------------------- */
struct SpiceTimer {
    SpiceTimerFunc func;
    void *opaque;
    GSource *source;
    GMainContext *ctx;
};

static gboolean timer_cb(gpointer data)
{
    SpiceTimer *t = data;
    t->func(t->opaque);
    return G_SOURCE_REMOVE;
}

static SpiceTimer *timer_add(SpiceTimerFunc func, void *opaque)
{
    sid_core *core = get_current();
    g_return_val_if_fail(core != NULL, NULL);
    SpiceTimer *t = g_new0(SpiceTimer, 1);
    t->func = func;
    t->opaque = opaque;
    t->ctx = g_main_context_ref(core->ctx);
    return t;
}

static void timer_cancel(SpiceTimer *t)
{
    if (t->source) {
        g_source_destroy(t->source);
        g_source_unref(t->source);
        t->source = NULL;
    }
}

static void timer_start(SpiceTimer *t, uint32_t ms)
{
    timer_cancel(t);
    t->source = g_timeout_source_new(ms);
    g_source_set_callback(t->source, timer_cb, t, NULL);
    g_source_attach(t->source, t->ctx);
}

static void timer_remove(SpiceTimer *t)
{
    timer_cancel(t);
    g_main_context_unref(t->ctx);
    g_free(t);
}

/* ---- fd watches ----------------------------------------------------- */
struct SpiceWatch {
    int fd;
    SpiceWatchFunc func;
    void *opaque;
    GSource *source;
    GMainContext *ctx;
};

static gboolean watch_cb(gint fd, GIOCondition cond, gpointer data)
{
    SpiceWatch *w = data;
    int events = 0;
    if (cond & (G_IO_IN | G_IO_HUP | G_IO_ERR)) {
        events |= SPICE_WATCH_EVENT_READ;
    }
    if (cond & G_IO_OUT) {
        events |= SPICE_WATCH_EVENT_WRITE;
    }
    w->func(fd, events, w->opaque);
    return G_SOURCE_CONTINUE;
}

static void watch_detach(SpiceWatch *w)
{
    if (w->source) {
        g_source_destroy(w->source);
        g_source_unref(w->source);
        w->source = NULL;
    }
}

static void watch_update_mask(SpiceWatch *w, int mask)
{
    watch_detach(w);
    GIOCondition cond = 0;
    if (mask & SPICE_WATCH_EVENT_READ) {
        cond |= G_IO_IN | G_IO_HUP | G_IO_ERR;
    }
    if (mask & SPICE_WATCH_EVENT_WRITE) {
        cond |= G_IO_OUT;
    }
    if (!cond) {
        return;
    }
    w->source = g_unix_fd_source_new(w->fd, cond);
    g_source_set_callback(w->source, (GSourceFunc)(void (*)(void))watch_cb, w, NULL);
    g_source_attach(w->source, w->ctx);
}

static SpiceWatch *watch_add(int fd, int mask, SpiceWatchFunc func, void *opaque)
{
    sid_core *core = get_current();
    g_return_val_if_fail(core != NULL, NULL);
    SpiceWatch *w = g_new0(SpiceWatch, 1);
    w->fd = fd;
    w->func = func;
    w->opaque = opaque;
    w->ctx = g_main_context_ref(core->ctx);
    watch_update_mask(w, mask);
    return w;
}

static void watch_remove(SpiceWatch *w)
{
    watch_detach(w);
    g_main_context_unref(w->ctx);
    g_free(w);
}

/* ---- channel events (may come from spice's worker thread) ------------ */
G_STATIC_ASSERT(SID_CHANNEL_EVENT_CONNECTED == SPICE_CHANNEL_EVENT_CONNECTED);
G_STATIC_ASSERT(SID_CHANNEL_EVENT_INITIALIZED == SPICE_CHANNEL_EVENT_INITIALIZED);
G_STATIC_ASSERT(SID_CHANNEL_EVENT_DISCONNECTED == SPICE_CHANNEL_EVENT_DISCONNECTED);
G_STATIC_ASSERT(SID_CHANNEL_TYPE_DISPLAY == SPICE_CHANNEL_DISPLAY);

static void channel_event(int event, SpiceChannelEventInfo *info)
{
    sid_core *core = get_current();
    if (!core || !core->log) {
        return;
    }
    static const char *names[] = { "?", "connected", "initialized", "disconnected" };
    const char *name = (event >= 1 && event <= 3) ? names[event] : "other";
    sid_log_add(core->log, SID_EV_CHANNEL, -1, 0, event,
                info ? info->type : -1, info ? info->id : -1,
                info ? info->connection_id : 0,
                "channel %s type=%d id=%d", name,
                info ? info->type : -1, info ? info->id : -1);
}

/* ---- loop thread ----------------------------------------------------- */
static gpointer loop_thread(gpointer data)
{
    sid_core *core = data;
    g_main_context_push_thread_default(core->ctx);
    g_main_loop_run(core->loop);
    g_main_context_pop_thread_default(core->ctx);
    return NULL;
}

int sid_core_start(sid_core *core, sid_log *log)
{
    core->iface.base.type = SPICE_INTERFACE_CORE;
    core->iface.base.description = "sid-shim core (GMainContext thread)";
    core->iface.base.major_version = SPICE_INTERFACE_CORE_MAJOR;
    core->iface.base.minor_version = SPICE_INTERFACE_CORE_MINOR;
    core->iface.timer_add = timer_add;
    core->iface.timer_start = timer_start;
    core->iface.timer_cancel = timer_cancel;
    core->iface.timer_remove = timer_remove;
    core->iface.watch_add = watch_add;
    core->iface.watch_update_mask = watch_update_mask;
    core->iface.watch_remove = watch_remove;
    core->iface.channel_event = channel_event;
    core->log = log;
    core->ctx = g_main_context_new();
    core->loop = g_main_loop_new(core->ctx, FALSE);
    pthread_mutex_init(&core->call_lock, NULL);
    pthread_cond_init(&core->call_done, NULL);
    core->thread = g_thread_new("sid-core", loop_thread, core);
    return SID_OK;
}

static void quit_fn(void *data)
{
    g_main_loop_quit(((sid_core *)data)->loop);
}

void sid_core_stop(sid_core *core)
{
    if (!core->thread) {
        return;
    }
    sid_core_call(core, quit_fn, core);
    g_thread_join(core->thread);
    core->thread = NULL;
    g_main_loop_unref(core->loop);
    g_main_context_unref(core->ctx);
    core->loop = NULL;
    core->ctx = NULL;
    pthread_cond_destroy(&core->call_done);
    pthread_mutex_destroy(&core->call_lock);
}

/* ---- marshalling onto the loop thread -------------------------------- */
/* Through the core's call_lock, a pthread lock made before the thread: TSan
 * sees what it orders (the call's arguments, then what fn did), not GLib's
 * futex locks nor GMainContext's queue. */
typedef struct {
    sid_core *core;
    void (*fn)(void *);
    void *data;
    bool done;
} sync_call;

static gboolean sync_call_cb(gpointer p)
{
    sync_call *c = p;
    sid_core *core = c->core;
    pthread_mutex_lock(&core->call_lock);
    void (*fn)(void *) = c->fn;
    void *data = c->data;
    pthread_mutex_unlock(&core->call_lock);
    fn(data);
    pthread_mutex_lock(&core->call_lock);
    c->done = true;
    pthread_cond_broadcast(&core->call_done);
    pthread_mutex_unlock(&core->call_lock);
    return G_SOURCE_REMOVE;
}

void sid_core_call(sid_core *core, void (*fn)(void *), void *data)
{
    if (g_main_context_is_owner(core->ctx)) {
        fn(data);
        return;
    }
    sync_call c = { .core = core, .fn = fn, .data = data, .done = false };
    GSource *s = g_idle_source_new();
    g_source_set_priority(s, G_PRIORITY_DEFAULT);
    g_source_set_callback(s, sync_call_cb, &c, NULL);
    pthread_mutex_lock(&core->call_lock);
    g_source_attach(s, core->ctx);
    g_source_unref(s);
    while (!c.done) {
        pthread_cond_wait(&core->call_done, &core->call_lock);
    }
    pthread_mutex_unlock(&core->call_lock);
}

/* ---- test hook: the sanitizers' positive control ---------------------- */
static char misuse_buf[64];
/* through a volatile pointer: the compiler keeps every call, even the one
 * on a freed block */
static void *(*volatile misuse_memset)(void *, int, size_t) = memset;

static void *misuse_race_thread(void *p)
{
    (void)p;
    misuse_memset(misuse_buf, 1, sizeof(misuse_buf));
    return NULL;
}

static void misuse_race_core(void *p)
{
    (void)p;
    misuse_memset(misuse_buf, 2, sizeof(misuse_buf));
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuse-after-free"   /* the point of it */
static void misuse_use_after_free_core(void *p)
{
    (void)p;
    char *block = malloc(sizeof(misuse_buf));
    free(block);
    misuse_memset(block, 3, sizeof(misuse_buf));
}
#pragma GCC diagnostic pop

void sid_test_misuse_memory(sid_server *srv, int what)
{
    sid_core *core = &srv->core;
    if (what == SID_MISUSE_RACE) {
        /* the caller orders itself before both writes and after both
         * (thread creation and join, sid_core_call), not one before the
         * other */
        pthread_t t;
        if (pthread_create(&t, NULL, misuse_race_thread, NULL) == 0) {
            sid_core_call(core, misuse_race_core, NULL);
            pthread_join(t, NULL);
        }
    } else if (what == SID_MISUSE_USE_AFTER_FREE) {
        sid_core_call(core, misuse_use_after_free_core, NULL);
    }
}
