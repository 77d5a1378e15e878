// AVX2+FMA float micro-kernels (contract in gemm_kernels.h).
//
// tap: 4 rows x 24 columns = 12 ymm accumulators. Per t: 3 B loads (through offs[t]) and 4 A
// broadcasts feed 12 FMAs, so the FMA ports, not the load ports, bound the loop on Zen 3 /
// Skylake-class cores (2 FMA + 2-3 loads per cycle). 4 rows rather than the classic 6x16 because
// every ResNeXt channel count per group (4, 8, 16, 32, 64, ... 2048) is a multiple of 4, so no row
// of the tile is wasted on grouped convs. Partial tiles use masked loads (no reads past nr).
// dot: 4 x 2 dot products over a contiguous axis, 8 ymm partial sums reduced horizontally once.
//
// Compiled with `#pragma GCC target` so the package needs no -mavx2 flag; only reached after
// __builtin_cpu_supports("avx2") && ("fma") (gemm.cc). No std templates are instantiated below
// the pragma, so no AVX2 copy of an inline library function can leak into portable code.
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include <cstdint>

#include "gemm_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace rx::cpu::avx2 {

namespace {

alignas(32) const int32_t kMaskTab[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

// Lanes [0, n) set, n clamped to [0, 8].
inline __m256i lane_mask(int n) {
  n = n < 0 ? 0 : (n > 8 ? 8 : n);
  return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(kMaskTab + 8 - n));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

}  // namespace

#define RX_TAP_FMA4(B0, B1, B2)                                                   \
  {                                                                               \
    __m256 av = _mm256_broadcast_ss(a);                                           \
    c00 = _mm256_fmadd_ps(av, B0, c00);                                           \
    c01 = _mm256_fmadd_ps(av, B1, c01);                                           \
    c02 = _mm256_fmadd_ps(av, B2, c02);                                           \
    av = _mm256_broadcast_ss(a + 1);                                              \
    c10 = _mm256_fmadd_ps(av, B0, c10);                                           \
    c11 = _mm256_fmadd_ps(av, B1, c11);                                           \
    c12 = _mm256_fmadd_ps(av, B2, c12);                                           \
    av = _mm256_broadcast_ss(a + 2);                                              \
    c20 = _mm256_fmadd_ps(av, B0, c20);                                           \
    c21 = _mm256_fmadd_ps(av, B1, c21);                                           \
    c22 = _mm256_fmadd_ps(av, B2, c22);                                           \
    av = _mm256_broadcast_ss(a + 3);                                              \
    c30 = _mm256_fmadd_ps(av, B0, c30);                                           \
    c31 = _mm256_fmadd_ps(av, B1, c31);                                           \
    c32 = _mm256_fmadd_ps(av, B2, c32);                                           \
    a += 4;                                                                       \
  }

void tap_f32(int64_t kc, const float *a, const float *b, const int64_t *offs, float *c, int64_t ldc, int mr, int nr,
             float alpha, float beta) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
  __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
  if (nr == kNR) {
    // 12 accumulators + 3 B vectors + 1 broadcast need all 16 ymm registers; GCC 12 spilled an
    // accumulator to the stack in this loop (38 GFLOP/s per core measured vs ~90 FMA peak), so the
    // body is pinned in asm with the register roles given as operands: 70 GFLOP/s per core from
    // L1. Two taps per block; ymm15 holds the broadcast A value (a clobber, so it costs no
    // operand: GCC allows 30 and the 12 read-write accumulators count twice).
    int64_t t = 0;
    for (; t + 1 < kc; t += 2, a += 8) {
      __m256 b0, b1, b2;
      asm("movq (%[o]), %%rax\n\t"
          "movq 8(%[o]), %%r11\n\t"
          "vmovups (%[b],%%rax,4), %[b0]\n\t"
          "vmovups 32(%[b],%%rax,4), %[b1]\n\t"
          "vmovups 64(%[b],%%rax,4), %[b2]\n\t"
          "vbroadcastss 0(%[a]), %%ymm15\n\t"
          "vfmadd231ps %[b0], %%ymm15, %[c00]\n\t"
          "vfmadd231ps %[b1], %%ymm15, %[c01]\n\t"
          "vfmadd231ps %[b2], %%ymm15, %[c02]\n\t"
          "vbroadcastss 4(%[a]), %%ymm15\n\t"
          "vfmadd231ps %[b0], %%ymm15, %[c10]\n\t"
          "vfmadd231ps %[b1], %%ymm15, %[c11]\n\t"
          "vfmadd231ps %[b2], %%ymm15, %[c12]\n\t"
          "vbroadcastss 8(%[a]), %%ymm15\n\t"
          "vfmadd231ps %[b0], %%ymm15, %[c20]\n\t"
          "vfmadd231ps %[b1], %%ymm15, %[c21]\n\t"
          "vfmadd231ps %[b2], %%ymm15, %[c22]\n\t"
          "vbroadcastss 12(%[a]), %%ymm15\n\t"
          "vfmadd231ps %[b0], %%ymm15, %[c30]\n\t"
          "vfmadd231ps %[b1], %%ymm15, %[c31]\n\t"
          "vfmadd231ps %[b2], %%ymm15, %[c32]\n\t"
          "vmovups (%[b],%%r11,4), %[b0]\n\t"
          "vmovups 32(%[b],%%r11,4), %[b1]\n\t"
          "vmovups 64(%[b],%%r11,4), %[b2]\n\t"
          "vbroadcastss 16(%[a]), %%ymm15\n\t"
          "vfmadd231ps %[b0], %%ymm15, %[c00]\n\t"
          "vfmadd231ps %[b1], %%ymm15, %[c01]\n\t"
          "vfmadd231ps %[b2], %%ymm15, %[c02]\n\t"
          "vbroadcastss 20(%[a]), %%ymm15\n\t"
          "vfmadd231ps %[b0], %%ymm15, %[c10]\n\t"
          "vfmadd231ps %[b1], %%ymm15, %[c11]\n\t"
          "vfmadd231ps %[b2], %%ymm15, %[c12]\n\t"
          "vbroadcastss 24(%[a]), %%ymm15\n\t"
          "vfmadd231ps %[b0], %%ymm15, %[c20]\n\t"
          "vfmadd231ps %[b1], %%ymm15, %[c21]\n\t"
          "vfmadd231ps %[b2], %%ymm15, %[c22]\n\t"
          "vbroadcastss 28(%[a]), %%ymm15\n\t"
          "vfmadd231ps %[b0], %%ymm15, %[c30]\n\t"
          "vfmadd231ps %[b1], %%ymm15, %[c31]\n\t"
          "vfmadd231ps %[b2], %%ymm15, %[c32]\n\t"
          : [c00] "+x"(c00), [c01] "+x"(c01), [c02] "+x"(c02), [c10] "+x"(c10), [c11] "+x"(c11),
            [c12] "+x"(c12), [c20] "+x"(c20), [c21] "+x"(c21), [c22] "+x"(c22), [c30] "+x"(c30),
            [c31] "+x"(c31), [c32] "+x"(c32), [b0] "=&x"(b0), [b1] "=&x"(b1), [b2] "=&x"(b2)
          : [b] "r"(b), [o] "r"(offs + t), [a] "r"(a)
          : "rax", "r11", "xmm15", "memory");
    }
    for (; t < kc; t++) {
      const float *bp = b + offs[t];
      __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8), b2 = _mm256_loadu_ps(bp + 16);
      RX_TAP_FMA4(b0, b1, b2);
    }
  } else {
    const __m256i m0 = lane_mask(nr), m1 = lane_mask(nr - 8), m2 = lane_mask(nr - 16);
    for (int64_t t = 0; t < kc; t++) {
      const float *bp = b + offs[t];
      __m256 b0 = _mm256_maskload_ps(bp, m0), b1 = _mm256_maskload_ps(bp + 8, m1),
             b2 = _mm256_maskload_ps(bp + 16, m2);
      RX_TAP_FMA4(b0, b1, b2);
    }
  }
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  __m256 acc[12] = {c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32};
  if (mr == kMR && nr == kNR) {
    for (int i = 0; i < 4; i++) {
      float *cr = c + i * ldc;
      for (int v = 0; v < 3; v++) {
        __m256 r = _mm256_mul_ps(acc[i * 3 + v], va);
        if (beta != 0.0f) r = _mm256_fmadd_ps(_mm256_loadu_ps(cr + 8 * v), vb, r);
        _mm256_storeu_ps(cr + 8 * v, r);
      }
    }
  } else {
    for (int i = 0; i < mr; i++) {
      float *cr = c + i * ldc;
      for (int v = 0; v < 3; v++) {
        const __m256i m = lane_mask(nr - 8 * v);
        __m256 r = _mm256_mul_ps(acc[i * 3 + v], va);
        if (beta != 0.0f) r = _mm256_fmadd_ps(_mm256_maskload_ps(cr + 8 * v, m), vb, r);
        _mm256_maskstore_ps(cr + 8 * v, m, r);
      }
    }
  }
}

