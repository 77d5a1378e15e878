// AVX-512F float micro-kernels (contract in gemm_kernels.h); same design as gemm_avx2.cc with
// 16-lane vectors.
//
// tap: 4 rows x 64 columns = 16 zmm accumulators; per t, 4 B loads + 4 broadcasts feed 16 FMAs
// (two FMA ports need >= 8 independent chains to hide the 4-cycle latency). Partial tiles use
// zero-masked loads, which never fault on masked-out lanes, and only as many vectors as they
// need. tapr: the same tile reading A as rows of an unpacked matrix (no packing of weights).
// dot: 4 x nt (<= 4) dot products, up to 16 zmm partial sums.
//
// `#pragma GCC target("avx512f")` instead of build flags; only reached after
// __builtin_cpu_supports("avx512f"). No std templates below the pragma (see gemm_avx2.cc); the
// bcast_tile template is this file's own and internal.
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include <cstdint>

#include "gemm_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
// GCC 12's own _mm512_reduce_add_ps trips -Wmaybe-uninitialized (_mm256_undefined_pd).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace rx::cpu::avx512 {

namespace {

inline __mmask16 lane_mask(int n) {
  n = n < 0 ? 0 : (n > 16 ? 16 : n);
  return (__mmask16)((1u << n) - 1u);
}

}  // namespace

// One tap tile with NV = ceil(nr / 16) column vectors: partial tiles only spend FMAs on the
// vectors they use (a 196-pixel plane is 3 full tiles and one of 1 vector, not 4 of 4). Row i of A
// is r[i][t * ts]: the packed panel (r[i] = a + i, ts = 4) or rows of an unpacked matrix
// (r[i] = a + i * lda, ts = 1; rows past mr repeat row 0 and are dropped), so a weight matrix
// can feed the kernel without being packed first.
template <int NV>
inline void tap_tile(int64_t kc, const float *a, int64_t lda, const float *b, const int64_t *offs, float *c,
                     int64_t ldc, int mr, int nr, float alpha, float beta) {
  const float *r[kMR];
  int64_t ts;
  if (lda) {
#pragma GCC unroll 4
    for (int i = 0; i < kMR; i++) r[i] = a + (i < mr ? i : 0) * lda;
    ts = 1;
  } else {
#pragma GCC unroll 4
    for (int i = 0; i < kMR; i++) r[i] = a + i;
    ts = kMR;
  }
  __m512 s[kMR][NV];
#pragma GCC unroll 4
  for (int i = 0; i < kMR; i++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) s[i][v] = _mm512_setzero_ps();
  __mmask16 m[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; v++) m[v] = lane_mask(nr - 16 * v);
  if (nr == 16 * NV) {
    for (int64_t t = 0, o = 0; t < kc; t++, o += ts) {
      const float *bp = b + offs[t];
      __m512 bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(bp + 16 * v);
#pragma GCC unroll 4
      for (int i = 0; i < kMR; i++) {
        const __m512 av = _mm512_set1_ps(r[i][o]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) s[i][v] = _mm512_fmadd_ps(av, bv[v], s[i][v]);
      }
    }
  } else {
    for (int64_t t = 0, o = 0; t < kc; t++, o += ts) {
      const float *bp = b + offs[t];
      __m512 bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) bv[v] = _mm512_maskz_loadu_ps(m[v], bp + 16 * v);
#pragma GCC unroll 4
      for (int i = 0; i < kMR; i++) {
        const __m512 av = _mm512_set1_ps(r[i][o]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) s[i][v] = _mm512_fmadd_ps(av, bv[v], s[i][v]);
      }
    }
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 4
  for (int i = 0; i < kMR; i++) {
    if (i >= mr) break;
    float *cr = c + i * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
      __m512 x = _mm512_mul_ps(s[i][v], va);
      if (beta != 0.0f) x = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m[v], cr + 16 * v), vb, x);
      _mm512_mask_storeu_ps(cr + 16 * v, m[v], x);
    }
  }
}

inline void tap_any(int64_t kc, const float *a, int64_t lda, const float *b, const int64_t *offs, float *c,
                    int64_t ldc, int mr, int nr, float alpha, float beta) {
  if (nr > 48) tap_tile<4>(kc, a, lda, b, offs, c, ldc, mr, nr, alpha, beta);
  else if (nr > 32) tap_tile<3>(kc, a, lda, b, offs, c, ldc, mr, nr, alpha, beta);
  else if (nr > 16) tap_tile<2>(kc, a, lda, b, offs, c, ldc, mr, nr, alpha, beta);
  else tap_tile<1>(kc, a, lda, b, offs, c, ldc, mr, nr, alpha, beta);
}

void tap_f32(int64_t kc, const float *a, const float *b, const int64_t *offs, float *c, int64_t ldc, int mr, int nr,
             float alpha, float beta) {
  tap_any(kc, a, 0, b, offs, c, ldc, mr, nr, alpha, beta);
}

