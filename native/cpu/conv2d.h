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

template <typename T>
void conv2d_forward(const ConvGeom &g, const T *x, const T *w, const T *bias, T *y);
template <typename T>
void conv2d_backward_data(const ConvGeom &g, const T *gy, const T *w, T *gx);
template <typename T>
void conv2d_backward_filter(const ConvGeom &g, const T *gy, const T *x, T *gw);

}  // namespace rx::cpu
