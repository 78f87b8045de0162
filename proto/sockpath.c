/*
 * sockpath.c - socket path resolution shared by daemon and clients.
 * Reads the environment and stats one directory; no other side effects.
 */
#include "sockpath.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int sockpath_resolve(const char *explicit_path, char *dst, size_t cap)
{
    const char *env = getenv("RESILD_SOCKET");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    struct stat st;
    int n;

    if (cap > SOCKPATH_MAX)
        cap = SOCKPATH_MAX;
    if (explicit_path && *explicit_path)
        n = snprintf(dst, cap, "%s", explicit_path);
    else if (env && *env)
        n = snprintf(dst, cap, "%s", env);
    else if (stat("/run/resild", &st) == 0 && S_ISDIR(st.st_mode))
        n = snprintf(dst, cap, "/run/resild/resild.sock");
    else if (xdg && *xdg)
        n = snprintf(dst, cap, "%s/resild.sock", xdg);
    else
        n = snprintf(dst, cap, "/tmp/resild.sock");
    return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}
