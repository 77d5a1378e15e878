// Placeholder: im2col + GEMM per (image, group). To be replaced by the fast kernels.
#include "conv2d.h"

#include <cstring>
#include <vector>

#include "gemm.h"
#include "parallel.h"

namespace rx::cpu {

template <typename T>
static void im2col(const ConvGeom &g, const T *x /* [Cg,H,W] */, T *col /* [Cg*R*S, P*Q] */) {
  int64_t Cg = g.C / g.groups;
  for (int64_t c = 0; c < Cg; c++)
    for (int64_t r = 0; r < g.R; r++)
      for (int64_t s = 0; s < g.S; s++) {
        T *dst = col + ((c * g.R + r) * g.S + s) * g.P * g.Q;
        for (int64_t p = 0; p < g.P; p++) {
          int64_t h = p * g.stride_h - g.pad_h + r;
          for (int64_t q = 0; q < g.Q; q++) {
            int64_t w = q * g.stride_w - g.pad_w + s;
            dst[p * g.Q + q] = (h >= 0 && h < g.H && w >= 0 && w < g.W) ? x[(c * g.H + h) * g.W + w] : T(0);
          }
        }
      }
}

template <typename T>
static void col2im(const ConvGeom &g, const T *col, T *x /* [Cg,H,W], accumulated */) {
  int64_t Cg = g.C / g.groups;
  for (int64_t c = 0; c < Cg; c++)
    for (int64_t r = 0; r < g.R; r++)
      for (int64_t s = 0; s < g.S; s++) {
        const T *src = col + ((c * g.R + r) * g.S + s) * g.P * g.Q;
        for (int64_t p = 0; p < g.P; p++) {
          int64_t h = p * g.stride_h - g.pad_h + r;
          if (h < 0 || h >= g.H) continue;
          for (int64_t q = 0; q < g.Q; q++) {
            int64_t w = q * g.stride_w - g.pad_w + s;
            if (w >= 0 && w < g.W) x[(c * g.H + h) * g.W + w] += src[p * g.Q + q];
          }
        }
      }
}

template <typename T>
void conv2d_forward(const ConvGeom &g, const T *x, const T *w, const T *bias, T *y) {
  int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, PQ = g.P * g.Q, CRS = Cg * g.R * g.S;
  for (int64_t n = 0; n < g.N; n++)
    for (int64_t gr = 0; gr < g.groups; gr++) {
      std::vector<T> col(CRS * PQ);
      im2col(g, x + (n * g.C + gr * Cg) * g.H * g.W, col.data());
      T *out = y + (n * g.K + gr * Kg) * PQ;
      gemm<T>(false, false, Kg, PQ, CRS, T(1), w + gr * Kg * CRS, CRS, col.data(), PQ, T(0), out, PQ);
      if (bias)
        for (int64_t k = 0; k < Kg; k++)
          for (int64_t i = 0; i < PQ; i++) out[k * PQ + i] += bias[gr * Kg + k];
    }
}

template <typename T>
void conv2d_backward_data(const ConvGeom &g, const T *gy, const T *w, T *gx) {
  int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, PQ = g.P * g.Q, CRS = Cg * g.R * g.S;
  std::memset(gx, 0, sizeof(T) * g.N * g.C * g.H * g.W);
  for (int64_t n = 0; n < g.N; n++)
    for (int64_t gr = 0; gr < g.groups; gr++) {
      std::vector<T> col(CRS * PQ);
      gemm<T>(true, false, CRS, PQ, Kg, T(1), w + gr * Kg * CRS, CRS, gy + (n * g.K + gr * Kg) * PQ, PQ, T(0),
              col.data(), PQ);
      col2im(g, col.data(), gx + (n * g.C + gr * Cg) * g.H * g.W);
    }
}

template <typename T>
void conv2d_backward_filter(const ConvGeom &g, const T *gy, const T *x, T *gw) {
  int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, PQ = g.P * g.Q, CRS = Cg * g.R * g.S;
  std::memset(gw, 0, sizeof(T) * g.K * CRS);
  for (int64_t n = 0; n < g.N; n++)
    for (int64_t gr = 0; gr < g.groups; gr++) {
      std::vector<T> col(CRS * PQ);
      im2col(g, x + (n * g.C + gr * Cg) * g.H * g.W, col.data());
      gemm<T>(false, true, Kg, CRS, PQ, T(1), gy + (n * g.K + gr * Kg) * PQ, PQ, col.data(), PQ, T(1),
              gw + gr * Kg * CRS, CRS);
    }
}

#define RX_INST(T)                                                                         \
  template void conv2d_forward<T>(const ConvGeom &, const T *, const T *, const T *, T *); \
  template void conv2d_backward_data<T>(const ConvGeom &, const T *, const T *, T *);      \
  template void conv2d_backward_filter<T>(const ConvGeom &, const T *, const T *, T *);
RX_INST(float)
RX_INST(double)

}  // namespace rx::cpu
