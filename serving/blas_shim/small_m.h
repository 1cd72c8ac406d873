/* What the few-row kernels (small_m.c, small_m_nn.c) share: the row limit and a product's arguments. */
#ifndef MLXPROOF_SMALL_M_H
#define MLXPROOF_SMALL_M_H

#define SMALL_M_MAX 32

/* C = alpha * A . op(B) + beta * C, row-major, with these leading dimensions. */
typedef struct {
  int m, n, k;
  float alpha, beta;
  const float *a;
  int lda;
  const float *b;
  int ldb;
  float *c;
  int ldc;
} job_t;

int mlxproof_small_m_supported(void);

#endif
