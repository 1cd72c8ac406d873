/* Few-row products (1 <= M <= SMALL_M_MAX) against a row-major weight, for the decode steps of
 * 1..SMALL_M_MAX streams: C = alpha * A . B^T + beta * C, A M x K, B N x K (x @ W.T, as MLX asks for
 * it). OpenBLAS's GEMM packs all of B on every call, so a 10-row product through a 113 MB lm_head
 * costs about three passes over the weights; this kernel reads each weight row once, from where it
 * lies, and keeps the few activation rows hot in cache. One row comes here too, not to GEMV (as fast
 * here), so that a row sums alike alone and batched.
 *
 * Every output element is one dot product summed the same way (8 lanes over k, then the lanes in a
 * fixed order), whatever M is and whichever tile holds it, so a sequence's numbers do not depend
 * on what else is in the batch.
 *
 * Columns are split across a small pool of threads (as many as OpenBLAS uses). A caller that finds
 * the pool busy (another thread's product) computes alone rather than wait.
 */
#if defined(__x86_64__)
#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include "small_m.h"

#define MAX_THREADS 64
#define NR 3 /* weight rows per tile */
#define MR 4 /* activation rows per tile */
/* Each thread gets at least this many multiply-adds: below it, waking one costs more than it saves. */
#define PARALLEL_MIN_MACS (256 * 1024)

int scipy_openblas_get_num_threads(void);

/* ---- the kernel ---------------------------------------------------------------------------- */

__attribute__((target("avx2,fma"))) static inline float hsum8(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);                 /* lanes i + (i+4) */
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));        /* + (i+2) */
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55)); /* + (i+1) */
  return _mm_cvtss_f32(s);
}

/* One tile: rows m0..m0+mr of A against rows n0..n0+nr of B, the whole of k. `ahead`, where not
 * NULL, is the next tile's first weight row (rows are ldb apart), fetched into cache meanwhile: the
 * weights come from memory once, and the fetch overlaps the arithmetic instead of stalling it. */
__attribute__((target("avx2,fma"), always_inline)) static inline void tile(const job_t *j, int m0, int mr, int n0,
                                                                           int nr, __m256i tail, const float *ahead) {
  __m256 acc[MR][NR];
  for (int i = 0; i < mr; i++)
    for (int q = 0; q < nr; q++) acc[i][q] = _mm256_setzero_ps();
  const float *bq[NR];
  for (int q = 0; q < nr; q++) bq[q] = j->b + (size_t)(n0 + q) * j->ldb;
  int k8 = j->k & ~7;
  for (int p = 0; p < k8; p += 8) {
    if (ahead && (p & 15) == 0)
      for (int q = 0; q < NR; q++) _mm_prefetch((const char *)(ahead + (size_t)q * j->ldb + p), _MM_HINT_T0);
    __m256 bv[NR];
    for (int q = 0; q < nr; q++) bv[q] = _mm256_loadu_ps(bq[q] + p);
    for (int i = 0; i < mr; i++) {
      __m256 av = _mm256_loadu_ps(j->a + (size_t)(m0 + i) * j->lda + p);
      for (int q = 0; q < nr; q++) acc[i][q] = _mm256_fmadd_ps(av, bv[q], acc[i][q]);
    }
  }
  if (k8 < j->k) { /* the last k % 8: masked loads read zeros past the end, and 0 * 0 adds nothing */
    __m256 bv[NR];
    for (int q = 0; q < nr; q++) bv[q] = _mm256_maskload_ps(bq[q] + k8, tail);
    for (int i = 0; i < mr; i++) {
      __m256 av = _mm256_maskload_ps(j->a + (size_t)(m0 + i) * j->lda + k8, tail);
      for (int q = 0; q < nr; q++) acc[i][q] = _mm256_fmadd_ps(av, bv[q], acc[i][q]);
    }
  }
  for (int i = 0; i < mr; i++) {
    float *row = j->c + (size_t)(m0 + i) * j->ldc + n0;
    for (int q = 0; q < nr; q++) {
      float dot = j->alpha * hsum8(acc[i][q]);
      row[q] = j->beta == 0.0f ? dot : dot + j->beta * row[q]; /* beta == 0: C is never read */
    }
  }
}

#define TILE_CASE(MRV, NRV) \
  case (MRV) * 8 + (NRV):   \
    tile(j, m0, MRV, n0, NRV, tail, ahead); \
    break;

__attribute__((target("avx2,fma"))) static void columns(const job_t *j, int n_begin, int n_end) {
  int rem = j->k & 7;
  __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (int n0 = n_begin; n0 < n_end; n0 += NR) {
    int nr = n_end - n0 < NR ? n_end - n0 : NR;
    /* The fetch of the next weight rows rides on the first activation tile only (all of its rows). */
    const float *next = n0 + 2 * NR <= n_end ? j->b + (size_t)(n0 + NR) * j->ldb : NULL;
    for (int m0 = 0; m0 < j->m; m0 += MR) {
      const float *ahead = m0 == 0 ? next : NULL;
      int mr = j->m - m0 < MR ? j->m - m0 : MR;
      switch (mr * 8 + nr) { /* constant shapes, so each tile is fully unrolled */
        TILE_CASE(1, 1) TILE_CASE(1, 2) TILE_CASE(1, 3)
        TILE_CASE(2, 1) TILE_CASE(2, 2) TILE_CASE(2, 3)
        TILE_CASE(3, 1) TILE_CASE(3, 2) TILE_CASE(3, 3)
        TILE_CASE(4, 1) TILE_CASE(4, 2) TILE_CASE(4, 3)
      }
    }
  }
}

