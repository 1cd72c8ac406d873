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
 *
 * A weight the engine packed (packed_blocks.c: float32 weights that are exactly GGUF blocks) is
 * read as its blocks: each weight tile's rows are unpacked into a per-thread buffer, to the same
 * floats, and the tiles run over that buffer as over the weight itself.
 */
#if defined(__x86_64__)
#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "small_m.h"

#define MAX_THREADS 64
#define NR 3 /* weight rows per tile */
#define MR 4 /* activation rows per tile */
#define FETCH_TILES_AHEAD 2
/* Each chunk a thread takes holds at least this many multiply-adds: below it, waking a worker costs
 * more than it saves. */
#define PARALLEL_MIN_MACS (256 * 1024)
#define MAX_CHUNKS 64

int scipy_openblas_get_num_threads(void);

/* ---- the kernel ---------------------------------------------------------------------------- */

__attribute__((target("avx2,fma"))) static inline float hsum8(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);                 /* lanes i + (i+4) */
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));        /* + (i+2) */
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55)); /* + (i+1) */
  return _mm_cvtss_f32(s);
}

/* The weight rows a later tile will read, fetched into cache a line at a time while this tile
 * computes: the weights come from memory once, and the fetch overlaps the arithmetic instead of
 * stalling it. The lines are spread evenly over every activation tile of the current weight tile
 * (measured: a burst of them in the first activation tile alone left a 10-row product 10-15%
 * slower, the fetches queueing behind each other). */
typedef struct {
  const float *rows; /* the first row to fetch; rows are ldb apart */
  int nr, q, o;      /* rows to fetch, and the cursor: row q, float o */
  int per_step;      /* lines fetched per 8 floats of k */
} fetch_t;

/* One tile: rows m0..m0+mr of A against rows n0..n0+nr of B, the whole of k; B's rows read from
 * b0, ldb apart (the weight itself, or its rows unpacked). */
