// CPU kernels for the network layers: convolution dispatch, batch norm (plain and fused with
// ReLU / residual add + ReLU), pooling, dense layers, cross-entropy and top-k.
// Layout NCHW; batch norm works per channel (one task per channel, N strided planes each) and
// accumulates its statistics in double.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "conv2d.h"
#include "cpu_backend.h"
#include "gemm.h"
#include "parallel.h"

namespace rx::cpu {

namespace {
ConvGeom geom(const Tensor &x, const Shape &w, const Shape &y, const Conv2dArgs &a) {
  return {x.dim(0), x.dim(1), x.dim(2), x.dim(3), w[0], w[2], w[3], y[2], y[3], a.stride_h, a.stride_w,
          a.pad_h, a.pad_w, a.groups};
}
}  // namespace

void conv2d_forward(const Tensor &x, const Tensor &w, const Tensor *b, Tensor &y, const Conv2dArgs &a) {
  ConvGeom g = geom(x, w.shape(), y.shape(), a);
  RX_DISPATCH_FLOAT(x.dtype(), "conv2d", [&] {
    cpu::conv2d_forward<T>(g, x.data<T>(), w.data<T>(), b ? b->data<T>() : nullptr, y.data<T>());
  });
}
const bool conv2d_forward_set = set_kernel(cpu_kernels().conv2d_forward, &conv2d_forward);

// A batch norm's per-channel affine form y = x * scale + shift, from its mean and 1/sqrt(var + eps)
// (double): batch_norm_forward and the fused conv2d_bn_eval both use it, so they agree bit for bit.
template <typename T>
inline void bn_affine(T gamma, T beta, double mean, double invstd, T *scale, T *shift) {
  *scale = (T)(gamma * invstd);
  *shift = (T)(beta - mean * gamma * invstd);
}
inline double bn_eval_invstd(double running_var, double eps) { return 1.0 / std::sqrt(running_var + eps); }

// Eval-mode batch norm folded into the convolution's epilogue: scale = gamma / sqrt(var + eps),
// shift = beta - mean * scale, computed as batch_norm_forward computes them (so the fused op gives
// the two ops' result), then y = act(conv * scale + shift [+ residual]) as each block is finished.
void conv2d_bn_eval(const Tensor &x, const Tensor &w, const Tensor &gamma, const Tensor &beta,
                    const Tensor &running_mean, const Tensor &running_var, const Tensor *residual, Tensor &y,
                    const Conv2dArgs &ca, const BatchNormArgs &a) {
  ConvGeom g = geom(x, w.shape(), y.shape(), ca);
  RX_DISPATCH_FLOAT(x.dtype(), "conv2d", [&] {
    const int64_t K = g.K;
    const T *pg = gamma.data<T>(), *pb = beta.data<T>(), *rm = running_mean.data<T>(), *rv = running_var.data<T>();
    std::vector<T> scale((size_t)K), shift((size_t)K);
    for (int64_t k = 0; k < K; k++) bn_affine(pg[k], pb[k], rm[k], bn_eval_invstd(rv[k], a.eps), &scale[k], &shift[k]);
    ConvEpilogue<T> e;
    e.scale = scale.data(), e.shift = shift.data();
    e.residual = a.act == BnAct::AddReLU && residual ? residual->data<T>() : nullptr;
    e.relu = a.act != BnAct::None;
    cpu::conv2d_forward<T>(g, x.data<T>(), w.data<T>(), e, y.data<T>());
  });
}
const bool conv2d_bn_eval_set = set_kernel(cpu_kernels().conv2d_bn_eval, &conv2d_bn_eval);

void conv2d_backward_data(const Tensor &gy, const Tensor &w, Tensor &gx, const Conv2dArgs &a) {
  ConvGeom g = geom(gx, w.shape(), gy.shape(), a);
  RX_DISPATCH_FLOAT(gy.dtype(), "conv2d_backward_data",
                    [&] { cpu::conv2d_backward_data<T>(g, gy.data<T>(), w.data<T>(), gx.data<T>()); });
}
const bool conv2d_backward_data_set = set_kernel(cpu_kernels().conv2d_backward_data, &conv2d_backward_data);

void conv2d_backward_filter(const Tensor &gy, const Tensor &x, Tensor &gw, const Conv2dArgs &a) {
  ConvGeom g = geom(x, gw.shape(), gy.shape(), a);
  RX_DISPATCH_FLOAT(gy.dtype(), "conv2d_backward_filter",
                    [&] { cpu::conv2d_backward_filter<T>(g, gy.data<T>(), x.data<T>(), gw.data<T>()); });
}
const bool conv2d_backward_filter_set = set_kernel(cpu_kernels().conv2d_backward_filter, &conv2d_backward_filter);

// ---- batch norm plane kernels -------------------------------------------------------------
// Each works on one contiguous H*W plane of one channel. Reductions keep kLanes independent
// partial sums, so the compiler vectorises them without reassociating one long chain (the
// result is still deterministic: it depends only on H*W). The float versions are compiled for
// AVX2 and a baseline, picked at load time (target_clones).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RX_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define RX_CLONES
#endif

namespace {
constexpr int kLanes = 16;

// Sums of (p - k) and (p - k)^2 in one pass: the shifted-data variance, exact enough when k is a
// sample of the same channel (|mean - k| is a few standard deviations at most).
// Local accumulators: with a1/a2 possibly aliasing, GCC kept them in memory (scalar code).
template <typename T>
inline void plane_sum_sq(const T *p, int64_t n, T k, T *a1, T *a2) {
  T s1[kLanes] = {}, s2[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; l++) {
      T d = p[i + l] - k;
      s1[l] += d;
      s2[l] += d * d;
    }
  for (; i < n; i++) {
    T d = p[i] - k;
    s1[i % kLanes] += d;
    s2[i % kLanes] += d * d;
  }
  for (int l = 0; l < kLanes; l++) a1[l] += s1[l], a2[l] += s2[l];
}
template <typename T>
inline void plane_apply(const T *p, const T *r, T *q, int64_t n, T scale, T shift, int act) {
  if (act == 0)
    for (int64_t i = 0; i < n; i++) q[i] = p[i] * scale + shift;
  else if (act == 1)
    for (int64_t i = 0; i < n; i++) q[i] = std::max(p[i] * scale + shift, T(0));
  else
    for (int64_t i = 0; i < n; i++) q[i] = std::max(p[i] * scale + shift + r[i], T(0));
}
// Sums of g and g * (x - mean), g = gy masked by y > 0 when relu.
template <typename T>
inline void plane_bwd_reduce(const T *g, const T *p, const T *q, int64_t n, T mean, bool relu, T *a1, T *a2) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; l++) {
      T gi = (!relu || q[i + l] > T(0)) ? g[i + l] : T(0);
      a1[l] += gi;
      a2[l] += gi * (p[i + l] - mean);
    }
  for (; i < n; i++) {
    T gi = (!relu || q[i] > T(0)) ? g[i] : T(0);
    a1[i % kLanes] += gi;
    a2[i % kLanes] += gi * (p[i] - mean);
  }
}
template <typename T>
inline void plane_bwd_apply(const T *g, const T *p, const T *q, T *o, T *r, int64_t n, T k, T mg, T mgx, T mean,
                            bool relu, bool training) {
  for (int64_t i = 0; i < n; i++) {
    T gi = (!relu || q[i] > T(0)) ? g[i] : T(0);
    if (r) r[i] = gi;
    // training: gamma*inv*(g - mean(g) - (x - mean)*inv^2*mean(g*(x - mean))); eval: gamma*inv*g
    o[i] = training ? k * (gi - mg - (p[i] - mean) * mgx) : k * gi;
  }
}

