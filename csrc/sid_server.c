/* sid_server.c - spice server setup and teardown, in the order QEMU's
 * ui/spice-core.c (qemu_spice_init) and ui/spice-display.c use, and the
 * server's own settings (ports, ticket).
 *
 * Every spice_server_* / spice_qxl_* call is made on the core thread
 * (sid_core_call), as QEMU makes them from its main loop.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sid_internal.h"

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static sid_server *live_server;   /* one spice server per process, as QEMU */

/* A free loopback port: bind port 0, read it back, release it.  QEMU is
 * given a fixed port; a test harness cannot know one in advance. */
static int pick_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sa);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0) {
        port = ntohs(sa.sin_port);
    }
    close(fd);
    return port;
}

typedef struct {
    sid_server *srv;
    const char *codecs;
    const char *unix_path;      /* NULL: TCP on 127.0.0.1 */
    const sid_security *sec;    /* NULL: plain port, no ticket */
    const sid_migration *mig;   /* NULL: seamless off, not incoming */
    int ret;
    char msg[256];
} start_args;

static void do_start(void *p)
{
    start_args *a = p;
    sid_server *srv = a->srv;

    for (int attempt = 0; attempt < 5; attempt++) {
        const sid_security *sec = a->sec;
        bool tls = sec && sec->ca_file;
        bool plain = !tls || sec->plain_port;
        int port = a->unix_path || !plain ? 0 : pick_free_port();
        int tls_port = tls ? pick_free_port() : 0;
        if (port < 0 || tls_port < 0) {
            snprintf(a->msg, sizeof(a->msg), "no free loopback port: %s",
                     g_strerror(errno));
            a->ret = SID_ERR_SYS;
            return;
        }
        SpiceServer *s = spice_server_new();
        if (a->unix_path) {
            /* QEMU's -spice unix=on,addr=PATH (ui/spice-core.c): no port,
             * spice_server_set_addr(..., SPICE_ADDR_FLAG_UNIX_ONLY) */
            spice_server_set_addr(s, a->unix_path, SPICE_ADDR_FLAG_UNIX_ONLY);
        } else {
            if (plain) {
                spice_server_set_port(s, port);
            }
            spice_server_set_addr(s, "127.0.0.1", SPICE_ADDR_FLAG_IPV4_ONLY);
        }
        if (tls && spice_server_set_tls(s, tls_port, sec->ca_file, sec->cert_file,
                                        sec->key_file, NULL, NULL,
                                        sec->ciphers) != 0) {
            spice_server_destroy(s);
            snprintf(a->msg, sizeof(a->msg), "spice_server_set_tls failed "
                     "(CA %s, certificate %s, key %s)", sec->ca_file,
                     sec->cert_file, sec->key_file);
            a->ret = SID_ERR_SPICE;
            return;
        }
        if (sec && sec->password) {
            /* QEMU's password=: fail_if_connected and
             * disconnect_if_connected 0 */
            spice_server_set_ticket(s, sec->password, sec->ticket_lifetime, 0, 0);
        } else {
            spice_server_set_noauth(s);
        }
        /* QEMU's default when -spice streaming-video is not given */
        spice_server_set_streaming_video(s, SPICE_STREAM_VIDEO_OFF);
        if (spice_server_set_video_codecs(s, a->codecs) != 0) {
            spice_server_destroy(s);
            snprintf(a->msg, sizeof(a->msg),
                     "spice-server installed none of the video codecs '%s'"
                     " (format encoder:codec;..., e.g. gstreamer:mjpeg)",
                     a->codecs);
            a->ret = SID_ERR_SPICE;
            return;
        }
        /* seamless-migration=, off unless given */
        spice_server_set_seamless_migration(s, a->mig && a->mig->seamless);
        if (spice_server_init(s, &srv->core.iface) != 0) {
            /* most likely the port was taken in between: try another */
            spice_server_destroy(s);
            if (a->unix_path) {
                snprintf(a->msg, sizeof(a->msg),
                         "spice_server_init failed on unix socket %s",
                         a->unix_path);
                a->ret = SID_ERR_SPICE;
                return;
            }
            snprintf(a->msg, sizeof(a->msg),
                     "spice_server_init failed on 127.0.0.1:%d (TLS %d)",
                     port, tls_port);
            a->ret = SID_ERR_SPICE;
            continue;
        }
        srv->spice = s;
        srv->port = port;
        srv->tls_port = tls_port;
        a->ret = SID_OK;
        break;
    }
    if (a->ret != SID_OK) {
        return;
    }
    if (sid_migrate_add_interface(srv) != 0) {
        snprintf(a->msg, sizeof(a->msg), "adding the migration interface failed");
        a->ret = SID_ERR_SPICE;
        return;
    }
    /* qemu_spice_display_init_one() for each console */
    for (int i = 0; i < srv->n_displays; i++) {
        if (spice_server_add_interface(srv->spice,
                                       &srv->displays[i].qxl.base) != 0) {
            snprintf(a->msg, sizeof(a->msg),
                     "spice_server_add_interface failed for display %d", i);
            a->ret = SID_ERR_SPICE;
            return;
        }
        /* qemu_spice_create_host_memslot(): QXL_SYNC, so the worker has
         * started and answered before a client can link */
        QXLDevMemSlot memslot = { .slot_group_id = 0, .virt_end = ~0ULL };
        spice_qxl_add_memslot(&srv->displays[i].qxl, &memslot);
    }
    /* the VM is running: qemu_spice_display_start(); with -incoming only
     * once the migration is in (sid_server_set_running) */
    if (!a->mig || !a->mig->incoming) {
        spice_server_vm_start(srv->spice);
        srv->running = true;
    }
}

