/*
 * error.c - text for the daemon's error codes (see error.h).
 */
#include "error.h"

const char *rd_strerror(int code)
{
    switch ((enum rd_error)code) {
    case RD_EINVAL:
        return "invalid argument";
    case RD_ENOMEM:
        return "out of memory";
    case RD_EKEYS:
        return "max_keys reached";
    case RD_EPERMITS:
        return "max_permits outstanding";
    case RD_E2BIG:
        return "cost exceeds what a limiter can ever grant";
    case RD_EDEEP:
        return "more ancestor limiters than a key may have";
    case RD_EDOWN:
        return "Redis is not connected";
    case RD_EFULL:
        return "queue full";
    }
    return "unknown error";
}