template <typename T>
double lanes_total(const T *acc) {
  double s = 0;
  for (int l = 0; l < kLanes; l++) s += acc[l];
  return s;
}

// Whole channel blocks per call: for n, for c in [c0, c1): one plane of HW values each. A call per
// plane cost more than the plane on ResNeXt-29's 4x4-14x14 maps (an indirect call to the cloned
// function and lane setup for 16-196 values; 25% of a training step was batch norm). Sums per
// plane in kLanes float lanes, then in double, as before (the results are unchanged).
template <typename T>
inline void block_sum_sq(const T *px, int64_t N, int64_t C, int64_t HW, int64_t c0, int64_t c1, const T *kshift,
                         double *s1, double *s2) {
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = c0; c < c1; c++) {
      T a1[kLanes] = {}, a2[kLanes] = {};
      plane_sum_sq(px + (n * C + c) * HW, HW, kshift[c - c0], a1, a2);
      s1[c - c0] += lanes_total(a1);
      s2[c - c0] += lanes_total(a2);
    }
}
template <typename T>
inline void block_apply(const T *px, const T *pr, T *py, int64_t N, int64_t C, int64_t HW, int64_t c0, int64_t c1,
                        const T *scale, const T *shift, int act) {
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = c0; c < c1; c++) {
      const int64_t off = (n * C + c) * HW;
      plane_apply(px + off, pr ? pr + off : nullptr, py + off, HW, scale[c - c0], shift[c - c0], act);
    }
}
// One channel's N planes (backward).
template <typename T>
inline void chan_bwd_reduce(const T *g, const T *p, const T *q, int64_t N, int64_t C, int64_t HW, int64_t c, T mean,
                            bool relu, double *sg, double *sgx) {
  for (int64_t n = 0; n < N; n++) {
    const int64_t off = (n * C + c) * HW;
    T a1[kLanes] = {}, a2[kLanes] = {};
    plane_bwd_reduce(g + off, p + off, q + off, HW, mean, relu, a1, a2);
    *sg += lanes_total(a1);
    *sgx += lanes_total(a2);
  }
}
template <typename T>
inline void chan_bwd_apply(const T *g, const T *p, const T *q, T *o, T *r, int64_t N, int64_t C, int64_t HW, int64_t c,
                           T k, T mg, T mgx, T mean, bool relu, bool training) {
  for (int64_t n = 0; n < N; n++) {
    const int64_t off = (n * C + c) * HW;
    plane_bwd_apply(g + off, p + off, q + off, o + off, r ? r + off : nullptr, HW, k, mg, mgx, mean, relu, training);
  }
}

