/*
 * sockpath.h - where the daemon's socket lives, resolved identically by the
 * daemon, libresil and resilctl (SPEC §8): an explicit path (-s), else
 * $RESILD_SOCKET, else /run/resild/resild.sock when /run/resild exists,
 * else $XDG_RUNTIME_DIR/resild.sock, else /tmp/resild.sock.
 */
#ifndef RESIL_SOCKPATH_H
#define RESIL_SOCKPATH_H

#include <stddef.h>

#define SOCKPATH_MAX 108 /* sizeof(sun_path) on Linux, NUL included */

/* Resolve into dst (cap bytes).  explicit_path may be NULL.
 * Returns 0, or -1 when the result does not fit a sun_path. */
int sockpath_resolve(const char *explicit_path, char *dst, size_t cap);

#endif
