/* sid_info.c - which spice-server is loaded, and which version. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>

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