// The float overloads are the cloned (AVX2 / baseline) entry points; double calls the templates.
RX_CLONES void block_sum_sq(const float *px, int64_t N, int64_t C, int64_t HW, int64_t c0, int64_t c1,
                                const float *kshift, double *s1, double *s2) {
  block_sum_sq<float>(px, N, C, HW, c0, c1, kshift, s1, s2);
}
RX_CLONES void block_apply(const float *px, const float *pr, float *py, int64_t N, int64_t C, int64_t HW, int64_t c0,
                               int64_t c1, const float *scale, const float *shift, int act) {
  block_apply<float>(px, pr, py, N, C, HW, c0, c1, scale, shift, act);
}
RX_CLONES void chan_bwd_reduce(const float *g, const float *p, const float *q, int64_t N, int64_t C, int64_t HW,
                                   int64_t c, float mean, bool relu, double *sg, double *sgx) {
  chan_bwd_reduce<float>(g, p, q, N, C, HW, c, mean, relu, sg, sgx);
}
RX_CLONES void chan_bwd_apply(const float *g, const float *p, const float *q, float *o, float *r, int64_t N,
                                  int64_t C, int64_t HW, int64_t c, float k, float mg, float mgx, float mean, bool relu,
                                  bool training) {
  chan_bwd_apply<float>(g, p, q, o, r, N, C, HW, c, k, mg, mgx, mean, relu, training);
}

