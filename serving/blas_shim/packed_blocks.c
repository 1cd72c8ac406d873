/* Weights that are exactly GGUF blocks, kept as such for the few-row kernel (small_m.c).
 *
 * A model converted from a GGUF holds float32 weights that are, to the bit, what gguf-py's
 * dequantisation made of the file's blocks of 32 along k: scale * q + offset for Q4_1's 4-bit q,
 * scale * q for Q8_0's 8-bit q (float32 products, then the sums). A decode step reads every weight
 * once, so at a few rows it is bound by reading 4 bytes a weight; the blocks hold the same numbers
 * in 0.75 (Q4_1) or 1.125 (Q8_0) bytes. The kernel turns a tile's rows back into the very same
 * float32 values in cache and multiplies them as before, so every product is the same to the bit.
 *
 * A weight is packed only if unpacking it, with the routine the kernel uses, gives back every one
 * of its floats bit for bit; otherwise it is left as it is. The server packs a model's weights
 * once after loading (serving/engine/packed_weights.py) and keeps those arrays alive for the
 * process's life, so a registered address never comes back as another buffer.
 */
#if defined(__x86_64__)
#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "small_m.h"

#define BLOCK 32

/* The two block kinds: Q4_1 (q in 0..15, offset = the block's minimum) and Q8_0 (q in -128..127,
 * no offset). */
typedef struct {
  int bits, qmin, qmax, affine;
} format_t;
static const format_t Q4_1 = {4, 0, 15, 1}, Q8_0 = {8, -128, 127, 0};

static size_t code_bytes(int bits) { return (size_t)BLOCK * bits / 8; }

/* The registry: an immutable snapshot of entries sorted by address, replaced whole on every
 * registration, so a product looks a weight up without a lock. Old snapshots are kept (a model
 * registers a few hundred weights once). */
typedef struct {
  int count;
  packed_t *entries[];
} snapshot_t;

static _Atomic(snapshot_t *) current;
static pthread_mutex_t register_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_long packed_bytes;

/* Row `row` of p, all of k, into out. Q4_1's product and sum are two roundings, as gguf-py's
 * `d * q + m` in float32; the empty asm keeps a compiler from fusing them into one. */
__attribute__((target("avx2"))) void mlxproof_unpack_row(const packed_t *p, int row, float *out) {
  int blocks = p->k / BLOCK;
  size_t per_block = code_bytes(p->bits);
  const uint8_t *codes = p->codes + (size_t)row * blocks * per_block;
  const float *scale = p->scale + (size_t)row * blocks;
  if (p->bits == 8) {
    for (int b = 0; b < blocks; b++, out += BLOCK) {
      const uint8_t *c = codes + (size_t)b * per_block;
      __m256 d = _mm256_set1_ps(scale[b]);
      for (int s = 0; s < 4; s++) {
        __m128i q = _mm_loadl_epi64((const __m128i *)(c + 8 * s));
        _mm256_storeu_ps(out + 8 * s, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
      }
    }
    return;
  }
  const float *offset = p->offset + (size_t)row * blocks;
  const __m128i nibble = _mm_set1_epi8(0x0f);
  for (int b = 0; b < blocks; b++, out += BLOCK) {
    __m128i v = _mm_loadu_si128((const __m128i *)(codes + (size_t)b * per_block));
    __m128i lo = _mm_and_si128(v, nibble), hi = _mm_and_si128(_mm_srli_epi16(v, 4), nibble);
    __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    __m256 d = _mm256_set1_ps(scale[b]), m = _mm256_set1_ps(offset[b]);
    for (int s = 0; s < 4; s++) {
      __m256 prod = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[s])));
      __asm__("" : "+x"(prod));
      _mm256_storeu_ps(out + 8 * s, _mm256_add_ps(prod, m));
    }
  }
}

