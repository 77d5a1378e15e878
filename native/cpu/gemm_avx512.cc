// AVX-512F float micro-kernels (contract in gemm_kernels.h); same design as gemm_avx2.cc with
// 16-lane vectors.
//
// tap: 4 rows x 64 columns = 16 zmm accumulators; per t, 4 B loads + 4 broadcasts feed 16 FMAs
// (two FMA ports need >= 8 independent chains to hide the 4-cycle latency). Partial tiles use
// zero-masked loads, which never fault on masked-out lanes.
// dot: 4 x 4 dot products, 16 zmm partial sums.
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

#define RX_TAP_FMA4(B0, B1, B2, B3)                                                \
  {                                                                                \
    __m512 av = _mm512_set1_ps(a[0]);                                              \
    c00 = _mm512_fmadd_ps(av, B0, c00);                                            \
    c01 = _mm512_fmadd_ps(av, B1, c01);                                            \
    c02 = _mm512_fmadd_ps(av, B2, c02);                                            \
    c03 = _mm512_fmadd_ps(av, B3, c03);                                            \
    av = _mm512_set1_ps(a[1]);                                                     \
    c10 = _mm512_fmadd_ps(av, B0, c10);                                            \
    c11 = _mm512_fmadd_ps(av, B1, c11);                                            \
    c12 = _mm512_fmadd_ps(av, B2, c12);                                            \
    c13 = _mm512_fmadd_ps(av, B3, c13);                                            \
    av = _mm512_set1_ps(a[2]);                                                     \
    c20 = _mm512_fmadd_ps(av, B0, c20);                                            \
    c21 = _mm512_fmadd_ps(av, B1, c21);                                            \
    c22 = _mm512_fmadd_ps(av, B2, c22);                                            \
    c23 = _mm512_fmadd_ps(av, B3, c23);                                            \
    av = _mm512_set1_ps(a[3]);                                                     \
    c30 = _mm512_fmadd_ps(av, B0, c30);                                            \
    c31 = _mm512_fmadd_ps(av, B1, c31);                                            \
    c32 = _mm512_fmadd_ps(av, B2, c32);                                            \
    c33 = _mm512_fmadd_ps(av, B3, c33);                                            \
    a += 4;                                                                        \
  }

void tap_f32(int64_t kc, const float *a, const float *b, const int64_t *offs, float *c, int64_t ldc, int mr, int nr,
             float alpha, float beta) {
  __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
  __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
  if (nr == kNR) {
    for (int64_t t = 0; t < kc; t++) {
      const float *bp = b + offs[t];
      __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16), b2 = _mm512_loadu_ps(bp + 32),
             b3 = _mm512_loadu_ps(bp + 48);
      RX_TAP_FMA4(b0, b1, b2, b3);
    }
  } else {
    const __mmask16 m0 = lane_mask(nr), m1 = lane_mask(nr - 16), m2 = lane_mask(nr - 32), m3 = lane_mask(nr - 48);
    for (int64_t t = 0; t < kc; t++) {
      const float *bp = b + offs[t];
      __m512 b0 = _mm512_maskz_loadu_ps(m0, bp), b1 = _mm512_maskz_loadu_ps(m1, bp + 16),
             b2 = _mm512_maskz_loadu_ps(m2, bp + 32), b3 = _mm512_maskz_loadu_ps(m3, bp + 48);
      RX_TAP_FMA4(b0, b1, b2, b3);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  __m512 acc[16] = {c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33};
  for (int i = 0; i < mr; i++) {
    float *cr = c + i * ldc;
    for (int v = 0; v < 4; v++) {
      const __mmask16 m = lane_mask(nr - 16 * v);
      if (!m) break;
      __m512 r = _mm512_mul_ps(acc[i * 4 + v], va);
      if (beta != 0.0f) r = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, cr + 16 * v), vb, r);
      _mm512_mask_storeu_ps(cr + 16 * v, m, r);
    }
  }
}

#undef RX_TAP_FMA4

void dot_f32(int64_t len, const float *a, int64_t lda, const float *b, const int64_t *offs, float *c, int64_t ldc,
             int mr, int nt) {
  const float *ar[4], *br[4];
  for (int i = 0; i < 4; i++) ar[i] = a + (i < mr ? i : mr - 1) * lda;
  for (int j = 0; j < 4; j++) br[j] = b + offs[j < nt ? j : nt - 1];
  __m512 acc[16];
  for (int k = 0; k < 16; k++) acc[k] = _mm512_setzero_ps();
  int64_t p = 0;
  for (;; p += 16) {
    const __mmask16 m = len - p >= 16 ? (__mmask16)0xFFFF : lane_mask((int)(len - p));
    if (!m) break;
    __m512 x0 = _mm512_maskz_loadu_ps(m, br[0] + p), x1 = _mm512_maskz_loadu_ps(m, br[1] + p),
           x2 = _mm512_maskz_loadu_ps(m, br[2] + p), x3 = _mm512_maskz_loadu_ps(m, br[3] + p);
    for (int i = 0; i < 4; i++) {
      __m512 y = _mm512_maskz_loadu_ps(m, ar[i] + p);
      acc[i * 4 + 0] = _mm512_fmadd_ps(y, x0, acc[i * 4 + 0]);
      acc[i * 4 + 1] = _mm512_fmadd_ps(y, x1, acc[i * 4 + 1]);
      acc[i * 4 + 2] = _mm512_fmadd_ps(y, x2, acc[i * 4 + 2]);
      acc[i * 4 + 3] = _mm512_fmadd_ps(y, x3, acc[i * 4 + 3]);
    }
  }
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nt; j++) c[i * ldc + j] += _mm512_reduce_add_ps(acc[i * 4 + j]);
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
