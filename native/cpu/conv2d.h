// 2-D convolution kernels of the CPU backend, NCHW activations and [K, C/groups, R, S] weights
// (PyTorch's layout), cross-correlation as in every DL framework. All three directions:
//   forward          y[n,k,p,q]  = b[k] + sum_{c,r,s} x[n, g*Cg + c, p*sh - ph + r, q*sw - pw + s] * w[k,c,r,s]
//   backward_data    gx = conv_transpose(gy, w)        (overwrites gx)
//   backward_filter  gw[k,c,r,s] = sum_{n,p,q} gy[n,k,p,q] * x[...]   (overwrites gw)
// where g = k / (K/groups), Cg = C/groups. Arguments are validated by the op layer (ops.cc).
#pragma once

#include <cstdint>

namespace rx::cpu {

struct ConvGeom {
  int64_t N, C, H, W;  // input
  int64_t K, R, S;     // output channels, kernel height and width
  int64_t P, Q;        // output height and width
  int64_t stride_h, stride_w, pad_h, pad_w, groups;
};

// What the forward applies to each output value v of channel k before it is stored:
//   y = act(v * scale[k] + shift[k] + residual[same index as y])
// A bias is scale 1, shift = bias; an eval-mode batch norm folds into scale and shift (the fused
// conv2d + batchNorm of inference), and the block's residual add + ReLU ride along.
template <typename T>
struct ConvEpilogue {
  const T *scale = nullptr;     // null: 1
  const T *shift = nullptr;     // null: 0
  const T *residual = nullptr;  // null: none; else y's shape
  bool relu = false;
  T value(int64_t k, T v, int64_t yi) const {
    if (scale) v = v * scale[k];
    if (shift) v = v + shift[k];
    if (residual) v = v + residual[yi];
    return relu && v < T(0) ? T(0) : v;  // NaN passes, as std::max(v, 0) in batch norm
  }
  // dst[i] = value(k, src[i], yi + i) for i < n (dst may be src).
  void row(int64_t k, T *dst, const T *src, int64_t n, int64_t yi) const {
    const T sc = scale ? scale[k] : T(1), sh = shift ? shift[k] : T(0);
    const T *r = residual ? residual + yi : nullptr;
    if (r) {
      for (int64_t i = 0; i < n; i++) {
        const T v = src[i] * sc + sh + r[i];
        dst[i] = relu && v < T(0) ? T(0) : v;
      }
    } else if (relu) {
      for (int64_t i = 0; i < n; i++) {
        const T v = src[i] * sc + sh;
        dst[i] = v < T(0) ? T(0) : v;
      }
    } else {
      for (int64_t i = 0; i < n; i++) dst[i] = src[i] * sc + sh;
    }
  }
  bool identity() const { return !scale && !shift && !residual && !relu; }
};

template <typename T>
void conv2d_forward(const ConvGeom &g, const T *x, const T *w, const T *bias, T *y);
template <typename T>
void conv2d_forward(const ConvGeom &g, const T *x, const T *w, const ConvEpilogue<T> &e, T *y);
template <typename T>
void conv2d_backward_data(const ConvGeom &g, const T *gy, const T *w, T *gx);
template <typename T>
void conv2d_backward_filter(const ConvGeom &g, const T *gy, const T *x, T *gw);

}  // namespace rx::cpu
