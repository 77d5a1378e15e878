// Internal micro-kernels shared by gemm.cc and conv2d.cc (not part of the public CPU API).
//
// Two register-blocked primitives cover GEMM and all three convolution directions:
//
//   tap:  C[i][j] = alpha * sum_{t<kc} a[t*MR + i] * b[offs[t] + j] + beta * C[i][j]   (i<mr<=MR, j<nr<=NR)
//         `a` is a packed panel (MR values per t, zero-padded rows). Each B row is addressed by an
//         offset, so the same kernel reads a packed GEMM panel (offs[t] = t*NR) or an implicit
//         im2col: rows of a padded/phase-split image plane shifted by a filter tap (conv forward
//         and backward-data never materialize im2col). beta == 0 never reads C.
//         B is read only at j < nr (masked loads), so callers need no over-read slack.
//   tapr: tap with A unpacked (row i at a + i*lda): conv forward reads its weights in place.
//   dot:  C[i][j] += sum_{p<len} a[i*lda + p] * b[offs[j] + p]   (i<mr<=DMR, j<nt<=DNT)
//         Dot products along a contiguous axis: conv backward-filter reduces over output pixels.
//   bcast: C[i][j] = (acc ? C[i][j] : 0) + sum_{t<kc} a[ra[i] + ca[t]] * b[t*ldb + j]   (i<mr<=BMR, j<nr<=BNR)
//         The vector axis is a short channel axis of B (a group's 16 or 32 output channels) and A is
//         broadcast straight from an unpacked buffer: row i at offset ra[i], reduction step t at
//         offset ca[t]. Grouped 3x3 convs at 7x7-14x14 (issue 12): forward and backward-data take
//         rows = output pixels, t = filter taps; backward-filter takes rows = taps, t = pixels.
//         Only valid pixels are listed, so no padded-grid junk is computed, and nothing is packed
//         but the small B (weights, or gy transposed to [pixel][channel]).
//
// The float kernels exist per ISA (gemm_avx2.cc, gemm_avx512.cc, compiled with per-function
// target attributes so no build flags are needed) and are picked at run time with
// __builtin_cpu_supports; a portable C++ version (gemm.cc) is the fallback and the double path.
// RESNEXT_CPU_ISA=scalar|avx2|avx512 caps the choice (for tests and benchmarks).
#pragma once

#include <cstdint>

namespace rx::cpu {

template <typename T>
struct GemmKernels {
  int mr, nr;    // tap tile
  int dmr, dnt;  // dot tile
  void (*tap)(int64_t kc, const T *a, const T *b, const int64_t *offs, T *c, int64_t ldc, int mr, int nr,
              T alpha, T beta);
  void (*dot)(int64_t len, const T *a, int64_t lda, const T *b, const int64_t *offs, T *c, int64_t ldc, int mr,
              int nt);
  const char *name;
  int bmr, bnr;  // bcast tile
  void (*bcast)(int64_t kc, const T *a, const int64_t *ra, int mr, const int64_t *ca, const T *b, int64_t ldb, int nr,
                T *c, int64_t ldc, bool acc);
  // tap with A read as rows of an unpacked matrix (row i at a + i*lda, t contiguous; alpha 1),
  // so weights need no packing.
  void (*tapr)(int64_t kc, const T *a, int64_t lda, const T *b, const int64_t *offs, T *c, int64_t ldc, int mr, int nr,
               T beta);
  int vl;  // lanes per vector of the tap tile: a partial tile costs FMAs per started vector
};

const GemmKernels<float> &gemm_kernels_f32();
const GemmKernels<double> &gemm_kernels_f64();

template <typename T>
inline const GemmKernels<T> &gemm_kernels();
template <>
inline const GemmKernels<float> &gemm_kernels<float>() {
  return gemm_kernels_f32();
}
template <>
inline const GemmKernels<double> &gemm_kernels<double>() {
  return gemm_kernels_f64();
}

// Single-threaded packed GEMM (same contract as gemm_f32/gemm_f64); conv2d calls it inside its
// own parallel regions.
template <typename T>
void gemm_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T *A, int64_t lda, const T *B,
                 int64_t ldb, T beta, T *C, int64_t ldc);

// ISA entry points (defined only when the compiler supports the target attribute).
namespace avx2 {
constexpr int kMR = 4, kNR = 24, kDMR = 4, kDNT = 2, kBMR = 6, kBNR = 16;
void bcast_f32(int64_t kc, const float *a, const int64_t *ra, int mr, const int64_t *ca, const float *b, int64_t ldb,
               int nr, float *c, int64_t ldc, bool acc);
void tap_f32(int64_t kc, const float *a, const float *b, const int64_t *offs, float *c, int64_t ldc, int mr, int nr,
             float alpha, float beta);
void tapr_f32(int64_t kc, const float *a, int64_t lda, const float *b, const int64_t *offs, float *c, int64_t ldc,
              int mr, int nr, float beta);
void dot_f32(int64_t len, const float *a, int64_t lda, const float *b, const int64_t *offs, float *c, int64_t ldc,
             int mr, int nt);
}  // namespace avx2
namespace avx512 {
constexpr int kMR = 4, kNR = 64, kDMR = 4, kDNT = 4, kBMR = 8, kBNR = 32;
void tapr_f32(int64_t kc, const float *a, int64_t lda, const float *b, const int64_t *offs, float *c, int64_t ldc,
              int mr, int nr, float beta);
void bcast_f32(int64_t kc, const float *a, const int64_t *ra, int mr, const int64_t *ca, const float *b, int64_t ldb,
               int nr, float *c, int64_t ldc, bool acc);
void tap_f32(int64_t kc, const float *a, const float *b, const int64_t *offs, float *c, int64_t ldc, int mr, int nr,
             float alpha, float beta);
void dot_f32(int64_t len, const float *a, int64_t lda, const float *b, const int64_t *offs, float *c, int64_t ldc,
             int mr, int nt);
}  // namespace avx512

}  // namespace rx::cpu
