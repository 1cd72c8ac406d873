/* cblas_* for MLX's Linux CPU backend, forwarded to the OpenBLAS of PyPI's scipy-openblas32.
 *
 * scipy-openblas32 exports only prefixed names (scipy_cblas_sgemm, ...), so it cannot be
 * preloaded as it is; this library, preloaded instead, gives MLX the plain names it imports
 * (nm -D libmlx.so: cblas_sgemm, cblas_dgemm, cblas_cgemm).
 *
 * MLX calls GEMM for every product, a decode step's one-row products included, and OpenBLAS's
 * GEMM is several times slower than its GEMV on a single row. So a row-major product whose
 * result is one row (M == 1) or one column (N == 1) goes to GEMV. With beta == 0 BLAS must
 * not read C, which MLX leaves uninitialised; GEMV scales y by beta, and 0 * NaN is NaN, so
 * the output is zeroed first.
 *
 * Single precision products of up to SMALL_M_MAX rows against a transposed weight (x @ W.T: every
 * projection of a decode step) go to small_m.c's kernel instead, which reads the weights once
 * rather than packing them, and sums every element alike whatever the row count. Those of up to
 * SMALL_M_MAX rows against a narrow B that is not transposed (attention's probabilities times its
 * values) go to small_m_nn.c's, which also sums every element alike whatever the row count, one
 * row (GEMV's case until now) included.
 */
#include <stddef.h>

typedef int blasint; /* scipy-openblas32: 32-bit integers (LP64) */

enum { ROW_MAJOR = 101, COL_MAJOR = 102 };
enum { NO_TRANS = 111, TRANS = 112 };

void scipy_cblas_sgemm(int, int, int, blasint, blasint, blasint, float, const float *, blasint,
                       const float *, blasint, float, float *, blasint);
void scipy_cblas_sgemv(int, int, blasint, blasint, float, const float *, blasint, const float *,
                       blasint, float, float *, blasint);
void scipy_cblas_dgemm(int, int, int, blasint, blasint, blasint, double, const double *, blasint,
                       const double *, blasint, double, double *, blasint);
void scipy_cblas_dgemv(int, int, blasint, blasint, double, const double *, blasint, const double *,
                       blasint, double, double *, blasint);
void scipy_cblas_cgemm(int, int, int, blasint, blasint, blasint, const void *, const void *, blasint,
                       const void *, blasint, const void *, void *, blasint);

int mlxproof_small_m_sgemm(int, int, int, float, const float *, int, const float *, int, float, float *, int);
int mlxproof_small_m_sgemm_nn(int, int, int, float, const float *, int, const float *, int, float, float *, int);
#define NO_SMALL_M(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) 0 /* double: GEMM as before */

/* Which path the last call took, for the tests: 0 gemm, 1 gemv over a row, 2 gemv over a column,
 * 3 the few-row kernel, 4 the few-row kernel for an untransposed B, 5 the few-row kernel reading a
 * packed weight (packed_blocks.c). */
static __thread int last_route = -1;
int mlxproof_shim_last_route(void) { return last_route; }

#define ROUTED_GEMM(NAME, T, GEMM, GEMV, SMALL_M, SMALL_NN)                                       \
  void NAME(int order, int ta, int tb, blasint m, blasint n, blasint k, T alpha, const T *a,      \
            blasint lda, const T *b, blasint ldb, T beta, T *c, blasint ldc) {                    \
    if (order == ROW_MAJOR && ta == NO_TRANS && tb == TRANS) {                                    \
      int taken = SMALL_M(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);                          \
      if (taken) {                                                                                \
        last_route = taken == 2 ? 5 : 3;                                                          \
        return;                                                                                   \
      }                                                                                           \
    }                                                                                             \
    if (order == ROW_MAJOR && ta == NO_TRANS && tb == NO_TRANS &&                                 \
        SMALL_NN(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) {                                 \
      last_route = 4;                                                                             \
      return;                                                                                     \
    }                                                                                             \
    if (order == ROW_MAJOR && m == 1 && n > 1 && k > 0) {                                         \
      /* c[0, :] = alpha * op(a)[0, :] . op(b) + beta * c: op(b) is k x n. */                     \
      if (beta == (T)0)                                                                           \
        for (blasint j = 0; j < n; j++) c[j] = (T)0;                                              \
      blasint incx = ta == NO_TRANS ? 1 : lda;                                                    \
      last_route = 1;                                                                             \
      if (tb == NO_TRANS) /* b is k x n: y = b^T x */                                             \
        GEMV(ROW_MAJOR, TRANS, k, n, alpha, b, ldb, a, incx, beta, c, 1);                         \
      else /* b is n x k: y = b x */                                                              \
        GEMV(ROW_MAJOR, NO_TRANS, n, k, alpha, b, ldb, a, incx, beta, c, 1);                      \
      return;                                                                                     \
    }                                                                                             \
    if (order == ROW_MAJOR && n == 1 && m > 1 && k > 0) {                                         \
      /* c[:, 0] = alpha * op(a) . op(b)[:, 0] + beta * c: op(a) is m x k. */                     \
      if (beta == (T)0)                                                                           \
        for (blasint i = 0; i < m; i++) c[(size_t)i * ldc] = (T)0;                                \
      blasint incx = tb == NO_TRANS ? ldb : 1;                                                    \
      last_route = 2;                                                                             \
      if (ta == NO_TRANS) /* a is m x k: y = a x */                                               \
        GEMV(ROW_MAJOR, NO_TRANS, m, k, alpha, a, lda, b, incx, beta, c, ldc);                    \
      else /* a is k x m: y = a^T x */                                                            \
        GEMV(ROW_MAJOR, TRANS, k, m, alpha, a, lda, b, incx, beta, c, ldc);                       \
      return;                                                                                     \
    }                                                                                             \
    last_route = 0;                                                                               \
    GEMM(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);                            \
  }

ROUTED_GEMM(cblas_sgemm, float, scipy_cblas_sgemm, scipy_cblas_sgemv, mlxproof_small_m_sgemm, mlxproof_small_m_sgemm_nn)
ROUTED_GEMM(cblas_dgemm, double, scipy_cblas_dgemm, scipy_cblas_dgemv, NO_SMALL_M, NO_SMALL_M)

void cblas_cgemm(int order, int ta, int tb, blasint m, blasint n, blasint k, const void *alpha,
                 const void *a, blasint lda, const void *b, blasint ldb, const void *beta, void *c,
                 blasint ldc) {
  last_route = 0;
  scipy_cblas_cgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