#undef RX_TAP_FMA4

void dot_f32(int64_t len, const float *a, int64_t lda, const float *b, const int64_t *offs, float *c, int64_t ldc,
             int mr, int nt) {
  // 4 rows x 2 taps: 8 accumulators + 2 x + 1 y registers. The 4 x 3 version (12 accumulators)
  // left GCC too few registers for the 7 stream pointers and spilled: 27 GFLOP/s from L1.
  // Rows/taps beyond mr/nt alias the last valid one: their sums are computed and dropped, which
  // keeps the loop branch-free without reading outside the caller's buffers.
  const float *a0 = a, *a1 = a + (mr > 1 ? 1 : 0) * lda, *a2 = a + (mr > 2 ? 2 : mr - 1) * lda,
              *a3 = a + (mr > 3 ? 3 : mr - 1) * lda;
  const float *b0 = b + offs[0], *b1 = b + offs[nt > 1 ? 1 : 0];
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  int64_t p = 0;
  for (; p + 8 <= len; p += 8) {
    const __m256 x0 = _mm256_loadu_ps(b0 + p), x1 = _mm256_loadu_ps(b1 + p);
    __m256 y = _mm256_loadu_ps(a0 + p);
    c00 = _mm256_fmadd_ps(y, x0, c00), c01 = _mm256_fmadd_ps(y, x1, c01);
    y = _mm256_loadu_ps(a1 + p);
    c10 = _mm256_fmadd_ps(y, x0, c10), c11 = _mm256_fmadd_ps(y, x1, c11);
    y = _mm256_loadu_ps(a2 + p);
    c20 = _mm256_fmadd_ps(y, x0, c20), c21 = _mm256_fmadd_ps(y, x1, c21);
    y = _mm256_loadu_ps(a3 + p);
    c30 = _mm256_fmadd_ps(y, x0, c30), c31 = _mm256_fmadd_ps(y, x1, c31);
  }
  if (p < len) {
    const __m256i m = lane_mask((int)(len - p));
    const __m256 x0 = _mm256_maskload_ps(b0 + p, m), x1 = _mm256_maskload_ps(b1 + p, m);
    __m256 y = _mm256_maskload_ps(a0 + p, m);
    c00 = _mm256_fmadd_ps(y, x0, c00), c01 = _mm256_fmadd_ps(y, x1, c01);
    y = _mm256_maskload_ps(a1 + p, m);
    c10 = _mm256_fmadd_ps(y, x0, c10), c11 = _mm256_fmadd_ps(y, x1, c11);
    y = _mm256_maskload_ps(a2 + p, m);
    c20 = _mm256_fmadd_ps(y, x0, c20), c21 = _mm256_fmadd_ps(y, x1, c21);
    y = _mm256_maskload_ps(a3 + p, m);
    c30 = _mm256_fmadd_ps(y, x0, c30), c31 = _mm256_fmadd_ps(y, x1, c31);
  }
  const __m256 acc[8] = {c00, c01, c10, c11, c20, c21, c30, c31};
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nt; j++) c[i * ldc + j] += hsum(acc[i * 2 + j]);
}

