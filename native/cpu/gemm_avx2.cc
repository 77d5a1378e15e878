// AVX2+FMA float micro-kernels (contract in gemm_kernels.h).
//
// tap: 4 rows x 24 columns = 12 ymm accumulators. Per t: 3 B loads (through offs[t]) and 4 A
// broadcasts feed 12 FMAs, so the FMA ports, not the load ports, bound the loop on Zen 3 /
// Skylake-class cores (2 FMA + 2-3 loads per cycle). 4 rows rather than the classic 6x16 because
// every ResNeXt channel count per group (4, 8, 16, 32, 64, ... 2048) is a multiple of 4, so no row
// of the tile is wasted on grouped convs. Partial tiles use masked loads (no reads past nr) and
// spend FMAs only on the vectors they use. tapr: the same tile reading A as rows of an unpacked
// matrix (conv forward reads its weights in place).
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

// Two taps of the full 4 x 24 tile. 12 accumulators + 3 B vectors + 1 broadcast need all 16 ymm
// registers; GCC 12 spilled an accumulator to the stack in the intrinsic loop (38 GFLOP/s per core
// measured vs ~90 FMA peak), so the body is pinned in asm: 70 GFLOP/s per core from L1. The B
// vectors (ymm12-14) and the broadcast (ymm15) are clobbers, not operands, so the 12 read-write
// accumulators (which count twice against GCC's limit of 30 operands) leave room for the A
// pointers. A0..A7 are the broadcast sources of rows 0-3 for the first and the second tap.
#define RX_TAP_BC(src, i)                                  \
  "vbroadcastss " src ", %%ymm15\n\t"                      \
  "vfmadd231ps %%ymm12, %%ymm15, %[c" #i "0]\n\t"          \
  "vfmadd231ps %%ymm13, %%ymm15, %[c" #i "1]\n\t"          \
  "vfmadd231ps %%ymm14, %%ymm15, %[c" #i "2]\n\t"
#define RX_TAP_LOADB(reg)                                  \
  "vmovups (%[b],%%" reg ",4), %%ymm12\n\t"                \
  "vmovups 32(%[b],%%" reg ",4), %%ymm13\n\t"              \
  "vmovups 64(%[b],%%" reg ",4), %%ymm14\n\t"
#define RX_TAP2(A0, A1, A2, A3, A4, A5, A6, A7)                                                          \
  "movq (%[o]), %%rax\n\t"                                                                               \
  "movq 8(%[o]), %%r11\n\t" RX_TAP_LOADB("rax") RX_TAP_BC(A0, 0) RX_TAP_BC(A1, 1) RX_TAP_BC(A2, 2)       \
      RX_TAP_BC(A3, 3) RX_TAP_LOADB("r11") RX_TAP_BC(A4, 0) RX_TAP_BC(A5, 1) RX_TAP_BC(A6, 2) RX_TAP_BC(A7, 3)
#define RX_TAP_ACC                                                                                         \
  [c00] "+x"(c00), [c01] "+x"(c01), [c02] "+x"(c02), [c10] "+x"(c10), [c11] "+x"(c11), [c12] "+x"(c12),    \
      [c20] "+x"(c20), [c21] "+x"(c21), [c22] "+x"(c22), [c30] "+x"(c30), [c31] "+x"(c31), [c32] "+x"(c32)
#define RX_TAP_CLOBBER "rax", "r11", "xmm12", "xmm13", "xmm14", "xmm15", "memory"

// Taps [t, kc) of a tile with NV vectors per row into s; the last vector is loaded under `last`
// when MASK (a partial tile), every other vector with a plain load.
template <int NV, bool MASK>
inline void tap_loop(int64_t t, int64_t kc, const float *const *r, int64_t ts, const float *b, const int64_t *offs,
                     __m256i last, __m256 (&s)[kMR][3]) {
  auto ld = [&](const float *p, int v) {
    return MASK && v == NV - 1 ? _mm256_maskload_ps(p + 8 * v, last) : _mm256_loadu_ps(p + 8 * v);
  };
  int64_t o = t * ts;
  if (NV == 1) {
    // One vector per row leaves 4 dependency chains, half of what 2 FMA pipes x 4 cycles of
    // latency need: odd taps go to the (otherwise unused) second accumulators, added at the end.
    for (; t + 1 < kc; t += 2, o += 2 * ts) {
      const __m256 b0 = ld(b + offs[t], 0), b1 = ld(b + offs[t + 1], 0);
#pragma GCC unroll 4
      for (int i = 0; i < kMR; i++) {
        s[i][0] = _mm256_fmadd_ps(_mm256_broadcast_ss(r[i] + o), b0, s[i][0]);
        s[i][1] = _mm256_fmadd_ps(_mm256_broadcast_ss(r[i] + o + ts), b1, s[i][1]);
      }
    }
  }
  for (; t < kc; t++, o += ts) {
    const float *bp = b + offs[t];
    __m256 bv[NV];
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) bv[v] = ld(bp, v);
#pragma GCC unroll 4
    for (int i = 0; i < kMR; i++) {
      const __m256 av = _mm256_broadcast_ss(r[i] + o);
#pragma GCC unroll 3
      for (int v = 0; v < NV; v++) s[i][v] = _mm256_fmadd_ps(av, bv[v], s[i][v]);
    }
  }
  if (NV == 1)
