/* ws_mask.c: RFC 6455 5.3 payload masking. The XOR with a 4-byte key
 * repeats every 4 bytes, so a key rotated to the current position and
 * replicated to 8 or 16 bytes masks a whole word at once. */
#include "ws_internal.h"

#include <stdint.h>
#include <string.h>

#ifdef __SSE2__
#  include <emmintrin.h>
#endif

size_t wsuv_mask_scalar(uint8_t *buf, size_t len, const uint8_t key[4],
                        size_t offset) {
  offset &= 3;
  for (size_t i = 0; i < len; i++)
    buf[i] ^= key[(offset + i) & 3];
  return (offset + len) & 3;
}

/* Shared by wsuv_mask (dst == src) and wsuv_mask_copy (disjoint). Every
 * load of a block happens before its store, so dst == src is safe. */
static size_t mask_run(uint8_t *dst, const uint8_t *src, size_t len,
                       const uint8_t key[4], size_t offset) {
  offset &= 3;
  size_t end = (offset + len) & 3;
  size_t i = 0;
  if (len >= 256) {
    /* Align the stores of long runs; loads from src may stay unaligned.
     * (Short payloads, most messages, skip this and the byte loop.) */
    size_t head = (size_t)(-(uintptr_t)dst & 15u);
    for (; i < head; i++)
      dst[i] = (uint8_t)(src[i] ^ key[(offset + i) & 3]);
  }
  /* The key as seen from position offset + i, built in registers: bytes
   * stored one by one and then loaded as a word stall store forwarding,
   * which cost a 32-byte message three times the XOR itself (perf). */
  uint32_t k32;
  memcpy(&k32, key, 4);
  unsigned rot = (unsigned)((offset + i) & 3) * 8;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  if (rot) k32 = k32 << rot | k32 >> (32 - rot);
#else
  if (rot) k32 = k32 >> rot | k32 << (32 - rot);
#endif
#ifdef __SSE2__
  if (len - i >= 16) {
    __m128i kv = _mm_set1_epi32((int)k32);
    for (; len - i >= 16; i += 16) {
      __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
      _mm_storeu_si128((__m128i *)(void *)(dst + i), _mm_xor_si128(v, kv));
    }
  }
#endif
  uint64_t kw = (uint64_t)k32 << 32 | k32;
  for (; len - i >= 8; i += 8)
    wsuv__store64(dst + i, wsuv__load64(src + i) ^ kw);
  if (len - i >= 4) {
    uint32_t w;
    memcpy(&w, src + i, 4);
    w ^= k32;
    memcpy(dst + i, &w, 4);
    i += 4;
  }
  for (; i < len; i++)
    dst[i] = (uint8_t)(src[i] ^ key[(offset + i) & 3]);
  return end;
}

size_t wsuv_mask(uint8_t *buf, size_t len, const uint8_t key[4],
                 size_t offset) {
  return mask_run(buf, buf, len, key, offset);
}

size_t wsuv_mask_copy(uint8_t *dst, const uint8_t *src, size_t len,
                      const uint8_t key[4], size_t offset) {
  return mask_run(dst, src, len, key, offset);
}