// Channels per forward batch-norm task. When a channel's N planes fit in L1 (resnext50 at batch
// 8), one channel per task, so the normalising pass finds it there. When they do not (ResNeXt-29
// at batch 128: 128 isolated 784-byte planes), a task takes up to 16 channels and walks them
// image by image, reading runs of contiguous planes that the prefetchers follow (statistics
// pass measured 1.5-2.8x faster on the ResNeXt-29 shapes, single thread).
int64_t bn_channel_block(int64_t C, int64_t N, int64_t HW, size_t elem) {
  const int64_t per_channel = std::max<int64_t>(1, N * HW * 2 * (int64_t)elem);
  if (per_channel <= (int64_t(32) << 10)) return 1;
  int64_t cb = std::clamp<int64_t>((int64_t(1) << 20) / per_channel, 1, 16);
  const int64_t want = 2 * num_threads();
  while (cb > 1 && (C + cb - 1) / cb < want) cb /= 2;
  return cb;
}
}  // namespace

void batch_norm_forward(const Tensor &x, const Tensor &gamma, const Tensor &beta, const Tensor *residual,
                                    Tensor &running_mean, Tensor &running_var, Tensor &y, Tensor &save_mean,
                                    Tensor &save_invstd, const BatchNormArgs &a) {
  int64_t N = x.dim(0), C = x.dim(1), HW = x.dim(2) * x.dim(3), M = N * HW;
  RX_DISPATCH_FLOAT(x.dtype(), "batchNorm2d", [&] {
    const T *px = x.data<T>(), *pg = gamma.data<T>(), *pb = beta.data<T>();
    const T *pr = residual ? residual->data<T>() : nullptr;
    T *py = y.data<T>(), *rm = running_mean.data<T>(), *rv = running_var.data<T>();
    T *sm = save_mean.data<T>(), *si = save_invstd.data<T>();
    // Training: one pass for the statistics (shifted sums around the channel's first value) and
    // one to normalise (the two-pass mean-then-deviations version read x three times).
    const int64_t cb = bn_channel_block(C, N, HW, sizeof(T));
    parallel_for(0, (C + cb - 1) / cb, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t blk = b0; blk < b1; blk++) {
        const int64_t c0 = blk * cb, c1 = std::min(C, c0 + cb), nc = c1 - c0;
        T scale[16], shift[16];
        double s1[16] = {}, s2[16] = {};
        T kshift[16];
        if (a.training) {
          for (int64_t c = c0; c < c1; c++) kshift[c - c0] = HW > 0 ? px[c * HW] : T(0);
          block_sum_sq(px, N, C, HW, c0, c1, kshift, s1, s2);
        }
        for (int64_t i = 0; i < nc; i++) {
          const int64_t c = c0 + i;
          double mean, invstd;
          if (a.training) {
            const double d = s1[i] / M;
            mean = kshift[i] + d;
            const double var = std::max(0.0, s2[i] / M - d * d);  // biased for normalisation
            invstd = 1.0 / std::sqrt(var + a.eps);
            // PyTorch updates running_var with the unbiased estimate.
            rm[c] = (T)((1 - a.momentum) * rm[c] + a.momentum * mean);
            rv[c] = (T)((1 - a.momentum) * rv[c] + a.momentum * var * M / (M - 1));
          } else {
            mean = rm[c];
            invstd = bn_eval_invstd(rv[c], a.eps);
          }
          sm[c] = (T)mean;
          si[c] = (T)invstd;
          bn_affine(pg[c], pb[c], mean, invstd, &scale[i], &shift[i]);
        }
        block_apply(px, pr, py, N, C, HW, c0, c1, scale, shift, (int)a.act);
      }
    });
  });
}
const bool batch_norm_forward_set = set_kernel(cpu_kernels().batch_norm_forward, &batch_norm_forward);