static void do_stop(void *p)
{
    sid_server *srv = p;
    for (int i = 0; i < srv->n_displays; i++) {
        sid_refresh_stop(&srv->displays[i]);
    }
    if (srv->spice) {
        spice_server_vm_stop(srv->spice);
        spice_server_destroy(srv->spice);
        srv->spice = NULL;
    }
}

static sid_server *server_new(const char *codecs, int n_displays,
                              const char *unix_path, const sid_security *sec,
                              const sid_migration *mig,
                              char *err, size_t errlen)
{
    if (!codecs || n_displays < 1 || n_displays > SID_MAX_DISPLAYS) {
        sid_set_err(err, errlen, "invalid arguments: codecs=%s displays=%d "
                "(need a codec list and 1..%d displays)",
                codecs ? codecs : "(null)", n_displays, SID_MAX_DISPLAYS);
        return NULL;
    }
    pthread_mutex_lock(&live_lock);
    if (live_server) {
        pthread_mutex_unlock(&live_lock);
        sid_set_err(err, errlen, "a shim server is already running in this process;"
                " free it first (one spice server per process, as QEMU)");
        return NULL;
    }
    sid_server *srv = g_new0(sid_server, 1);
    live_server = srv;
    pthread_mutex_unlock(&live_lock);

    pthread_mutex_init(&srv->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);   /* sid_display_wait_draw */
    pthread_cond_init(&srv->cond, &attr);
    pthread_condattr_destroy(&attr);
    sid_log_init(&srv->log);
    srv->n_displays = n_displays;
    for (int i = 0; i < n_displays; i++) {
        sid_display_init(&srv->displays[i], srv, i);
    }
    sid_core_set_current(&srv->core);
    sid_core_start(&srv->core, &srv->log);

    start_args a = { .srv = srv, .codecs = codecs, .unix_path = unix_path,
                     .sec = sec, .mig = mig, .ret = SID_ERR_SPICE };
    sid_core_call(&srv->core, do_start, &a);
    if (a.ret != SID_OK) {
        sid_set_err(err, errlen, "%s", a.msg);
        sid_server_free(srv);
        return NULL;
    }
    if (unix_path) {
        sid_log_add(&srv->log, SID_EV_SERVER_STARTED, -1, 0, 0, n_displays,
                    0, 0, "listening on unix socket %s, codecs %s",
                    unix_path, codecs);
    } else {
        sid_log_add(&srv->log, SID_EV_SERVER_STARTED, -1, 0, srv->port,
                    n_displays, srv->tls_port, 0,
                    "listening on 127.0.0.1:%d (TLS %d), codecs %s%s",
                    srv->port, srv->tls_port, codecs,
                    sec && sec->password ? ", ticket" : ", no auth");
    }
    return srv;
}

