/*
 * snapfile.h - the snapshot and journal file formats, pure: encode into a
 * growable buffer, decode from bytes in memory with every length and count
 * checked against what is there.  No I/O, no clock, no globals; the files
 * themselves are snapshot.c's.
 *
 * Snapshot file (all integers little-endian):
 *
 *   header, SNAPFILE_HEADER_BYTES:
 *     0  magic "RESILDSN"
 *     8  u32 version (SNAPFILE_VERSION; a larger one is "future")
 *    12  u32 header bytes (48)
 *    16  u64 keys that follow
 *    24  u64 journal sequence the snapshot covers (journal records with a
 *        larger one are newer than it)
 *    32  u64 payload bytes (the file is exactly header + payload)
 *    40  u32 CRC-32 of the payload
 *    44  u32 CRC-32 of bytes 0..43
 *   payload: one budget record, then `keys` key records; a record is a u32
 *   length followed by that many bytes, at most SNAPFILE_REC_MAX.
 *
 * Journal file: magic "RESILDJ1", then records appended one per operator
 * action, each u32 length, u32 CRC-32 of the body, body = u64 sequence +
 * a key record.  A torn or corrupt tail ends the journal: its records were
 * never acknowledged (the answer waits for the fsync).
 *
 * A key record holds one struct key_export (core.h): name, force reason,
 * breaker (remaining times, window entries), both limiters, heartbeat and
 * retry state.  Decoding refuses anything core_export_check refuses, so a
 * hostile file can at worst fail to load; it allocates nothing (every
 * bound is fixed) and never reads past what it was given.
 */
#ifndef RESIL_SNAPFILE_H
#define RESIL_SNAPFILE_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

#define SNAPFILE_VERSION 1
#define SNAPFILE_HEADER_BYTES 48
#define SNAPFILE_JOURNAL_MAGIC_BYTES 8
/* One record: a key with the largest window (3600 time buckets of 16
 * bytes) and the longest name and reason, with room to spare. */
#define SNAPFILE_REC_MAX (BREAKER_MAX_TIME_WINDOW * 16 + 2048)
#define SNAPFILE_KEYS_MAX (64u << 20) /* keys a header may declare */

extern const char snapfile_magic[8];         /* "RESILDSN" */
extern const char snapfile_journal_magic[8]; /* "RESILDJ1" */

/* Decoding results (0 = fine). */
#define SNAPFILE_ECORRUPT (-1) /* bad magic, checksum, length or value */
#define SNAPFILE_EFUTURE (-2)  /* a version this daemon does not know */

/* A growable byte buffer.  oom is sticky: once an append failed, every
 * later one does nothing and the buffer must not be used.  From
 * SNAPBUF_MAP_BYTES on it is an anonymous mapping grown without copying
 * (snapfile.c); free it with snapbuf_free only. */
#define SNAPBUF_MAP_BYTES (1u << 20)
struct snapbuf {
    uint8_t *p;
    size_t len, cap;
    int oom;
    int mapped; /* p is an mmap of cap bytes, not a malloc */
};

void snapbuf_init(struct snapbuf *b);
void snapbuf_free(struct snapbuf *b);
/* Make room for n more bytes; 0 or -1 (oom set). */
int snapbuf_reserve(struct snapbuf *b, size_t n);

/* CRC-32 (IEEE 802.3, reflected, as zlib's crc32): start with crc 0. */
uint32_t snapfile_crc32(uint32_t crc, const void *p, size_t n);

struct snapfile_header {
    uint32_t version;
    uint64_t nkeys;
    uint64_t journal_seq;
    uint64_t payload_bytes;
    uint32_t payload_crc;
};

void snapfile_header_encode(const struct snapfile_header *h,
                            uint8_t out[SNAPFILE_HEADER_BYTES]);
/* 0, SNAPFILE_ECORRUPT or SNAPFILE_EFUTURE.  nkeys is checked against
 * SNAPFILE_KEYS_MAX and against what payload_bytes can hold. */
int snapfile_header_decode(const uint8_t in[SNAPFILE_HEADER_BYTES],
                           struct snapfile_header *h);

/* Append one record (u32 length + body).  0 or -1 (oom). */
int snapfile_put_budget(struct snapbuf *b, const struct budget_export *ex);
int snapfile_put_key(struct snapbuf *b, const struct key_export *ex);

/* Decode one record body p[0..n) (without its length prefix).  0 or
 * SNAPFILE_ECORRUPT; the body must be consumed exactly. */
int snapfile_get_budget(const uint8_t *p, size_t n, struct budget_export *ex);
int snapfile_get_key(const uint8_t *p, size_t n, struct key_export *ex);

/* The u32 little-endian at p. */
uint32_t snapfile_u32(const uint8_t *p);

/* Append one journal record: u32 length, u32 CRC, seq, key body. */
int snapfile_put_journal(struct snapbuf *b, uint64_t seq,
                         const struct key_export *ex);

/*
 * The journal record at p[0..n): 1 with *seq, *ex and *used (bytes it
 * took); 0 when p holds only part of one (a torn tail, or read more);
 * SNAPFILE_ECORRUPT when it is not a record (bad length or checksum).
 */
int snapfile_get_journal(const uint8_t *p, size_t n, uint64_t *seq,
                         struct key_export *ex, size_t *used);

#endif