void tapr_f32(int64_t kc, const float *a, int64_t lda, const float *b, const int64_t *offs, float *c, int64_t ldc,
              int mr, int nr, float beta) {
  tap_any(kc, a, lda, b, offs, c, ldc, mr, nr, 1.0f, beta);
}

// NT columns (1..4): a 7x7 plane's last pixel (tap_conv's remainder columns) needs one, and the
// 4-column loop spent 4x the FMAs on it.
template <int NT>
inline void dot_tile(int64_t len, const float *a, int64_t lda, const float *b, const int64_t *offs, float *c,
                     int64_t ldc, int mr) {
  const float *ar[4], *br[NT];
  for (int i = 0; i < 4; i++) ar[i] = a + (i < mr ? i : mr - 1) * lda;
  for (int j = 0; j < NT; j++) br[j] = b + offs[j];
  __m512 acc[4][NT];
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
    for (int j = 0; j < NT; j++) acc[i][j] = _mm512_setzero_ps();
  for (int64_t p = 0;; p += 16) {
    const __mmask16 m = len - p >= 16 ? (__mmask16)0xFFFF : lane_mask((int)(len - p));
    if (!m) break;
    __m512 x[NT];
#pragma GCC unroll 4
    for (int j = 0; j < NT; j++) x[j] = _mm512_maskz_loadu_ps(m, br[j] + p);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
      const __m512 y = _mm512_maskz_loadu_ps(m, ar[i] + p);
#pragma GCC unroll 4
      for (int j = 0; j < NT; j++) acc[i][j] = _mm512_fmadd_ps(y, x[j], acc[i][j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++) {
    if (i >= mr) break;
#pragma GCC unroll 4
    for (int j = 0; j < NT; j++) c[i * ldc + j] += _mm512_reduce_add_ps(acc[i][j]);
  }
}

void dot_f32(int64_t len, const float *a, int64_t lda, const float *b, const int64_t *offs, float *c, int64_t ldc,
             int mr, int nt) {
  switch (nt) {
    case 1: return dot_tile<1>(len, a, lda, b, offs, c, ldc, mr);
    case 2: return dot_tile<2>(len, a, lda, b, offs, c, ldc, mr);
    case 3: return dot_tile<3>(len, a, lda, b, offs, c, ldc, mr);
    default: return dot_tile<4>(len, a, lda, b, offs, c, ldc, mr);
  }
}

// bcast: 8 rows x 32 columns = 16 zmm accumulators (one zmm per row when nr <= 16). Per t: one
// ca load, 1-2 B loads and 8 broadcasts (FMA memory operands) feed 8-16 FMAs. Rows past mr
// repeat row 0 (their results are dropped), so the loop has no row branches.
template <int NV>
inline void bcast_tile(int64_t kc, const float *a, const int64_t *ra, int mr, const int64_t *ca, const float *b,
                       int64_t ldb, int nr, float *c, int64_t ldc, bool acc) {
  const float *r[kBMR];
#pragma GCC unroll 16
  for (int i = 0; i < kBMR; i++) r[i] = a + ra[i < mr ? i : 0];
  const __mmask16 m0 = lane_mask(nr), m1 = lane_mask(nr - 16);
  __m512 s[kBMR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < kBMR; i++)
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) s[i][v] = _mm512_setzero_ps();
  for (int64_t t = 0; t < kc; t++) {
    const int64_t o = ca[t];
    const float *bp = b + t * ldb;
    __m512 b0 = _mm512_maskz_loadu_ps(m0, bp), b1;
    if (NV > 1) b1 = _mm512_maskz_loadu_ps(m1, bp + 16);
#pragma GCC unroll 16
    for (int i = 0; i < kBMR; i++) {
      const __m512 av = _mm512_set1_ps(r[i][o]);
      s[i][0] = _mm512_fmadd_ps(av, b0, s[i][0]);
      if (NV > 1) s[i][1] = _mm512_fmadd_ps(av, b1, s[i][1]);
    }
  }
  // Constant trip counts only: a loop to mr indexed s[] at run time, and GCC then kept all the
  // accumulators in memory, storing them in every iteration of the main loop.
#pragma GCC unroll 16
  for (int i = 0; i < kBMR; i++) {
    if (i >= mr) break;
    float *cr = c + i * ldc;
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) {
      const __mmask16 m = v ? m1 : m0;
      __m512 x = s[i][v];
      if (acc) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, cr + 16 * v));
      _mm512_mask_storeu_ps(cr + 16 * v, m, x);
    }
  }
}

void bcast_f32(int64_t kc, const float *a, const int64_t *ra, int mr, const int64_t *ca, const float *b, int64_t ldb,
               int nr, float *c, int64_t ldc, bool acc) {
  if (nr > 16) bcast_tile<2>(kc, a, ra, mr, ca, b, ldb, nr, c, ldc, acc);
  else bcast_tile<1>(kc, a, ra, mr, ca, b, ldb, nr, c, ldc, acc);
}

}  // namespace rx::cpu::avx512

#pragma GCC pop_options

#endif  // __x86_64__ && __GNUC__
