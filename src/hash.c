/*
 * Hashes shared by the generic layer and the backends: FNV-1a for file names and torn-file checks,
 * SipHash-2-4 for the OpenCL cache's keyed integrity check.
 */
#include <string.h>

#include "internal.h"

uint64_t ssmax_fnv64(const void *p, size_t n, uint64_t h)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1, v1 = ROTL64(v1, 13), v1 ^= v0, v0 = ROTL64(v0, 32);                              \
        v2 += v3, v3 = ROTL64(v3, 16), v3 ^= v2;                                                   \
        v0 += v3, v3 = ROTL64(v3, 21), v3 ^= v0;                                                   \
        v2 += v1, v1 = ROTL64(v1, 17), v1 ^= v2, v2 = ROTL64(v2, 32);                              \
    } while (0)

/* SipHash-2-4 (Aumasson and Bernstein), little-endian words. */
uint64_t ssmax_siphash24(const uint64_t k[2], const void *data, size_t n)
{
    const unsigned char *in = data;
    uint64_t v0 = 0x736f6d6570736575ull ^ k[0], v1 = 0x646f72616e646f6dull ^ k[1];
    uint64_t v2 = 0x6c7967656e657261ull ^ k[0], v3 = 0x7465646279746573ull ^ k[1];
    uint64_t last = (uint64_t)n << 56;
    size_t whole = n - n % 8;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = 0;
        for (int j = 7; j >= 0; j--)
            m = m << 8 | in[i + (size_t)j];
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t j = 0; j < n % 8; j++)
        last |= (uint64_t)in[whole + j] << (8 * j);
    v3 ^= last;
    SIPROUND;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    for (int r = 0; r < 4; r++)
        SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* SipHash of the binary under a key derived from the secret and the entry's key string, so a
 * binary moved under another key fails too. */
uint64_t ssmax_cache_mac(const uint64_t secret[2], const char *key, const void *bin, size_t n)
{
    uint64_t k2[2], k1[2] = { secret[0], secret[1] ^ 0x5353415843414331ull };
    k2[0] = ssmax_siphash24(secret, key, strlen(key));
    k2[1] = ssmax_siphash24(k1, key, strlen(key));
    return ssmax_siphash24(k2, bin, n);
}
