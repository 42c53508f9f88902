/* sid_info.c - which spice-server is loaded, and which version. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <string.h>

#include "sid_internal.h"

const char *sid_spice_library_path(void)
{
    Dl_info info;
    if (dladdr((void *)spice_server_new, &info) && info.dli_fname) {
        return info.dli_fname;
    }
    return "";
}

uint32_t sid_spice_header_version(void)
{
    return SPICE_SERVER_VERSION;
}

int sid_server_video_codecs(sid_server *srv, char *buf, size_t len)
{
    if (!srv || !srv->spice) {
        return -1;
    }
    const char *codecs = spice_server_get_video_codecs(srv->spice);
    int n = (int)strlen(codecs);
    if (len > 0) {
        g_strlcpy(buf, codecs, len);
    }
    spice_server_free_video_codecs(srv->spice, codecs);
    return n;
}