void batch_norm_backward(const Tensor &gy, const Tensor &x, const Tensor &y, const Tensor &gamma,
                                     const Tensor &save_mean, const Tensor &save_invstd, Tensor &gx, Tensor &ggamma,
                                     Tensor &gbeta, Tensor *gresidual, const BatchNormArgs &a) {
  int64_t N = x.dim(0), C = x.dim(1), HW = x.dim(2) * x.dim(3), M = N * HW;
  bool relu = a.act != BnAct::None;
  RX_DISPATCH_FLOAT(x.dtype(), "batchNorm2d_backward", [&] {
    const T *pgy = gy.data<T>(), *px = x.data<T>(), *py = y.data<T>(), *pg = gamma.data<T>();
    const T *sm = save_mean.data<T>(), *si = save_invstd.data<T>();
    T *pgx = gx.data<T>(), *pgg = ggamma.data<T>(), *pgb = gbeta.data<T>();
    T *pgr = gresidual ? gresidual->data<T>() : nullptr;
    parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; c++) {
        const T mean = sm[c], inv = si[c];
        // g = gy masked by the ReLU (y > 0); the residual's gradient is exactly g.
        double sg = 0, sgx = 0;
        chan_bwd_reduce(pgy, px, py, N, C, HW, c, mean, relu, &sg, &sgx);
        pgb[c] = (T)sg;
        pgg[c] = (T)(sgx * inv);
        T k = pg[c] * inv;
        T mg = (T)(sg / M), mgx = (T)(sgx * inv * inv / M);
        chan_bwd_apply(pgy, px, py, pgx, pgr, N, C, HW, c, k, mg, mgx, mean, relu, a.training);
      }
    });
  });
}
const bool batch_norm_backward_set = set_kernel(cpu_kernels().batch_norm_backward, &batch_norm_backward);

void max_pool2d_forward(const Tensor &x, Tensor &y, Tensor &indices, const Pool2dArgs &a) {
  int64_t NC = x.dim(0) * x.dim(1), H = x.dim(2), W = x.dim(3), P = y.dim(2), Q = y.dim(3);
  RX_DISPATCH_FLOAT(x.dtype(), "maxPool2d", [&] {
    const T *px = x.data<T>();
    T *py = y.data<T>();
    int32_t *pi = indices.data<int32_t>();
    parallel_for(0, NC, 1, [&](int64_t b, int64_t e) {
      for (int64_t nc = b; nc < e; nc++) {
        const T *plane = px + nc * H * W;
        for (int64_t p = 0; p < P; p++) {
          // Windows wholly inside the input (all but the border ones): no clamping, and the
          // first value seeds the maximum; then the same rule as below (larger, or NaN) as a
          // branch-free select (the branchy loop was 2.5% of a batch-1 resnext50 inference).
          const int64_t h0 = p * a.sh - a.ph;
          int64_t q_lo = Q, q_hi = Q;
          if (h0 >= 0 && h0 + a.kh <= H && a.sw > 0) {
            q_lo = std::min<int64_t>(Q, (a.pw + a.sw - 1) / a.sw);  // w0 >= 0
            const int64_t room = W - a.kw + a.pw;  // w0 + kw <= W  <=>  q * sw <= room
            q_hi = room < 0 ? q_lo : std::max<int64_t>(q_lo, std::min<int64_t>(Q, room / a.sw + 1));
          }
          for (int64_t q = q_lo; q < q_hi; q++) {
            const int64_t w0 = q * a.sw - a.pw;
            const T *win = plane + h0 * W + w0;
            T best = win[0];
            int32_t bi = (int32_t)(h0 * W + w0);
            for (int64_t i = 0; i < a.kh; i++)
              for (int64_t j = 0; j < a.kw; j++) {
                const T v = win[i * W + j];
                const bool take = v > best || v != v;
                best = take ? v : best;
                bi = take ? (int32_t)((h0 + i) * W + w0 + j) : bi;
              }
            py[(nc * P + p) * Q + q] = best;
            pi[(nc * P + p) * Q + q] = bi;
          }
          for (int64_t q = 0; q < Q; q++) {
            if (q == q_lo) q = q_hi;
            if (q >= Q) break;
            T best = -std::numeric_limits<T>::infinity();
            int32_t bi = -1;
            // Only the part of the window inside the input: a window of 1e9 with padding 5e8
            // over a 4x4 input visits 16 values, not 1e18.
            const int64_t h0 = p * a.sh - a.ph, w0 = q * a.sw - a.pw;
            for (int64_t h = std::max<int64_t>(h0, 0); h < std::min(h0 + a.kh, H); h++) {
              for (int64_t w = std::max<int64_t>(w0, 0); w < std::min(w0 + a.kw, W); w++) {
                T v = plane[h * W + w];
                if (v > best || bi < 0 || std::isnan(v)) {
                  best = v;
                  bi = (int32_t)(h * W + w);
                }
              }
            }
            py[(nc * P + p) * Q + q] = best;
            pi[(nc * P + p) * Q + q] = bi;
          }
        }
      }
    });
  });
}
const bool max_pool2d_forward_set = set_kernel(cpu_kernels().max_pool2d_forward, &max_pool2d_forward);