/* v's code under (d, m) in format f: the q whose d * q (+ m) is v, or qmin - 1. */
static int code_for(const format_t *f, float v, float d, float m) {
  int c = d == 0.0f ? 0 : (int)__builtin_lroundf((v - m) / d);
  for (int t = 0; t < 3; t++) {
    int q = c + (t == 1 ? -1 : t == 2 ? 1 : 0);
    if (q < f->qmin || q > f->qmax) continue;
    volatile float prod = d * (float)q; /* rounded on its own, as the unpacking does */
    if ((f->affine ? prod + m : prod) == v) return q;
  }
  return f->qmin - 1;
}

static int block_codes(const format_t *f, const float *v, float d, float m, int8_t q[BLOCK]) {
  for (int i = 0; i < BLOCK; i++) {
    int c = code_for(f, v[i], d, m);
    if (c < f->qmin) return 0;
    q[i] = (int8_t)c; /* Q4_1's 0..15 fit too */
  }
  return 1;
}

/* A block's scale (and offset) and codes. The scale, a half-precision number in the file, is found
 * among the half-precision values next to span / top for the largest code, then smaller ones. Q4_1:
 * the offset is the block's minimum (q = 0 there: GGUF sets it so), span the max minus it. Q8_0:
 * span is the largest magnitude. */
__attribute__((target("f16c"))) static int fit_block(const format_t *f, const float *v, float *d, float *m,
                                                     int8_t q[BLOCK]) {
  float lo = v[0], hi = v[0], mag = 0.0f;
  for (int i = 0; i < BLOCK; i++) {
    lo = v[i] < lo ? v[i] : lo, hi = v[i] > hi ? v[i] : hi;
    float a = v[i] < 0 ? -v[i] : v[i];
    mag = a > mag ? a : mag;
  }
  *m = f->affine ? lo : 0.0f;
  float span = f->affine ? hi - lo : mag;
  if (span == 0.0f) {
    *d = 0.0f;
    return block_codes(f, v, 0.0f, *m, q); /* all equal (Q4_1) or all zero (Q8_0) */
  }
  for (int top = f->qmax; top >= 1; top--) {
    int half = _cvtss_sh(span / (float)top, _MM_FROUND_TO_NEAREST_INT);
    for (int step = 0; step <= 6; step++) {
      int h = half + (step % 2 ? (step + 1) / 2 : -(step / 2)); /* 0, +1, -1, +2, -2, ... */
      if (h <= 0 || h >= 0x7c00) continue;
      *d = _cvtsh_ss((unsigned short)h);
      if (block_codes(f, v, *d, *m, q)) return 1;
    }
  }
  return 0;
}

static int find_index(const snapshot_t *s, const float *w) { /* the last entry whose weight starts at or before w */
  int lo = 0, hi = s ? s->count - 1 : -1, found = -1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (s->entries[mid]->w <= w) found = mid, lo = mid + 1;
    else hi = mid - 1;
  }
  return found;
}

/* The packed rows behind B (n x k, rows ldb apart), or NULL. B may be a run of whole rows inside
 * a packed weight; *row0 says where it starts. */
const packed_t *mlxproof_packed_find(const float *b, int n, int k, int ldb, int *row0) {
  const snapshot_t *s = atomic_load_explicit(&current, memory_order_acquire);
  int at = find_index(s, b);
  if (at < 0) return NULL;
  const packed_t *p = s->entries[at];
  ptrdiff_t offset = b - p->w;
  if (p->k != k || p->ld != ldb || offset % ldb != 0) return NULL;
  ptrdiff_t first = offset / ldb;
  if (first + n > p->n) return NULL;
  *row0 = (int)first;
  return p;
}

static void free_packed(packed_t *p) {
  if (!p) return;
  free(p->codes), free(p->scale), free(p->offset), free(p);
}

