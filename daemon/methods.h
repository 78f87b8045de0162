/*
 * methods.h - the RPC layer: the methods of SPEC §3 over the core.
 *
 * Between the socket server and the core (core.h): it validates named
 * arguments (unknown ones are bad_request), calls the core and packs
 * exactly one response per request.  It may include msgpack and proto.h;
 * it does no I/O of its own and reads no monotonic clock (the server passes
 * the loop's time).  It also owns the subscriber sink: events packed as
 * [2, "event", [map]] notifications for connections that subscribed.
 */
#ifndef RESIL_METHODS_H
#define RESIL_METHODS_H

#include <msgpack.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto.h"
#include "state.h"

#define STATUS_PAGE_MAX 1000 /* keys in one status answer (its `limit`) */

/*
 * One client connection as the RPC layer sees it.  The server embeds one
 * per connection and sets pk/flush/queued; the core sees only `caller`.
 */
struct rpc_client {
    struct caller caller;
    msgpack_packer *pk; /* the connection's output (answers, events) */
    /* Something was packed into *pk outside a request (a parked answer, an
     * event): schedule the write.  Must not write or close now. */
    void (*flush)(struct rpc_client *rc);
    /* Output bytes waiting for the client (NULL: unknown). */
    size_t (*queued)(struct rpc_client *rc);
    uint32_t topics; /* enum event_topic bits subscribed */
    int drop;        /* subscriber over the output bound: close it */
    struct rpc_client *sub_prev, *sub_next; /* on resild.subs */
};

/* Set up rc (zeroed) for a new connection. */
void methods_client_init(struct rpc_client *rc, msgpack_packer *pk,
                         void (*flush)(struct rpc_client *rc));

/* Register the subscriber sink with the core (once, at start). */
int methods_attach(struct resild *d);

/* Answer one request m from rc into pk (exactly one response).  A
 * notification (m->type PROTO_NOTIFY) of a method that allows it runs the
 * same way and the caller discards what was packed; any other is counted
 * and ignored. */
void methods_dispatch(struct resild *d, struct rpc_client *rc,
                      const struct proto_msg *m, msgpack_packer *pk,
                      uint64_t now_ms);

/* rc's connection closed: unsubscribe it, then core_caller_gone. */
void methods_client_gone(struct resild *d, struct rpc_client *rc,
                         uint64_t now_ms);

#endif
