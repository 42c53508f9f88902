/* sid_migrate.c - spice client migration as QEMU's ui/spice-core.c drives
 * it: the migration interface (added after spice_server_init), the monitor's
 * client_migrate_info (spice_server_migrate_connect), the migration state
 * notifier (spice_server_migrate_start on setup, spice_server_migrate_end
 * on completion or failure) and the VM's run state (spice_server_vm_start /
 * vm_stop from vm_change_state_handler).
 *
 * Every spice_server_* call is made on the core thread.
 */
#include <stddef.h>
#include <stdio.h>

#include "sid_internal.h"

static sid_server *from_sin(SpiceMigrateInstance *sin)
{
    return (sid_server *)((char *)sin - offsetof(sid_server, migrate));
}

static void migrate_connect_complete(SpiceMigrateInstance *sin)
{
    sid_server *srv = from_sin(sin);
    sid_log_add(&srv->log, SID_EV_MIGRATE_CONNECTED, -1, 0, 0, 0, 0, 0,
                "migrate_connect_complete");
}

static void migrate_end_complete(SpiceMigrateInstance *sin)
{
    sid_server *srv = from_sin(sin);
    sid_log_add(&srv->log, SID_EV_MIGRATE_END_DONE, -1, 0, 0, 0, 0, 0,
                "migrate_end_complete");
}

static const SpiceMigrateInterface migrate_interface = {
    .base.type = SPICE_INTERFACE_MIGRATION,
    .base.description = "migration",
    .base.major_version = SPICE_INTERFACE_MIGRATION_MAJOR,
    .base.minor_version = SPICE_INTERFACE_MIGRATION_MINOR,
    .migrate_connect_complete = migrate_connect_complete,
    .migrate_end_complete = migrate_end_complete,
};

int sid_migrate_add_interface(sid_server *srv)
{
    srv->migrate.base.sif = &migrate_interface.base;
    return spice_server_add_interface(srv->spice, &srv->migrate.base);
}

typedef struct {
    sid_server *srv;
    int op;                     /* 0 connect, 1 start, 2 end, 3 run state */
    const char *host, *subject;
    int port, tls_port;
    bool flag;                  /* end: completed; run state: running */
    int ret;
} migrate_args;

static void do_migrate(void *p)
{
    migrate_args *a = p;
    sid_server *srv = a->srv;

    switch (a->op) {
    case 0:
        a->ret = spice_server_migrate_connect(srv->spice, a->host, a->port,
                                              a->tls_port, a->subject);
        break;
    case 1:
        a->ret = spice_server_migrate_start(srv->spice);
        break;
    case 2:
        a->ret = spice_server_migrate_end(srv->spice, a->flag);
        break;
    default:
        if (a->flag && !srv->running) {
            spice_server_vm_start(srv->spice);
        } else if (!a->flag && srv->running) {
            spice_server_vm_stop(srv->spice);
        }
        srv->running = a->flag;
        sid_log_add(&srv->log, SID_EV_RUNSTATE, -1, 0, a->flag, 0, 0, 0,
                    "vm %s", a->flag ? "running" : "stopped");
        a->ret = 0;
    }
}

static int run(migrate_args *a, const char *what, char *err, size_t errlen)
{
    if (!a->srv || !a->srv->spice) {
        sid_set_err(err, errlen, "%s needs a running server", what);
        return SID_ERR_ARG;
    }
    sid_core_call(&a->srv->core, do_migrate, a);
    if (a->ret != 0) {
        sid_set_err(err, errlen, "%s failed (%d)", what, a->ret);
        return SID_ERR_SPICE;
    }
    return SID_OK;
}

int sid_server_migrate_info(sid_server *srv, const char *host, int port,
                            int tls_port, const char *subject,
                            char *err, size_t errlen)
{
    migrate_args a = { .srv = srv, .op = 0, .host = host, .port = port,
                       .tls_port = tls_port, .subject = subject };
    return run(&a, "spice_server_migrate_connect", err, errlen);
}

int sid_server_migrate_start(sid_server *srv, char *err, size_t errlen)
{
    migrate_args a = { .srv = srv, .op = 1 };
    return run(&a, "spice_server_migrate_start", err, errlen);
}

int sid_server_migrate_end(sid_server *srv, bool completed, char *err,
                           size_t errlen)
{
    migrate_args a = { .srv = srv, .op = 2, .flag = completed };
    return run(&a, "spice_server_migrate_end", err, errlen);
}

int sid_server_set_running(sid_server *srv, bool running, char *err,
                           size_t errlen)
{
    migrate_args a = { .srv = srv, .op = 3, .flag = running };
    return run(&a, "set_running", err, errlen);
}
