/*
 * error.h - the daemon's one negative error space, as libuv's UV_E*.
 *
 * Every daemon function that can fail returns 0 (or a count) on success and
 * one of these codes on failure; no two failures share a number, so an
 * out-of-memory can never be mistaken for "max_keys reached" as it once
 * was.  -1..-15 stay with proto/ (PROTO_E*), which the client library
 * shares and which cannot include daemon headers.
 */
#ifndef RESIL_ERROR_H
#define RESIL_ERROR_H

enum rd_error {
    RD_EINVAL = -16,   /* malformed argument (a key name, ...) */
    RD_ENOMEM = -17,   /* an allocation failed */
    RD_EKEYS = -18,    /* max_keys reached */
    RD_EPERMITS = -19, /* max_permits outstanding */
    RD_E2BIG = -20,    /* cost over what a limiter can ever grant */
    RD_EDEEP = -21,    /* more ancestor limiters than KEY_MAX_ANCESTORS */
    RD_EDOWN = -22,    /* Redis is not connected (rlink.h) */
    RD_EFULL = -23,    /* a bounded queue is full (the item is counted) */
};

/* Static text for a code of this space ("unknown error" otherwise). */
const char *rd_strerror(int code);

#endif
