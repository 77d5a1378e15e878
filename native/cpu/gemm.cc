// Packed, register-blocked GEMM for the CPU backend, and the run-time choice of micro-kernels.
//
// Layout/algorithm (GotoBLAS/BLIS blocking): for each KC-deep slice of op(A)/op(B), op(B) is packed
// into NR-wide column slivers (kc x NR, contiguous) and MC-row blocks of op(A) into MR-row panels
// (kc x MR, zero-padded); the `tap` micro-kernel (gemm_kernels.h) then computes each MR x NR tile
// of C in registers. Packing absorbs the transposes, so one micro-kernel serves all four
// combinations. The first K slice applies beta (beta == 0 writes without reading C, so NaN in the
// old C never leaks); later slices accumulate. gemm_f32/f64 split C into per-thread row or column
// ranges (whichever dimension is larger) and run gemm_serial on each; packing buffers are
// thread_local so repeated calls do not touch the heap.
#include "gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gemm_kernels.h"
#include "parallel.h"

namespace rx::cpu {

namespace {

// ---------------------------------------------------------------------------------------------
// Portable micro-kernels: the fallback for CPUs without AVX2/FMA and the double path (double is
// used for gradient checks on tiny shapes, so plain loops that the compiler may vectorize suffice).
template <typename T, int MR, int NR>
void tap_ref(int64_t kc, const T *a, const T *b, const int64_t *offs, T *c, int64_t ldc, int mr, int nr, T alpha,
             T beta) {
  T acc[MR][NR] = {};
  if (nr == NR) {
    for (int64_t t = 0; t < kc; t++, a += MR) {
      const T *bp = b + offs[t];
      for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) acc[i][j] += a[i] * bp[j];
    }
  } else {
    for (int64_t t = 0; t < kc; t++, a += MR) {
      const T *bp = b + offs[t];
      for (int i = 0; i < MR; i++)
        for (int j = 0; j < nr; j++) acc[i][j] += a[i] * bp[j];
    }
  }
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nr; j++) {
      T *cp = c + i * ldc + j;
      *cp = beta == T(0) ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *cp;
    }
}

template <typename T, int MR, int NR>
void tapr_ref(int64_t kc, const T *a, int64_t lda, const T *b, const int64_t *offs, T *c, int64_t ldc, int mr, int nr,
              T beta) {
  T acc[MR][NR] = {};
  for (int64_t t = 0; t < kc; t++) {
    const T *bp = b + offs[t];
    for (int i = 0; i < mr; i++)
      for (int j = 0; j < nr; j++) acc[i][j] += a[i * lda + t] * bp[j];
  }
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nr; j++) {
      T *cp = c + i * ldc + j;
      *cp = beta == T(0) ? acc[i][j] : acc[i][j] + beta * *cp;
    }
}

template <typename T, int DMR, int DNT>
void dot_ref(int64_t len, const T *a, int64_t lda, const T *b, const int64_t *offs, T *c, int64_t ldc, int mr,
             int nt) {
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nt; j++) {
      const T *x = a + i * lda, *y = b + offs[j];
      T s = 0;
      for (int64_t p = 0; p < len; p++) s += x[p] * y[p];
      c[i * ldc + j] += s;
    }
}

template <typename T, int BMR, int BNR>
void bcast_ref(int64_t kc, const T *a, const int64_t *ra, int mr, const int64_t *ca, const T *b, int64_t ldb, int nr,
               T *c, int64_t ldc, bool acc) {
  T s[BMR][BNR] = {};
  for (int64_t t = 0; t < kc; t++) {
    const T *bp = b + t * ldb;
    for (int i = 0; i < mr; i++) {
      const T av = a[ra[i] + ca[t]];
      for (int j = 0; j < nr; j++) s[i][j] += av * bp[j];
    }
  }
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nr; j++) c[i * ldc + j] = acc ? c[i * ldc + j] + s[i][j] : s[i][j];
}