#pragma GCC unroll 4
    for (int i = 0; i < kMR; i++) s[i][0] = _mm256_add_ps(s[i][0], s[i][1]);
}

// One tap tile with NV = ceil(nr / 8) column vectors (partial tiles spend FMAs only on the
// vectors they use). Row i of A is r[i][t * ts]: a packed panel (r[i] = a + i, ts = 4) or rows of
// an unpacked matrix (r[i] = a + i * lda, ts = 1; rows past mr repeat row 0 and are dropped).
// Full 4 x 24 tiles run the asm body two taps at a time; the intrinsic loop does the rest.
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
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
  __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
  int64_t t = 0;
  if (NV == 3 && nr == kNR && mr == kMR) {
    if (lda) {
      const float *a0 = r[0], *a3 = r[3];
      const int64_t lb = lda * 4;
      for (; t + 1 < kc; t += 2, a0 += 2, a3 += 2)
        asm(RX_TAP2("(%[a])", "(%[a],%[l],1)", "(%[a],%[l],2)", "(%[a3])", "4(%[a])", "4(%[a],%[l],1)",
                    "4(%[a],%[l],2)", "4(%[a3])")
            : RX_TAP_ACC
            : [b] "r"(b), [o] "r"(offs + t), [a] "r"(a0), [l] "r"(lb), [a3] "r"(a3)
            : RX_TAP_CLOBBER);
    } else {
      const float *ap = a;
      for (; t + 1 < kc; t += 2, ap += 8)
        asm(RX_TAP2("0(%[a])", "4(%[a])", "8(%[a])", "12(%[a])", "16(%[a])", "20(%[a])", "24(%[a])", "28(%[a])")
            : RX_TAP_ACC
            : [b] "r"(b), [o] "r"(offs + t), [a] "r"(ap)
            : RX_TAP_CLOBBER);
    }
  }
  const __m256i m0 = lane_mask(nr), m1 = lane_mask(nr - 8), m2 = lane_mask(nr - 16);
  __m256 s[kMR][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32}};
  // vmaskmovps costs more than a plain load on Zen 3 (a 2 x 8 tile ran at half the speed of the
  // 4 x 24 one): only the last vector of a partial tile is masked.
  if (nr == 8 * NV) tap_loop<NV, false>(t, kc, r, ts, b, offs, m0, s);
  else tap_loop<NV, true>(t, kc, r, ts, b, offs, NV == 1 ? m0 : (NV == 2 ? m1 : m2), s);
  c00 = s[0][0], c01 = s[0][1], c02 = s[0][2], c10 = s[1][0], c11 = s[1][1], c12 = s[1][2];
  c20 = s[2][0], c21 = s[2][1], c22 = s[2][2], c30 = s[3][0], c31 = s[3][1], c32 = s[3][2];
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  const __m256 acc[12] = {c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32};
  const __m256i m[3] = {m0, m1, m2};
  if (mr == kMR && nr == 8 * NV) {
#pragma GCC unroll 4
    for (int i = 0; i < kMR; i++) {
      float *cr = c + i * ldc;
#pragma GCC unroll 3
      for (int v = 0; v < NV; v++) {
        __m256 x = _mm256_mul_ps(acc[i * 3 + v], va);
        if (beta != 0.0f) x = _mm256_fmadd_ps(_mm256_loadu_ps(cr + 8 * v), vb, x);
        _mm256_storeu_ps(cr + 8 * v, x);
      }
    }
  } else {
#pragma GCC unroll 4
    for (int i = 0; i < kMR; i++) {
      if (i >= mr) break;
      float *cr = c + i * ldc;
#pragma GCC unroll 3
      for (int v = 0; v < NV; v++) {
        __m256 x = _mm256_mul_ps(acc[i * 3 + v], va);
        if (beta != 0.0f) x = _mm256_fmadd_ps(_mm256_maskload_ps(cr + 8 * v, m[v]), vb, x);
        _mm256_maskstore_ps(cr + 8 * v, m[v], x);
      }
    }
  }
}

#undef RX_TAP_BC
#undef RX_TAP_LOADB
#undef RX_TAP2
#undef RX_TAP_ACC
#undef RX_TAP_CLOBBER

inline void tap_any(int64_t kc, const float *a, int64_t lda, const float *b, const int64_t *offs, float *c,
                    int64_t ldc, int mr, int nr, float alpha, float beta) {
  if (nr > 16) tap_tile<3>(kc, a, lda, b, offs, c, ldc, mr, nr, alpha, beta);
  else if (nr > 8) tap_tile<2>(kc, a, lda, b, offs, c, ldc, mr, nr, alpha, beta);
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
