/* scan.c - PLACEHOLDER from the lead so the tree builds; helper-1 replaces
 * this file with the real bounded scanner. */
#include "proto.h"
#include <string.h>
void proto_scan_init(struct proto_scan *s) { memset(s, 0, sizeof(*s)); }
static uint64_t be(const uint8_t *p, int n) { uint64_t v = 0; for (int i = 0; i < n; i++) v = v << 8 | p[i]; return v; }
long proto_scan_next(struct proto_scan *s, const uint8_t *buf, size_t len, size_t max_bytes, unsigned max_depth)
{
    size_t pos = s->pos;
    for (;;) {
        if (pos >= len) return len >= max_bytes ? -PROTO_E2BIG : 0;
        uint8_t b = buf[pos]; size_t hdr = 1; uint64_t body = 0, count = 0; int cont = 0;
        if (b <= 0x7f || b >= 0xe0 || (b >= 0xc0 && b <= 0xc3)) { if (b == 0xc1) return -PROTO_EINVAL; }
        else if (b >= 0xa0 && b <= 0xbf) body = b & 31;
        else if (b >= 0x90 && b <= 0x9f) { cont = 1; count = b & 15; }
        else if (b >= 0x80 && b <= 0x8f) { cont = 2; count = b & 15; }
        else {
            int ln = 0; 
            switch (b) {
            case 0xc4: case 0xd9: ln = 1; break; case 0xc5: case 0xda: ln = 2; break; case 0xc6: case 0xdb: ln = 4; break;
            case 0xc7: ln = 1; body = 1; break; case 0xc8: ln = 2; body = 1; break; case 0xc9: ln = 4; body = 1; break;
            case 0xca: body = 4; break; case 0xcb: body = 8; break; case 0xcc: case 0xd0: body = 1; break; case 0xcd: case 0xd1: body = 2; break;
            case 0xce: case 0xd2: body = 4; break; case 0xcf: case 0xd3: body = 8; break;
            case 0xd4: body = 2; break; case 0xd5: body = 3; break; case 0xd6: body = 5; break; case 0xd7: body = 9; break; case 0xd8: body = 17; break;
            case 0xdc: cont = 1; ln = 2; break; case 0xdd: cont = 1; ln = 4; break; case 0xde: cont = 2; ln = 2; break; case 0xdf: cont = 2; ln = 4; break;
            }
            if (pos + 1 + ln > len) return (pos + 1 + ln > max_bytes) ? -PROTO_E2BIG : 0;
            uint64_t v = be(buf + pos + 1, ln); hdr = 1 + ln;
            if (cont) count = v; else body += v;
        }
        if (cont) {
            uint64_t need = cont == 2 ? count * 2 : count;
            if (pos + hdr + need > max_bytes) return -PROTO_E2BIG;
            if (s->depth >= max_depth) return -PROTO_EDEPTH;
            pos += hdr;
            if (count) { s->left[++s->depth] = need; s->pos = pos; continue; }
        } else {
            if (pos + hdr + body > max_bytes) return -PROTO_E2BIG;
            if (pos + hdr + body > len) return 0;
            pos += hdr + body;
        }
        s->pos = pos;
        while (s->depth > 0 && --s->left[s->depth] == 0) s->depth--;
        if (s->depth == 0) return (long)pos;
    }
}
