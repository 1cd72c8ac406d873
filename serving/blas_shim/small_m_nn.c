/* Few-row products against a narrow row-major right-hand side, C = alpha * A . B + beta * C with
 * A M x K and B K x N (neither transposed; 1 <= M <= SMALL_M_MAX, N <= NN_MAX_N): in a decode step
 * these are attention's probabilities times its values, one product per sequence and KV head, with
 * N the head size and K the sequence's length.
 *
 * mlx-lm's attention runs each query head as its own one-row product (GEMV), and a step of 32
 * sequences makes thousands of them; a decode step of our own can give one product per KV head
 * with all of its query heads as rows instead. This kernel makes both sum alike: every output
 * element is one chain of fused multiply-adds over k in order, whatever M is and whichever tile
 * holds it, so grouping the rows does not change a number. Single-threaded: each product is tiny.
 */
#if defined(__x86_64__)
#include <immintrin.h>
#include <stddef.h>

#include "small_m.h"

#define NN_MAX_N 256
#define NN_MR 3 /* rows of A per tile */
#define NN_NV 4 /* 8-float columns of B per tile */

/* One tile: rows m0..m0+mr of C, columns n0..n0+8*nv (the last vector masked by `tail` when `last`). */
__attribute__((target("avx2,fma"), always_inline)) static inline void nn_tile(const job_t *j, int m0, int mr, int n0,
                                                                              int nv, int last, __m256i tail) {
  __m256 acc[NN_MR][NN_NV];
  for (int i = 0; i < mr; i++)
    for (int v = 0; v < nv; v++) acc[i][v] = _mm256_setzero_ps();
  for (int p = 0; p < j->k; p++) {
    const float *brow = j->b + (size_t)p * j->ldb + n0;
    __m256 bv[NN_NV];
    for (int v = 0; v < nv; v++)
      bv[v] = (last && v == nv - 1) ? _mm256_maskload_ps(brow + 8 * v, tail) : _mm256_loadu_ps(brow + 8 * v);
    for (int i = 0; i < mr; i++) {
      __m256 av = _mm256_broadcast_ss(j->a + (size_t)(m0 + i) * j->lda + p);
      for (int v = 0; v < nv; v++) acc[i][v] = _mm256_fmadd_ps(av, bv[v], acc[i][v]);
    }
  }
  __m256 alpha = _mm256_set1_ps(j->alpha), beta = _mm256_set1_ps(j->beta);
  for (int i = 0; i < mr; i++)
    for (int v = 0; v < nv; v++) {
      float *out = j->c + (size_t)(m0 + i) * j->ldc + n0 + 8 * v;
      int masked = last && v == nv - 1;
      __m256 r = _mm256_mul_ps(alpha, acc[i][v]);
      if (j->beta != 0.0f) /* beta == 0: C is never read */
        r = _mm256_fmadd_ps(beta, masked ? _mm256_maskload_ps(out, tail) : _mm256_loadu_ps(out), r);
      if (masked)
        _mm256_maskstore_ps(out, tail, r);
      else
        _mm256_storeu_ps(out, r);
    }
}

#define NN_CASE(MRV, NVV)                          \
  case (MRV) * 8 + (NVV):                          \
    nn_tile(j, m0, MRV, n0, NVV, last, tail);      \
    break;

__attribute__((target("avx2,fma"))) static void nn_product(const job_t *j) {
  int vectors = (j->n + 7) / 8, rem = j->n & 7;
  __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem ? rem : 8), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (int v0 = 0; v0 < vectors; v0 += NN_NV) {
    int nv = vectors - v0 < NN_NV ? vectors - v0 : NN_NV, n0 = 8 * v0;
    int last = rem != 0 && v0 + nv == vectors; /* this tile holds the partial vector */
    for (int m0 = 0; m0 < j->m; m0 += NN_MR) {
      int mr = j->m - m0 < NN_MR ? j->m - m0 : NN_MR;
      switch (mr * 8 + nv) { /* constant shapes, so each tile is fully unrolled */
        NN_CASE(1, 1) NN_CASE(1, 2) NN_CASE(1, 3) NN_CASE(1, 4)
        NN_CASE(2, 1) NN_CASE(2, 2) NN_CASE(2, 3) NN_CASE(2, 4)
        NN_CASE(3, 1) NN_CASE(3, 2) NN_CASE(3, 3) NN_CASE(3, 4)
      }
    }
  }
}

/* Returns 0 where it does not take the product (the caller then uses GEMV or GEMM). */
int mlxproof_small_m_sgemm_nn(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                              float beta, float *c, int ldc) {
  static int supported = -1;
  if (supported < 0) supported = mlxproof_small_m_supported();
  if (!supported || m < 1 || m > SMALL_M_MAX || n < 1 || n > NN_MAX_N || k < 1) return 0;
  job_t j = {m, n, k, alpha, beta, a, lda, b, ldb, c, ldc};
  nn_product(&j);
  return 1;
}

#else /* not x86-64: GEMV or GEMM takes every product */
int mlxproof_small_m_sgemm_nn(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                              float beta, float *c, int ldc) {
  return 0;
}
#endif