__attribute__((target("avx2,fma"), always_inline)) static inline void tile(const job_t *j, int m0, int mr, int n0,
                                                                           int nr, const float *b0, int ldb,
                                                                           __m256i tail, fetch_t *f) {
  __m256 acc[MR][NR];
  for (int i = 0; i < mr; i++)
    for (int q = 0; q < nr; q++) acc[i][q] = _mm256_setzero_ps();
  const float *bq[NR];
  for (int q = 0; q < nr; q++) bq[q] = b0 + (size_t)q * ldb;
  int k8 = j->k & ~7;
  for (int p = 0; p < k8; p += 8) {
    for (int s = 0; s < f->per_step && f->q < f->nr; s++) {
      _mm_prefetch((const char *)(f->rows + (size_t)f->q * j->ldb + f->o), _MM_HINT_T0);
      if ((f->o += 16) >= j->k) f->o = 0, f->q++;
    }
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
    tile(j, m0, MRV, n0, NRV, b0, ldb, tail, &f); \
    break;

/* Room for NR unpacked weight rows, one per thread: they stay in cache while every activation
 * tile reads them. */
static float *unpacked_rows(int k) {
  static __thread float *rows;
  static __thread int room;
  if (room < k) {
    free(rows);
    rows = aligned_alloc(64, ((size_t)NR * k * sizeof(float) + 63) & ~(size_t)63);
    room = rows ? k : 0;
  }
  return rows;
}

__attribute__((target("avx2,fma"))) static void columns(const job_t *j, int n_begin, int n_end) {
  float *unpacked = j->packed ? unpacked_rows(j->k) : NULL;
  if (j->packed && !unpacked) { /* no memory for three rows: the float32 weight is still there */
    job_t plain = *j;
    plain.packed = NULL;
    columns(&plain, n_begin, n_end);
    return;
  }
  int rem = j->k & 7;
  __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  int m_tiles = (j->m + MR - 1) / MR, steps = (j->k + 7) / 8, lines_per_row = (j->k + 15) / 16;
  for (int n0 = n_begin; n0 < n_end; n0 += NR) {
    int nr = n_end - n0 < NR ? n_end - n0 : NR;
    /* Two weight tiles ahead (one, four and eight measured about the same: spreading the fetches
     * over the tile is what paid, not their distance). */
    int ahead = n0 + FETCH_TILES_AHEAD * NR, ahead_nr = ahead < n_end ? (n_end - ahead < NR ? n_end - ahead : NR) : 0;
    const float *b0 = j->b + (size_t)n0 * j->ldb;
    int ldb = j->ldb;
    if (j->packed) { /* a fifth of the bytes or less to fetch, and the same floats in cache */
      for (int q = 0; q < nr; q++) mlxproof_unpack_row(j->packed, j->packed_row0 + n0 + q, unpacked + (size_t)q * j->k);
      b0 = unpacked, ldb = j->k, ahead_nr = 0;
    }
    fetch_t f = {ahead_nr ? j->b + (size_t)ahead * j->ldb : NULL, ahead_nr, 0, 0, 0};
    f.per_step = (ahead_nr * lines_per_row + m_tiles * steps - 1) / (m_tiles * steps);
    for (int m0 = 0; m0 < j->m; m0 += MR) {
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
  atomic_flag busy;
  pthread_mutex_t mu;
  pthread_cond_t wake;
  atomic_ulong generation;
  /* The current job's chunks, handed out one at a time: the job's generation (low 32 bits) above
   * the next chunk's index. A thread holding another generation's job can take nothing. */
  atomic_ullong ticket;
  atomic_int finished; /* chunks done */
  int chunks;
  job_t job;
} pool = {.busy = ATOMIC_FLAG_INIT, .mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

/* Chunk c of `chunks`: whole weight tiles, so a column's sum never depends on the split. */
static void chunk(const job_t *j, int c, int chunks) {
  int blocks = (j->n + NR - 1) / NR;
  int lo = (int)((long)blocks * c / chunks) * NR, hi = (int)((long)blocks * (c + 1) / chunks) * NR;
  columns(j, lo, hi < j->n ? hi : j->n);
}

/* Take chunks of generation `gen` until none is left. Threads share a product this way, not by
 * fixed halves, because a worker often wakes late (its core busy with the Python thread, or the
 * VM slow to deliver the wake-up): with halves the caller then spun for it, about a fifth of a
 * decode step's critical path (perf, 10 rows); with chunks it takes the late worker's share. */
static void take_chunks(const job_t *j, unsigned long gen, int chunks) {
  unsigned long long mine = (unsigned long long)(uint32_t)gen << 32;
  for (;;) {
    unsigned long long t = atomic_load(&pool.ticket);
    if ((t & ~0xffffffffULL) != mine || (int)(t & 0xffffffffULL) >= chunks) return;
    if (!atomic_compare_exchange_weak(&pool.ticket, &t, t + 1)) continue;
    chunk(j, (int)(t & 0xffffffffULL), chunks);
    atomic_fetch_add(&pool.finished, 1);
  }
}

static void *worker(void *arg) {
  (void)arg;
  unsigned long seen = 0;
  for (;;) {
    /* Sleep, not spin, between products: a spinning worker takes a core from MLX's own threads,
     * which run the rest of the step (measured: a decode step 15-20% slower with a 0.4 ms spin).
     * The job is copied under the lock that published it, with its generation, so a worker that
     * wakes late can neither take a job twice nor compute one job's chunks with another's fields. */
    pthread_mutex_lock(&pool.mu);
    while (atomic_load(&pool.generation) == seen) pthread_cond_wait(&pool.wake, &pool.mu);
    seen = atomic_load(&pool.generation);
    job_t job = pool.job;
    int chunks = pool.chunks;
    pthread_mutex_unlock(&pool.mu);
    take_chunks(&job, seen, chunks);
  }
  return NULL;
}

/* A forked child has none of its parent's workers, and the parent's lock or job may have been
 * mid-flight: it starts from a fresh pool (generation 0, so new workers wait for a new job). */
static void pool_after_fork(void) {
  pthread_mutex_init(&pool.mu, NULL);
  pthread_cond_init(&pool.wake, NULL);
  atomic_store(&pool.generation, 0);
  atomic_store(&pool.ticket, 0);
  atomic_store(&pool.finished, 0);
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
    int failed = pthread_create(&t, &attr, worker, NULL);
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
 * take the product (the caller then uses GEMM), 2 where it read B's packed blocks, else 1. */
int mlxproof_small_m_sgemm(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                           float beta, float *c, int ldc) {
  static int supported = -1;
  if (supported < 0) supported = mlxproof_small_m_supported();
  if (!supported || m < 1 || m > SMALL_M_MAX || n < 1 || k < 1) return 0;
  job_t j = {m, n, k, alpha, beta, a, lda, b, ldb, c, ldc, NULL, 0};
  j.packed = mlxproof_packed_find(b, n, k, ldb, &j.packed_row0);
  long by_work = (long)m * n * k / PARALLEL_MIN_MACS; /* shares the work is worth */
  int taken = j.packed ? 2 : 1;
  if (by_work < 2 || atomic_flag_test_and_set(&pool.busy)) {
    columns(&j, 0, n);
    return taken;
  }
  int threads = start_pool();
  /* Enough chunks that a late worker's share is small, each still worth a wake-up. */
  int blocks = (n + NR - 1) / NR;
  int chunks = by_work < MAX_CHUNKS ? (int)by_work : MAX_CHUNKS;
  chunks = chunks < blocks ? chunks : blocks;
  if (threads < 2 || chunks < 2) {
    columns(&j, 0, n);
  } else {
    pthread_mutex_lock(&pool.mu);
    pool.job = j;
    pool.chunks = chunks;
    atomic_store(&pool.finished, 0);
    unsigned long gen = atomic_load(&pool.generation) + 1;
    atomic_store(&pool.ticket, (unsigned long long)(uint32_t)gen << 32);
    atomic_store(&pool.generation, gen);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);
    take_chunks(&j, gen, chunks);
    while (atomic_load(&pool.finished) < chunks) _mm_pause(); /* at most the chunks still running */
  }
  atomic_flag_clear(&pool.busy);
  return taken;
}

#else /* not x86-64: GEMM takes every product */
int mlxproof_small_m_supported(void) { return 0; }
int mlxproof_small_m_sgemm(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                           float beta, float *c, int ldc) {
  return 0;
}
#endif