/* w as blocks of format f: the packed copy, or NULL when a block is not exact (or out of memory). */
static packed_t *pack_as(const format_t *f, const float *w, int n, int k, int ld) {
  int blocks = k / BLOCK;
  size_t per_block = code_bytes(f->bits), count = (size_t)n * blocks;
  packed_t *p = calloc(1, sizeof *p);
  float *check = malloc((size_t)k * sizeof(float));
  if (!p || !check) return free(p), free(check), NULL;
  *p = (packed_t){w, n, k, ld, f->bits, malloc(count * per_block), malloc(count * sizeof(float)),
                  f->affine ? malloc(count * sizeof(float)) : NULL};
  int ok = p->codes && p->scale && (p->offset || !f->affine);
  for (int r = 0; r < n && ok; r++) {
    for (int b = 0; b < blocks && ok; b++) {
      int8_t q[BLOCK];
      size_t at = (size_t)r * blocks + b;
      float m;
      ok = fit_block(f, w + (size_t)r * ld + (size_t)b * BLOCK, &p->scale[at], &m, q);
      if (f->affine) p->offset[at] = m;
      uint8_t *out = p->codes + at * per_block;
      if (f->bits == 8) memcpy(out, q, BLOCK);
      else
        for (int i = 0; i < BLOCK / 2; i++) out[i] = (uint8_t)(q[i] | q[i + BLOCK / 2] << 4);
    }
    /* The proof: the kernel's own unpacking gives back the row, bit for bit. */
    if (ok) {
      mlxproof_unpack_row(p, r, check);
      ok = memcmp(check, w + (size_t)r * ld, (size_t)k * sizeof(float)) == 0;
    }
  }
  free(check);
  if (!ok) free_packed(p), p = NULL;
  return p;
}

/* Pack w (n x k float32, rows ld apart) if every block is exact in one of the formats. Returns
 * the bits per code it is read with (4 or 8; also for rows of a weight packed before), 0: not
 * exact, left as it is; -1: not a shape this can pack, or out of memory. */
int mlxproof_pack_exact(const float *w, int n, int k, int ld) {
  if (!w || n < 1 || k < BLOCK || k % BLOCK != 0 || ld < k || !__builtin_cpu_supports("avx2") ||
      !__builtin_cpu_supports("f16c"))
    return -1;
  int row0;
  const packed_t *known = mlxproof_packed_find(w, n, k, ld, &row0);
  if (known) return known->bits;
  packed_t *p = pack_as(&Q4_1, w, n, k, ld);
  if (!p) p = pack_as(&Q8_0, w, n, k, ld);
  if (!p) return 0;

  pthread_mutex_lock(&register_mu);
  if ((known = mlxproof_packed_find(w, n, k, ld, &row0))) { /* another thread packed it meanwhile */
    pthread_mutex_unlock(&register_mu);
    free_packed(p);
    return known->bits;
  }
  snapshot_t *old = atomic_load(&current);
  int count = old ? old->count : 0, at = find_index(old, w);
  snapshot_t *next = malloc(sizeof *next + (size_t)(count + 1) * sizeof(packed_t *));
  if (!next) {
    pthread_mutex_unlock(&register_mu);
    free_packed(p);
    return -1;
  }
  next->count = count + 1;
  for (int i = 0, o = 0; i <= count; i++) next->entries[i] = i == at + 1 ? p : old->entries[o++];
  atomic_store_explicit(&current, next, memory_order_release);
  size_t blocks = (size_t)n * (k / BLOCK);
  atomic_fetch_add(&packed_bytes, (long)(blocks * (code_bytes(p->bits) + (p->offset ? 2 : 1) * sizeof(float))));
  pthread_mutex_unlock(&register_mu);
  return p->bits;
}

/* Bytes the packed copies hold, for /health. */
long mlxproof_packed_bytes(void) { return atomic_load(&packed_bytes); }

#else /* not x86-64: nothing is packed */
#include <stddef.h>

#include "small_m.h"
const packed_t *mlxproof_packed_find(const float *b, int n, int k, int ldb, int *row0) { return NULL; }
void mlxproof_unpack_row(const packed_t *p, int row, float *out) {}
int mlxproof_pack_exact(const float *w, int n, int k, int ld) { return -1; }
long mlxproof_packed_bytes(void) { return 0; }
#endif
