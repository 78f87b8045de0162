/*
 * memory.h - the worst-case memory of a configuration: what resild holds
 * with every bounded pool full (max_keys keys all of the costliest policy,
 * max_permits permits, max_parked parked acquires, max_clients connections
 * each with a full input buffer and its whole output allowance).
 *
 * Pure arithmetic over the config and the structs' sizes: no allocation, no
 * I/O.  An estimate, not an accounting: it adds a malloc header per
 * allocation and ignores libuv's, jansson's and msgpack-c's small fixed
 * costs, so the real peak stays below it.  config_load refuses a
 * configuration whose figure is over max_memory_mb (issue 8: a 3600-bucket
 * time window costs 86 KiB a key, and max_keys defaults to 100,000).
 */
#ifndef RESIL_MEMORY_H
#define RESIL_MEMORY_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct policy;

/* Which pool dominates the figure. */
enum memory_part {
    MEMORY_KEYS,
    MEMORY_PERMITS,
    MEMORY_PARKED,
    MEMORY_CONNS,
    MEMORY_ANALYTICS,
};

struct memory_estimate {
    uint64_t total_bytes;
    uint64_t key_bytes;              /* one key of the costliest policy */
    const struct policy *key_policy; /* that policy (borrowed from config) */
    uint64_t keys_bytes;             /* max_keys keys + the hash table */
    uint64_t permits_bytes;          /* the permit pool, full */
    uint64_t parked_bytes;           /* the parked-request pool */
    uint64_t conn_bytes;             /* one connection, buffers full */
    uint64_t conns_bytes;            /* max_clients connections */
    uint64_t analytics_bytes;        /* errors.max_series series, full */
    enum memory_part biggest;        /* the largest of the five */
};

/* The worst case of c (complete, as config_load leaves it) into *m. */
void memory_estimate(const struct config *c, struct memory_estimate *m);

/* One line for people: "412.3 MiB: keys 98.1 MiB (100000 x 1.0 KiB,
 * policy '*', 100-call count window), permits ..., parked ...,
 * connections ... (1024 x 325.1 KiB)".  Returns snprintf's count. */
int memory_describe(const struct memory_estimate *m, const struct config *c,
                    char *buf, size_t cap);

/* The figure in whole MiB, rounded up (compared with max_memory_mb). */
uint64_t memory_mib(const struct memory_estimate *m);

/*
 * 0 if the worst case of c fits in c->max_memory_mb; else -1 and one line
 * in err naming the figure, the limit and the biggest contributor, e.g.
 * "worst case 1595 MiB (20000 keys x 57.2 KiB for policy 'binance.*' with a
 * 3600 s time window) exceeds max_memory_mb 1024".  No ": " in it, so the
 * caller may prefix it.
 */
int memory_check(const struct config *c, char *err, size_t cap);

#endif
