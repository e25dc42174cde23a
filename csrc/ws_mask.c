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
  uint8_t k[16]; /* the key as seen from position offset + i */
  for (size_t j = 0; j < 4; j++)
    k[j] = key[(offset + i + j) & 3];
  memcpy(k + 4, k, 4);
  memcpy(k + 8, k, 8);
  size_t start = i;
#ifdef __SSE2__
  if (len - i >= 16) {
    __m128i kv = _mm_loadu_si128((const __m128i *)(const void *)k);
    for (; len - i >= 16; i += 16) {
      __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
      _mm_storeu_si128((__m128i *)(void *)(dst + i), _mm_xor_si128(v, kv));
    }
  }
#endif
  uint64_t kw = wsuv__load64(k);
  for (; len - i >= 8; i += 8)
    wsuv__store64(dst + i, wsuv__load64(src + i) ^ kw);
  for (; i < len; i++)
    dst[i] = (uint8_t)(src[i] ^ k[(i - start) & 3]);
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