void max_pool2d_backward(const Tensor &gy, const Tensor &indices, Tensor &gx) {
  int64_t NC = gx.dim(0) * gx.dim(1), HW = gx.dim(2) * gx.dim(3), PQ = gy.dim(2) * gy.dim(3);
  RX_DISPATCH_FLOAT(gy.dtype(), "maxPool2d_backward", [&] {
    const T *g = gy.data<T>();
    const int32_t *pi = indices.data<int32_t>();
    T *o = gx.data<T>();
    parallel_for(0, NC, 1, [&](int64_t b, int64_t e) {
      for (int64_t nc = b; nc < e; nc++) {
        T *plane = o + nc * HW;
        std::fill(plane, plane + HW, T(0));
        for (int64_t i = 0; i < PQ; i++) {
          int32_t k = pi[nc * PQ + i];
          if (k >= 0 && k < HW) plane[k] += g[nc * PQ + i];  // indices are data: never trusted
        }
      }
    });
  });
}
const bool max_pool2d_backward_set = set_kernel(cpu_kernels().max_pool2d_backward, &max_pool2d_backward);

void global_avg_pool2d_forward(const Tensor &x, Tensor &y) {
  int64_t NC = x.dim(0) * x.dim(1), HW = x.dim(2) * x.dim(3);
  RX_DISPATCH_FLOAT(x.dtype(), "globalAvgPool2d", [&] {
    const T *px = x.data<T>();
    T *py = y.data<T>();
    parallel_for(0, NC, 64, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) {
        double s = 0;
        for (int64_t j = 0; j < HW; j++) s += px[i * HW + j];
        py[i] = (T)(s / HW);
      }
    });
  });
}
const bool global_avg_pool2d_forward_set = set_kernel(cpu_kernels().global_avg_pool2d_forward, &global_avg_pool2d_forward);

void global_avg_pool2d_backward(const Tensor &gy, Tensor &gx) {
  int64_t NC = gx.dim(0) * gx.dim(1), HW = gx.dim(2) * gx.dim(3);
  RX_DISPATCH_FLOAT(gy.dtype(), "globalAvgPool2d_backward", [&] {
    const T *g = gy.data<T>();
    T *o = gx.data<T>();
    parallel_for(0, NC, 64, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) {
        T v = g[i] / (T)HW;
        for (int64_t j = 0; j < HW; j++) o[i * HW + j] = v;
      }
    });
  });
}
const bool global_avg_pool2d_backward_set = set_kernel(cpu_kernels().global_avg_pool2d_backward, &global_avg_pool2d_backward);

void matmul(const Tensor &a, const Tensor &b, bool ta, bool tb, const Tensor *bias, Tensor &out) {
  int64_t M = out.dim(0), N = out.dim(1), K = ta ? a.dim(0) : a.dim(1);
  RX_DISPATCH_FLOAT(a.dtype(), "matmul", [&] {
    T *o = out.data<T>();
    T beta = 0;
    if (bias) {
      const T *pb = bias->data<T>();
      for (int64_t m = 0; m < M; m++) std::memcpy(o + m * N, pb, sizeof(T) * N);
      beta = 1;
    }
    gemm<T>(ta, tb, M, N, K, T(1), a.data<T>(), a.dim(1), b.data<T>(), b.dim(1), beta, o, N);
  });
}
const bool matmul_set = set_kernel(cpu_kernels().matmul, &matmul);