sid_server *sid_server_new(const char *codecs, int n_displays,
                           char *err, size_t errlen)
{
    return sid_server_new_unix(codecs, n_displays, NULL, err, errlen);
}

sid_server *sid_server_new_unix(const char *codecs, int n_displays,
                                const char *unix_path,
                                char *err, size_t errlen)
{
    return server_new(codecs, n_displays, unix_path, NULL, NULL, err, errlen);
}

sid_server *sid_server_new_secure(const char *codecs, int n_displays,
                                  const sid_security *sec,
                                  char *err, size_t errlen)
{
    return sid_server_new_migratable(codecs, n_displays, NULL, sec, NULL,
                                     err, errlen);
}

sid_server *sid_server_new_migratable(const char *codecs, int n_displays,
                                      const char *unix_path,
                                      const sid_security *sec,
                                      const sid_migration *mig,
                                      char *err, size_t errlen)
{
    if (sec && sec->ca_file && (!sec->cert_file || !sec->key_file)) {
        sid_set_err(err, errlen, "a TLS port needs a CA, a certificate and a key"
                    " (got CA %s, certificate %s, key %s)", sec->ca_file,
                    sec->cert_file ? sec->cert_file : "(none)",
                    sec->key_file ? sec->key_file : "(none)");
        return NULL;
    }
    if (sec && unix_path) {
        sid_set_err(err, errlen, "security applies to TCP ports, not to a unix socket");
        return NULL;
    }
    return server_new(codecs, n_displays, unix_path, sec, mig, err, errlen);
}

void sid_server_free(sid_server *srv)
{
    if (!srv) {
        return;
    }
    pthread_mutex_lock(&srv->lock);
    srv->stopping = true;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
    if (srv->core.thread) {
        sid_core_call(&srv->core, do_stop, srv);
        sid_core_stop(&srv->core);
    }
    for (int i = 0; i < srv->n_displays; i++) {
        sid_display_cleanup(&srv->displays[i]);
    }
    sid_core_set_current(NULL);
    sid_log_clear(&srv->log);
    pthread_cond_destroy(&srv->cond);
    pthread_mutex_destroy(&srv->lock);
    pthread_mutex_lock(&live_lock);
    if (live_server == srv) {
        live_server = NULL;
    }
    pthread_mutex_unlock(&live_lock);
    g_free(srv);
}

int sid_server_port(sid_server *srv)
{
    return srv->port;
}

int sid_server_tls_port(sid_server *srv)
{
    return srv->tls_port;
}

typedef struct {
    sid_server *srv;
    const char *password;
    int lifetime;
    int ret;
} ticket_args;

static void do_set_ticket(void *p)
{
    ticket_args *a = p;
    a->ret = spice_server_set_ticket(a->srv->spice, a->password, a->lifetime, 0, 0);
}

int sid_server_set_ticket(sid_server *srv, const char *password, int lifetime,
                          char *err, size_t errlen)
{
    if (!srv || !srv->spice || lifetime < 0) {
        sid_set_err(err, errlen, "set_ticket needs a running server and a "
                    "lifetime >= 0 (got %d)", lifetime);
        return SID_ERR_ARG;
    }
    ticket_args a = { .srv = srv, .password = password, .lifetime = lifetime };
    sid_core_call(&srv->core, do_set_ticket, &a);
    if (a.ret != 0) {
        sid_set_err(err, errlen, "spice_server_set_ticket failed (%d)", a.ret);
        return SID_ERR_SPICE;
    }
    return SID_OK;
}

int sid_server_n_displays(sid_server *srv)
{
    return srv->n_displays;
}