// bcast: 6 rows x 16 columns = 12 ymm accumulators (6 when nr <= 8); per t one ca load, 1-2 B
// loads and 6 broadcasts. Rows past mr repeat row 0 (results dropped).
template <int NV>
inline void bcast_tile(int64_t kc, const float *a, const int64_t *ra, int mr, const int64_t *ca, const float *b,
                       int64_t ldb, int nr, float *c, int64_t ldc, bool acc) {
  const float *r[kBMR];
#pragma GCC unroll 16
  for (int i = 0; i < kBMR; i++) r[i] = a + ra[i < mr ? i : 0];
  const __m256i m0 = lane_mask(nr), m1 = lane_mask(nr - 8);
  __m256 s[kBMR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < kBMR; i++)
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) s[i][v] = _mm256_setzero_ps();
  for (int64_t t = 0; t < kc; t++) {
    const int64_t o = ca[t];
    const float *bp = b + t * ldb;
    __m256 b0 = _mm256_maskload_ps(bp, m0), b1;
    if (NV > 1) b1 = _mm256_maskload_ps(bp + 8, m1);
#pragma GCC unroll 16
    for (int i = 0; i < kBMR; i++) {
      const __m256 av = _mm256_broadcast_ss(r[i] + o);
      s[i][0] = _mm256_fmadd_ps(av, b0, s[i][0]);
      if (NV > 1) s[i][1] = _mm256_fmadd_ps(av, b1, s[i][1]);
    }
  }
  // Constant trip counts only (see gemm_avx512.cc: a run-time bound kept s[] in memory).
#pragma GCC unroll 16
  for (int i = 0; i < kBMR; i++) {
    if (i >= mr) break;
    float *cr = c + i * ldc;
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) {
      const __m256i m = v ? m1 : m0;
      __m256 x = s[i][v];
      if (acc) x = _mm256_add_ps(x, _mm256_maskload_ps(cr + 8 * v, m));
      _mm256_maskstore_ps(cr + 8 * v, m, x);
    }
  }
}

void bcast_f32(int64_t kc, const float *a, const int64_t *ra, int mr, const int64_t *ca, const float *b, int64_t ldb,
               int nr, float *c, int64_t ldc, bool acc) {
  if (nr > 8) bcast_tile<2>(kc, a, ra, mr, ca, b, ldb, nr, c, ldc, acc);
  else bcast_tile<1>(kc, a, ra, mr, ca, b, ldb, nr, c, ldc, acc);
}

}  // namespace rx::cpu::avx2

#pragma GCC pop_options

#endif  // __x86_64__ && __GNUC__