GemmKernels<float> select_f32() {
  GemmKernels<float> k{4, 16, 4, 4, tap_ref<float, 4, 16>, dot_ref<float, 4, 4>, "scalar", 8, 32, bcast_ref<float, 8, 32>,
                       tapr_ref<float, 4, 16>, 16};
  // RESNEXT_CPU_ISA caps the choice so tests can exercise the lower paths on a newer CPU.
  const char *cap = std::getenv("RESNEXT_CPU_ISA");
  std::string want = cap ? cap : "avx512";
#if defined(__GNUC__) && defined(__x86_64__)
  __builtin_cpu_init();
  bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  bool has_avx512 = __builtin_cpu_supports("avx512f") && has_avx2;
  if (want == "avx512" && has_avx512)
    return {avx512::kMR, avx512::kNR, avx512::kDMR, avx512::kDNT, avx512::tap_f32, avx512::dot_f32, "avx512",
            avx512::kBMR, avx512::kBNR, avx512::bcast_f32, avx512::tapr_f32, 16};
  if ((want == "avx512" || want == "avx2") && has_avx2)
    return {avx2::kMR, avx2::kNR, avx2::kDMR, avx2::kDNT, avx2::tap_f32, avx2::dot_f32, "avx2",
            avx2::kBMR, avx2::kBNR, avx2::bcast_f32, avx2::tapr_f32, 8};
#endif
  return k;
}

template <typename T>
T *scratch(std::vector<T> &v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace

const GemmKernels<float> &gemm_kernels_f32() {
  static const GemmKernels<float> k = select_f32();
  return k;
}
const GemmKernels<double> &gemm_kernels_f64() {
  static const GemmKernels<double> k{4, 8, 4, 4, tap_ref<double, 4, 8>, dot_ref<double, 4, 4>, "scalar",
                                     8, 16, bcast_ref<double, 8, 16>, tapr_ref<double, 4, 8>, 8};
  return k;
}

template <typename T>
void gemm_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T *A, int64_t lda, const T *B,
                 int64_t ldb, T beta, T *C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == T(0)) {
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
  const GemmKernels<T> &kr = gemm_kernels<T>();
  const int MR = kr.mr, NR = kr.nr;
  // KC x NR sliver of B (24-64 KB at KC=256) stays in L1/L2 across an MC block of A panels
  // (MC x KC = 128 KB, L2); NC bounds the packed B block (KC x NC = 1 MB, L2/L3).
  const int64_t KC = 256, MC = 128, NC = 1024 - 1024 % NR + NR;
  thread_local std::vector<T> bufA, bufB;
  thread_local std::vector<int64_t> offsv;
  T *Ap = scratch(bufA, (size_t)MC * KC);
  T *Bp = scratch(bufB, (size_t)NC * KC);
  int64_t *offs = scratch(offsv, (size_t)KC);
  for (int64_t t = 0; t < KC; t++) offs[t] = t * NR;

  for (int64_t j0 = 0; j0 < N; j0 += NC) {
    const int64_t nc = std::min(NC, N - j0);
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kc = std::min(KC, K - k0);
      // Pack op(B)[k0:k0+kc, j0:j0+nc] into slivers Bp[js][t][j].
      for (int64_t js = 0; js < nc; js += NR) {
        const int64_t nr = std::min<int64_t>(NR, nc - js);
        T *dst = Bp + js * kc;
        for (int64_t t = 0; t < kc; t++, dst += NR) {
          if (!tb) {
            const T *src = B + (k0 + t) * ldb + j0 + js;
            for (int64_t j = 0; j < nr; j++) dst[j] = src[j];
          } else {
            const T *src = B + (j0 + js) * ldb + k0 + t;
            for (int64_t j = 0; j < nr; j++) dst[j] = src[j * ldb];
          }
          for (int64_t j = nr; j < NR; j++) dst[j] = T(0);
        }
      }
      const T b_eff = k0 == 0 ? beta : T(1);
      for (int64_t i0 = 0; i0 < M; i0 += MC) {
        const int64_t mc = std::min(MC, M - i0);
        // Pack op(A)[i0:i0+mc, k0:k0+kc] into panels Ap[ib][t][i].
        for (int64_t ib = 0; ib < mc; ib += MR) {
          const int64_t mr = std::min<int64_t>(MR, mc - ib);
          T *dst = Ap + ib * kc;
          if (!ta) {
            for (int64_t t = 0; t < kc; t++, dst += MR) {
              const T *src = A + (i0 + ib) * lda + k0 + t;
              for (int64_t i = 0; i < mr; i++) dst[i] = src[i * lda];
              for (int64_t i = mr; i < MR; i++) dst[i] = T(0);
            }
          } else {
            for (int64_t t = 0; t < kc; t++, dst += MR) {
              const T *src = A + (k0 + t) * lda + i0 + ib;
              for (int64_t i = 0; i < mr; i++) dst[i] = src[i];
              for (int64_t i = mr; i < MR; i++) dst[i] = T(0);
            }
          }
        }
        for (int64_t js = 0; js < nc; js += NR) {
          const int nr = (int)std::min<int64_t>(NR, nc - js);
          for (int64_t ib = 0; ib < mc; ib += MR) {
            const int mr = (int)std::min<int64_t>(MR, mc - ib);
            kr.tap(kc, Ap + ib * kc, Bp + js * kc, offs, C + (i0 + ib) * ldc + j0 + js, ldc, mr, nr, alpha, b_eff);
          }
        }
      }
    }
  }
}