/* ---- the pool ------------------------------------------------------------------------------ */

static struct {
  pid_t owner; /* the process whose workers these are */
  int threads;
  int parts; /* threads taking part in the current job */
  atomic_flag busy;
  pthread_mutex_t mu;
  pthread_cond_t wake;
  atomic_ulong generation;
  atomic_int pending;
  job_t job;
} pool = {.busy = ATOMIC_FLAG_INIT, .mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static void share(const job_t *j, int part, int parts) {
  int blocks = (j->n + NR - 1) / NR;
  int lo = (int)((long)blocks * part / parts) * NR, hi = (int)((long)blocks * (part + 1) / parts) * NR;
  columns(j, lo, hi < j->n ? hi : j->n);
}

static void *worker(void *arg) {
  int part = (int)(intptr_t)arg;
  unsigned long seen = 0;
  for (;;) {
    /* Sleep, not spin, between products: a spinning worker takes a core from MLX's own threads,
     * which run the rest of the step (measured: a decode step 15-20% slower with a 0.4 ms spin).
     * The job is copied under the lock that published it, with its generation, so a worker that
     * wakes late can neither take a job twice nor mix two jobs' fields. */
    pthread_mutex_lock(&pool.mu);
    while (atomic_load(&pool.generation) == seen) pthread_cond_wait(&pool.wake, &pool.mu);
    seen = atomic_load(&pool.generation);
    job_t job = pool.job;
    int parts = pool.parts;
    pthread_mutex_unlock(&pool.mu);
    if (part < parts) {
      share(&job, part, parts);
      atomic_fetch_sub(&pool.pending, 1);
    }
  }
  return NULL;
}

/* A forked child has none of its parent's workers, and the parent's lock or job may have been
 * mid-flight: it starts from a fresh pool (generation 0, so new workers wait for a new job). */
static void pool_after_fork(void) {
  pthread_mutex_init(&pool.mu, NULL);
  pthread_cond_init(&pool.wake, NULL);
  atomic_store(&pool.generation, 0);
  atomic_store(&pool.pending, 0);
  atomic_flag_clear(&pool.busy);
  pool.owner = 0;
}

__attribute__((constructor)) static void register_fork_handler(void) { pthread_atfork(NULL, NULL, pool_after_fork); }

static int start_pool(void) {
  pid_t me = getpid();
  if (pool.owner == me) return pool.threads;
  int want = scipy_openblas_get_num_threads();
  want = want < 1 ? 1 : want > MAX_THREADS ? MAX_THREADS : want;
  int started = 1;
  for (; started < want; started++) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int failed = pthread_create(&t, &attr, worker, (void *)(intptr_t)started);
    pthread_attr_destroy(&attr);
    if (failed) break;
  }
  pool.threads = started;
  pool.owner = me;
  return started;
}

/* ---- the entry ----------------------------------------------------------------------------- */

int mlxproof_small_m_supported(void) {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* C = alpha * A . B^T + beta * C for row-major A (m x k) and B (n x k); returns 0 where it does not
 * take the product (the caller then uses GEMM). */
int mlxproof_small_m_sgemm(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                           float beta, float *c, int ldc) {
  static int supported = -1;
  if (supported < 0) supported = mlxproof_small_m_supported();
  if (!supported || m < 1 || m > SMALL_M_MAX || n < 1 || k < 1) return 0;
  job_t j = {m, n, k, alpha, beta, a, lda, b, ldb, c, ldc};
  long by_work = (long)m * n * k / PARALLEL_MIN_MACS; /* threads the work is worth */
  if (by_work < 2 || atomic_flag_test_and_set(&pool.busy)) {
    columns(&j, 0, n);
    return 1;
  }
  int parts = start_pool();
  parts = by_work < parts ? (int)by_work : parts;
  if (parts > 1) {
    pthread_mutex_lock(&pool.mu);
    pool.job = j;
    pool.parts = parts;
    atomic_store(&pool.pending, parts - 1);
    atomic_fetch_add(&pool.generation, 1);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);
  }
  share(&j, 0, parts);
  while (atomic_load(&pool.pending) > 0) _mm_pause();
  atomic_flag_clear(&pool.busy);
  return 1;
}

#else /* not x86-64: GEMM takes every product */
int mlxproof_small_m_supported(void) { return 0; }
int mlxproof_small_m_sgemm(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                           float beta, float *c, int ldc) {
  return 0;
}
#endif
