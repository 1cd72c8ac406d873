/* What the few-row kernels (small_m.c, small_m_nn.c) share: the row limit and a product's arguments. */
#ifndef MLXPROOF_SMALL_M_H
#define MLXPROOF_SMALL_M_H

#define SMALL_M_MAX 32

/* A float32 weight held as exact blocks of 32 along k (packed_blocks.c). 4 bits (Q4_1): element
 * (r, 32 b + i) is scale[r, b] * q + offset[r, b], q the low nibble of codes[r, b, i] for i < 16,
 * else the high nibble of codes[r, b, i - 16]. 8 bits (Q8_0): scale[r, b] * q, q the signed byte
 * codes[r, b, i]; no offset. */
typedef struct packed {
  const float *w; /* the float32 weight it stands for */
  int n, k, ld;
  int bits;
  unsigned char *codes;
  float *scale, *offset;
} packed_t;

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
  const struct packed *packed; /* B's rows as exact blocks (packed_blocks.c), or NULL */
  int packed_row0;             /* B's first row among them */
} job_t;

int mlxproof_small_m_supported(void);

const packed_t *mlxproof_packed_find(const float *b, int n, int k, int ldb, int *row0);
void mlxproof_unpack_row(const packed_t *p, int row, float *out);

#endif