template void gemm_serial<float>(bool, bool, int64_t, int64_t, int64_t, float, const float *, int64_t,
                                 const float *, int64_t, float, float *, int64_t);
template void gemm_serial<double>(bool, bool, int64_t, int64_t, int64_t, double, const double *, int64_t,
                                  const double *, int64_t, double, double *, int64_t);

namespace {

// Splits C across the pool along its larger dimension (in whole micro-tiles) so each thread packs
// only the operand slice it needs; tiny products run inline (a region costs a few microseconds).
// A few rows times a transposed B (a linear layer at batch 1-8: x [M, K] times w [N, K]^T): dot
// products along K read each row of w once, where the packed path copied all of w (8 MB for
// resnext50's fc) to feed one row. False when the shape is not of that kind.
template <typename T>
bool gemm_few_rows(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T *A, int64_t lda, const T *B,
                   int64_t ldb, T beta, T *C, int64_t ldc) {
  const GemmKernels<T> &kr = gemm_kernels<T>();
  if (ta || !tb || alpha != T(1) || M > 2 * kr.dmr || K < 16 || N < 2 * kr.dnt) return false;
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
  const int64_t tiles = (N + kr.dnt - 1) / kr.dnt;
  auto body = [&](int64_t t0, int64_t t1) {
    int64_t offs[16];
    for (int64_t t = t0; t < t1; t++) {
      const int64_t j0 = t * kr.dnt, nt = std::min<int64_t>(kr.dnt, N - j0);
      for (int64_t j = 0; j < nt; j++) offs[j] = (j0 + j) * ldb;
      for (int64_t i0 = 0; i0 < M; i0 += kr.dmr)
        kr.dot(K, A + i0 * lda, lda, B, offs, C + i0 * ldc + j0, ldc, (int)std::min<int64_t>(kr.dmr, M - i0), (int)nt);
    }
  };
  if (num_threads() <= 1 || (double)M * N * K < 2e5) body(0, tiles);
  else parallel_for(0, tiles, 8, body);
  return true;
}

template <typename T>
void gemm_parallel(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T *A, int64_t lda, const T *B,
                   int64_t ldb, T beta, T *C, int64_t ldc) {
  const GemmKernels<T> &kr = gemm_kernels<T>();
  if (gemm_few_rows(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  const int nt = num_threads();
  if (nt <= 1 || (double)M * N * std::max<int64_t>(K, 1) < 2e5) {
    gemm_serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  if (M >= N) {
    const int64_t tiles = (M + kr.mr - 1) / kr.mr;
    parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
      const int64_t i0 = t0 * kr.mr, i1 = std::min(M, t1 * kr.mr);
      gemm_serial(ta, tb, i1 - i0, N, K, alpha, ta ? A + i0 : A + i0 * lda, lda, B, ldb, beta, C + i0 * ldc, ldc);
    });
  } else {
    const int64_t tiles = (N + kr.nr - 1) / kr.nr;
    parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
      const int64_t j0 = t0 * kr.nr, j1 = std::min(N, t1 * kr.nr);
      gemm_serial(ta, tb, M, j1 - j0, K, alpha, A, lda, tb ? B + j0 * ldb : B + j0, ldb, beta, C + j0, ldc);
    });
  }
}

}  // namespace

void gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  gemm_parallel(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void gemm_f64(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double *A, int64_t lda,
              const double *B, int64_t ldb, double beta, double *C, int64_t ldc) {
  gemm_parallel(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace rx::cpu