void cross_entropy_forward(const Tensor &logits, const Tensor &targets, double smoothing, Tensor &loss,
                                       Tensor &probs) {
  int64_t N = logits.dim(0), K = logits.dim(1);
  const int32_t *t = targets.data<int32_t>();
  for (int64_t i = 0; i < N; i++)
    if (t[i] < 0 || t[i] >= K)
      fail(ErrorCode::Arg, "crossEntropy", "targets[" + std::to_string(i) + "]",
           "a class index in [0, " + std::to_string(K - 1) + "]", std::to_string(t[i]));
  RX_DISPATCH_FLOAT(logits.dtype(), "crossEntropy", [&] {
    const T *pl = logits.data<T>();
    T *pp = probs.data<T>();
    std::vector<double> row_loss(N);
    parallel_for(0, N, 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) {
        const T *l = pl + i * K;
        double mx = l[0];
        for (int64_t j = 1; j < K; j++) mx = std::max(mx, (double)l[j]);
        double se = 0, sl = 0;
        for (int64_t j = 0; j < K; j++) {
          se += std::exp(l[j] - mx);
          sl += l[j] - mx;
        }
        double lse = std::log(se);
        for (int64_t j = 0; j < K; j++) pp[i * K + j] = (T)(std::exp(l[j] - mx - lse));
        // -log p_t = lse - (l_t - mx); mean over classes of -log p_j = lse - sl/K
        row_loss[i] = (1 - smoothing) * (lse - (l[t[i]] - mx)) + smoothing * (lse - sl / K);
      }
    });
    double s = 0;
    for (double v : row_loss) s += v;
    *loss.data<T>() = (T)(s / N);
  });
}
const bool cross_entropy_forward_set = set_kernel(cpu_kernels().cross_entropy_forward, &cross_entropy_forward);

void cross_entropy_backward(const Tensor &probs, const Tensor &targets, double smoothing,
                                        const Tensor &gloss, Tensor &glogits) {
  int64_t N = probs.dim(0), K = probs.dim(1);
  const int32_t *t = targets.data<int32_t>();
  RX_DISPATCH_FLOAT(probs.dtype(), "crossEntropy_backward", [&] {
    const T *p = probs.data<T>();
    T *g = glogits.data<T>();
    T scale = *gloss.data<T>() / (T)N, off = (T)(smoothing / K), on = (T)(1 - smoothing);
    parallel_for(0, N, 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++)
        for (int64_t j = 0; j < K; j++)
          g[i * K + j] = scale * (p[i * K + j] - off - (j == t[i] ? on : T(0)));
    });
  });
}
const bool cross_entropy_backward_set = set_kernel(cpu_kernels().cross_entropy_backward, &cross_entropy_backward);

void topk(const Tensor &x, int64_t k, Tensor &indices) {
  int64_t N = x.dim(0), K = x.dim(1);
  RX_DISPATCH_FLOAT(x.dtype(), "topk", [&] {
    const T *px = x.data<T>();
    int32_t *pi = indices.data<int32_t>();
    parallel_for(0, N, 16, [&](int64_t b, int64_t e) {
      std::vector<int32_t> order(K);
      for (int64_t i = b; i < e; i++) {
        const T *row = px + i * K;
        std::iota(order.begin(), order.end(), 0);
        // Descending by value, ties by lower index (stable, like argmax).
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t u, int32_t v) {
          return row[u] > row[v] || (row[u] == row[v] && u < v);
        });
        std::copy(order.begin(), order.begin() + k, pi + i * k);
      }
    });
  });
}
const bool topk_set = set_kernel(cpu_kernels().topk, &topk);

}  // namespace rx::cpu
