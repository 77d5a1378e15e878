// CUDA kernels for the network layers that are not cuDNN or cuBLAS calls: max pooling (int32
// argmax indices, flat h*W+w within each plane like the CPU), global average pooling, softmax
// cross-entropy with label smoothing (the CPU formula, row statistics in double), top-k, the SGD
// update (PyTorch's rule) and the batch-norm pieces cuDNN does not cover (eval mode with a fused
// epilogue, and a backward for when no cuDNN reserve space is at hand).
// Layout: 4-D tensors are NHWC, so the channel is the fastest index and consecutive threads
// touch consecutive channels (coalesced). 2-D tensors are row-major.
#include <climits>

#include "cuda_common.cuh"

namespace rx::cuda {

namespace {

// ---------------------------------------------------------------- pooling

template <typename T>
__global__ void max_pool2d_forward_kernel(const T *x, T *y, int32_t *idx, int64_t N, int64_t C, int64_t H, int64_t W,
                                          int64_t P, int64_t Q, Pool2dArgs a) {
  RX_GRID_STRIDE(i, N * P * Q * C) {
    int64_t c = i % C, r = i / C;
    int64_t q = r % Q;
    r /= Q;
    int64_t p = r % P, n = r / P;
    const T *plane = x + n * H * W * C + c;
    acc_t<T> best = 0;
    T best_raw = from_acc<T>(0.f);
    int32_t bi = -1;
    // Only the part of the window inside the input (a huge padded window must not loop).
    const int64_t h0 = p * a.sh - a.ph, w0 = q * a.sw - a.pw;
    const int64_t h1 = h0 + a.kh < H ? h0 + a.kh : H, w1 = w0 + a.kw < W ? w0 + a.kw : W;
    for (int64_t h = h0 > 0 ? h0 : 0; h < h1; h++) {
      for (int64_t w = w0 > 0 ? w0 : 0; w < w1; w++) {
        T raw = plane[(h * W + w) * C];
        acc_t<T> v = to_acc(raw);
        // Same rule as the CPU: first maximum wins, NaN propagates.
        if (bi < 0 || v > best || isnan(v)) {
          best = v;
          best_raw = raw;
          bi = (int32_t)(h * W + w);
        }
      }
    }
    y[i] = best_raw;
    idx[i] = bi;
  }
}

template <typename T, typename A>
__global__ void max_pool2d_scatter_kernel(const T *gy, const int32_t *idx, A *gx, int64_t N, int64_t C, int64_t HW,
                                          int64_t PQ) {
  RX_GRID_STRIDE(i, N * PQ * C) {
    int32_t k = idx[i];
    if (k < 0 || k >= HW) continue;  // indices are data: never trusted
    int64_t c = i % C, n = i / (PQ * C);
    // Overlapping windows (3x3 stride 2) can pick the same input: atomics make the sum exact up
    // to the order of at most kh*kw additions.
    atomicAdd(gx + (n * HW + k) * C + c, (A)to_acc(gy[i]));
  }
}

template <typename T>
__global__ void global_avg_pool2d_forward_kernel(const T *x, T *y, int64_t N, int64_t C, int64_t HW) {
  RX_GRID_STRIDE(i, N * C) {
    int64_t c = i % C, n = i / C;
    const T *p = x + n * HW * C + c;
    acc_t<T> s = 0;
    for (int64_t j = 0; j < HW; j++) s += to_acc(p[j * C]);
    y[i] = from_acc_d<T>(s / (acc_t<T>)HW);
  }
}

template <typename T>
__global__ void global_avg_pool2d_backward_kernel(const T *gy, T *gx, int64_t N, int64_t C, int64_t HW) {
  RX_GRID_STRIDE(i, N * HW * C) {
    int64_t c = i % C, n = i / (HW * C);
    gx[i] = from_acc_d<T>(to_acc(gy[n * C + c]) / (acc_t<T>)HW);
  }
}

// ---------------------------------------------------------------- cross-entropy

// One block per row. loss_i = (1-eps)(lse - (l_t - mx)) + eps (lse - sum_j (l_j - mx)/K).
template <typename T>
__global__ void cross_entropy_rows_kernel(const T *logits, const int32_t *targets, double smoothing, T *probs,
                                          double *row_loss, int32_t *bad, int64_t N, int64_t K) {
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const T *l = logits + i * K;
    int32_t t = targets[i];
    double mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < K; j += blockDim.x) mx = fmax(mx, (double)to_acc(l[j]));
    mx = block_max<double>(mx, -INFINITY);
    double se = 0, sl = 0;
    for (int64_t j = threadIdx.x; j < K; j += blockDim.x) {
      double v = (double)to_acc(l[j]) - mx;
      se += exp(v);
      sl += v;
    }
    se = block_sum(se);
    sl = block_sum(sl);
    double lse = log(se);
    for (int64_t j = threadIdx.x; j < K; j += blockDim.x)
      probs[i * K + j] = from_acc_d<T>(exp((double)to_acc(l[j]) - mx - lse));
    if (threadIdx.x == 0) {
      if (t < 0 || t >= K) {
        atomicMin(bad, (int32_t)(i + 1));
        row_loss[i] = 0;
      } else {
        row_loss[i] = (1 - smoothing) * (lse - ((double)to_acc(l[t]) - mx)) + smoothing * (lse - sl / (double)K);
      }
    }
  }
}

// Single block: the mean of the row losses, in a fixed order (deterministic).
template <typename T>
__global__ void cross_entropy_mean_kernel(const double *row_loss, T *loss, int64_t N) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) s += row_loss[i];
  s = block_sum(s);
  if (threadIdx.x == 0) loss[0] = from_acc_d<T>(s / (double)N);
}

template <typename T>
__global__ void cross_entropy_backward_kernel(const T *probs, const int32_t *targets, double smoothing, const T *gloss,
                                              T *g, int64_t N, int64_t K) {
  using A = acc_t<T>;
  A scale = to_acc(gloss[0]) / (A)N, off = (A)(smoothing / K), on = (A)(1 - smoothing);
  RX_GRID_STRIDE(e, N * K) {
    int64_t i = e / K, j = e % K;
    g[e] = from_acc_d<T>(scale * (to_acc(probs[e]) - off - (j == targets[i] ? on : A(0))));
  }
}

// ---------------------------------------------------------------- top-k

// One thread per row: k selections, each the best element ordered after the previous pick
// (descending value, ties by lower index, like the CPU's partial_sort). k is small (1 or 5).
template <typename T>
__global__ void topk_kernel(const T *x, int32_t *out, int64_t N, int64_t K, int64_t k) {
  RX_GRID_STRIDE(i, N) {
    const T *row = x + i * K;
    acc_t<T> pv = 0;
    int64_t pj = -1;
    for (int64_t r = 0; r < k; r++) {
      int64_t bj = -1;
      acc_t<T> bv = 0;
      for (int64_t j = 0; j < K; j++) {
        acc_t<T> v = to_acc(row[j]);
        bool after = pj < 0 || v < pv || (v == pv && j > pj);
        if (!after) continue;
        if (bj < 0 || v > bv) {
          bv = v;
          bj = j;
        }
      }
      if (bj < 0) bj = 0;  // only NaN rows get here
      out[i * k + r] = (int32_t)bj;
      pv = bv;
      pj = bj;
    }
  }
}

// ---------------------------------------------------------------- SGD

template <typename T>
__global__ void sgd_step_kernel(T *p, const T *g, T *m, int64_t n, acc_t<T> lr, acc_t<T> wd, acc_t<T> mom,
                                acc_t<T> damp, bool nesterov, bool first) {
  using A = acc_t<T>;
  RX_GRID_STRIDE(i, n) {
    A pi = to_acc(p[i]);
    A d = to_acc(g[i]) + wd * pi;
    if (m) {
      A mi = first ? d : mom * to_acc(m[i]) + damp * d;
      m[i] = from_acc_d<T>(mi);
      d = nesterov ? d + mom * mi : mi;
    }
    p[i] = from_acc_d<T>(pi - lr * d);
  }
}

// ---------------------------------------------------------------- batch norm helpers

__global__ void bn_eval_stats_kernel(const float *mean, const float *var, double eps, float *save_mean,
                                     float *save_invstd, int64_t C) {
  RX_GRID_STRIDE(c, C) {
    save_mean[c] = mean[c];
    save_invstd[c] = (float)(1.0 / sqrt((double)var[c] + eps));
  }
}

template <typename T>
__global__ void bn_eval_apply_kernel(const T *x, const T *res, T *y, const float *gamma, const float *beta,
                                     const float *mean, const float *invstd, int act, int64_t rows, int64_t C) {
  RX_GRID_STRIDE(i, rows * C) {
    int64_t c = i % C;
    float v = (to_acc(x[i]) - mean[c]) * invstd[c] * gamma[c] + beta[c];
    if (res) v += to_acc(res[i]);
    if (act != (int)BnAct::None) v = v > 0.f ? v : 0.f;
    y[i] = from_acc<T>(v);
  }
}

// Per-channel sums over the rows of an NHWC buffer: a 32-channel x 8-row tile per block, each
// thread striding over a slice of rows; partial sums meet in shared memory, then one atomic per
// channel and block.
template <typename T>
__global__ void bn_backward_reduce_kernel(const T *gy, const T *x, const T *y, const float *mean, int act,
                                          int64_t rows, int64_t C, float *sums) {
  __shared__ float s1[8][33], s2[8][33];
  int tx = threadIdx.x, ty = threadIdx.y;
  int64_t c = (int64_t)blockIdx.x * 32 + tx;
  float a1 = 0, a2 = 0;
  if (c < C) {
    float mu = mean[c];
    for (int64_t r = (int64_t)blockIdx.y * 8 + ty; r < rows; r += (int64_t)gridDim.y * 8) {
      int64_t i = r * C + c;
      float g = to_acc(gy[i]);
      if (act != (int)BnAct::None && !(to_acc(y[i]) > 0.f)) g = 0.f;
      a1 += g;
      a2 += g * (to_acc(x[i]) - mu);
    }
  }
  s1[ty][tx] = a1;
  s2[ty][tx] = a2;
  __syncthreads();
  if (ty == 0 && c < C) {
    for (int k = 1; k < 8; k++) {
      a1 += s1[k][tx];
      a2 += s2[k][tx];
    }
    atomicAdd(sums + c, a1);
    atomicAdd(sums + C + c, a2);
  }
}

template <typename T>
__global__ void bn_backward_apply_kernel(const T *gy, const T *x, const T *y, const float *gamma, const float *mean,
                                         const float *invstd, bool training, int act, int64_t rows, int64_t C,
                                         const float *sums, T *gx, T *gres) {
  RX_GRID_STRIDE(i, rows * C) {
    int64_t c = i % C;
    float g = to_acc(gy[i]);
    if (act != (int)BnAct::None && !(to_acc(y[i]) > 0.f)) g = 0.f;
    if (gres) gres[i] = from_acc<T>(g);
    float inv = invstd[c], k = gamma[c] * inv;
    float v;
    if (training) {
      float M = (float)rows, mg = sums[c] / M, mgx = sums[C + c] * inv * inv / M;
      v = k * (g - mg - (to_acc(x[i]) - mean[c]) * mgx);
    } else {
      v = k * g;
    }
    gx[i] = from_acc<T>(v);
  }
}

// Training statistics without cuDNN (the fallback when its fused call refuses a shape, or
// RESNEXT_CUDA_BN_PERSISTENT=0): two passes over the NHWC rows with the same 32x8 tiling as the
// backward reduction, first sum(x), then sum((x - mean)^2), so the variance does not suffer
// from cancellation.
template <typename T>
__global__ void bn_train_reduce_kernel(const T *x, const float *mean, int64_t rows, int64_t C, float *acc) {
  __shared__ float s1[8][33];
  int tx = threadIdx.x, ty = threadIdx.y;
  int64_t c = (int64_t)blockIdx.x * 32 + tx;
  float a = 0;
  if (c < C) {
    float mu = mean ? mean[c] : 0.f;
    for (int64_t r = (int64_t)blockIdx.y * 8 + ty; r < rows; r += (int64_t)gridDim.y * 8) {
      float v = to_acc(x[r * C + c]);
      a += mean ? (v - mu) * (v - mu) : v;
    }
  }
  s1[ty][tx] = a;
  __syncthreads();
  if (ty == 0 && c < C) {
    for (int k = 1; k < 8; k++) a += s1[k][tx];
    atomicAdd(acc + c, a);
  }
}

__global__ void bn_train_mean_kernel(const float *sum, float *mean, int64_t rows, int64_t C) {
  RX_GRID_STRIDE(c, C) { mean[c] = rows ? sum[c] / (float)rows : 0.f; }
}

// save_mean/save_invstd from the batch; running statistics with PyTorch's momentum rule and the
// unbiased variance.
__global__ void bn_train_finish_kernel(const float *mean, const float *sq, double momentum, double eps, int64_t rows,
                                       int64_t C, float *running_mean, float *running_var, float *save_mean,
                                       float *save_invstd) {
  RX_GRID_STRIDE(c, C) {
    double var = rows ? (double)sq[c] / (double)rows : 0.0;
    double unbiased = rows > 1 ? (double)sq[c] / (double)(rows - 1) : var;
    save_mean[c] = mean[c];
    save_invstd[c] = (float)(1.0 / sqrt(var + eps));
    running_mean[c] = (float)((1 - momentum) * running_mean[c] + momentum * mean[c]);
    running_var[c] = (float)((1 - momentum) * running_var[c] + momentum * unbiased);
  }
}

__global__ void bn_backward_params_kernel(const float *sums, const float *invstd, float *ggamma, float *gbeta,
                                          int64_t C) {
  RX_GRID_STRIDE(c, C) {
    gbeta[c] = sums[c];
    ggamma[c] = sums[C + c] * invstd[c];
  }
}

}  // namespace

// ---------------------------------------------------------------- launchers

void launch_max_pool2d_forward(DType dt, const void *x, void *y, int32_t *idx, int64_t N, int64_t C, int64_t H,
                               int64_t W, int64_t P, int64_t Q, const Pool2dArgs &a, cudaStream_t s) {
  int64_t n = N * P * Q * C;
  RX_CUDA_DISPATCH_FLOAT(dt, "maxPool2d", [&] {
    max_pool2d_forward_kernel<T><<<grid_for(n), kThreads, 0, s>>>((const T *)x, (T *)y, idx, N, C, H, W, P, Q, a);
  });
  check_launch("maxPool2d");
}

void launch_max_pool2d_backward(DType dt, const void *gy, const int32_t *idx, void *gx, void *acc_f32, int64_t N,
                                int64_t C, int64_t HW, int64_t PQ, cudaStream_t s) {
  int64_t n = N * PQ * C, nx = N * HW * C;
  switch (dt) {
    case DType::F32:
      check_cuda(cudaMemsetAsync(gx, 0, nx * sizeof(float), s), "maxPool2d_backward");
      max_pool2d_scatter_kernel<float, float><<<grid_for(n), kThreads, 0, s>>>((const float *)gy, idx, (float *)gx, N, C,
                                                                              HW, PQ);
      break;
    case DType::F64:
      check_cuda(cudaMemsetAsync(gx, 0, nx * sizeof(double), s), "maxPool2d_backward");
      max_pool2d_scatter_kernel<double, double><<<grid_for(n), kThreads, 0, s>>>((const double *)gy, idx, (double *)gx,
                                                                                N, C, HW, PQ);
      break;
    case DType::BF16:
      // Accumulate in float, round once.
      check_cuda(cudaMemsetAsync(acc_f32, 0, nx * sizeof(float), s), "maxPool2d_backward");
      max_pool2d_scatter_kernel<bf16, float><<<grid_for(n), kThreads, 0, s>>>((const bf16 *)gy, idx, (float *)acc_f32,
                                                                             N, C, HW, PQ);
      check_launch("maxPool2d_backward");
      launch_cast(acc_f32, DType::F32, gx, DType::BF16, nx, s);
      break;
    default: fail(ErrorCode::DType, "maxPool2d_backward", "grad_output", "float32, bfloat16 or float64", dtype_name(dt));
  }
  check_launch("maxPool2d_backward");
}

void launch_global_avg_pool2d_forward(DType dt, const void *x, void *y, int64_t N, int64_t C, int64_t HW,
                                      cudaStream_t s) {
  RX_CUDA_DISPATCH_FLOAT(dt, "globalAvgPool2d", [&] {
    global_avg_pool2d_forward_kernel<T><<<grid_for(N * C), kThreads, 0, s>>>((const T *)x, (T *)y, N, C, HW);
  });
  check_launch("globalAvgPool2d");
}

void launch_global_avg_pool2d_backward(DType dt, const void *gy, void *gx, int64_t N, int64_t C, int64_t HW,
                                       cudaStream_t s) {
  RX_CUDA_DISPATCH_FLOAT(dt, "globalAvgPool2d_backward", [&] {
    global_avg_pool2d_backward_kernel<T><<<grid_for(N * HW * C), kThreads, 0, s>>>((const T *)gy, (T *)gx, N, C, HW);
  });
  check_launch("globalAvgPool2d_backward");
}

void launch_cross_entropy_forward(DType dt, const void *logits, const int32_t *targets, double smoothing, void *loss,
                                  void *probs, int64_t N, int64_t K, void *row_loss_f64, int32_t *bad_target,
                                  cudaStream_t s) {
  // 0x7f7f7f7f marks "no bad target"; a bad row stores its index + 1 (atomicMin keeps the first).
  check_cuda(cudaMemsetAsync(bad_target, 0x7f, sizeof(int32_t), s), "crossEntropy");
  RX_CUDA_DISPATCH_FLOAT(dt, "crossEntropy", [&] {
    cross_entropy_rows_kernel<T><<<(unsigned)std::min<int64_t>(N, 65536), kThreads, 0, s>>>(
        (const T *)logits, targets, smoothing, (T *)probs, (double *)row_loss_f64, bad_target, N, K);
    cross_entropy_mean_kernel<T><<<1, 1024, 0, s>>>((const double *)row_loss_f64, (T *)loss, N);
  });
  check_launch("crossEntropy");
}

void launch_cross_entropy_backward(DType dt, const void *probs, const int32_t *targets, double smoothing,
                                   const void *gloss, void *glogits, int64_t N, int64_t K, cudaStream_t s) {
  RX_CUDA_DISPATCH_FLOAT(dt, "crossEntropy_backward", [&] {
    cross_entropy_backward_kernel<T><<<grid_for(N * K), kThreads, 0, s>>>((const T *)probs, targets, smoothing,
                                                                         (const T *)gloss, (T *)glogits, N, K);
  });
  check_launch("crossEntropy_backward");
}

void launch_topk(DType dt, const void *x, int32_t *idx, int64_t N, int64_t K, int64_t k, cudaStream_t s) {
  RX_CUDA_DISPATCH_FLOAT(dt, "topk",
                         [&] { topk_kernel<T><<<grid_for(N, 128), 128, 0, s>>>((const T *)x, idx, N, K, k); });
  check_launch("topk");
}

void launch_sgd_step(DType dt, void *p, const void *g, void *m, int64_t n, const SgdArgs &a, cudaStream_t s) {
  RX_CUDA_DISPATCH_FLOAT(dt, "sgdStep", [&] {
    using A = acc_t<T>;
    sgd_step_kernel<T><<<grid_for(n), kThreads, 0, s>>>((T *)p, (const T *)g, (T *)m, n, (A)a.lr, (A)a.weight_decay,
                                                        (A)a.momentum, (A)(1 - a.dampening), a.nesterov, a.first_step);
  });
  check_launch("sgdStep");
}

void launch_bn_eval_forward(DType dt, const void *x, const void *residual, void *y, const float *gamma,
                            const float *beta, const float *mean, const float *var, double eps, BnAct act,
                            int64_t rows, int64_t C, float *save_mean, float *save_invstd, cudaStream_t s) {
  bn_eval_stats_kernel<<<grid_for(C), kThreads, 0, s>>>(mean, var, eps, save_mean, save_invstd, C);
  check_launch("batchNorm2d");
  if (!y || rows * C == 0) return;
  RX_CUDA_DISPATCH_FLOAT(dt, "batchNorm2d", [&] {
    bn_eval_apply_kernel<T><<<grid_for(rows * C), kThreads, 0, s>>>((const T *)x, (const T *)residual, (T *)y, gamma,
                                                                    beta, save_mean, save_invstd, (int)act, rows, C);
  });
  check_launch("batchNorm2d");
}

void launch_bn_train_forward(DType dt, const void *x, const void *residual, void *y, const float *gamma,
                             const float *beta, float *running_mean, float *running_var, double momentum, double eps,
                             BnAct act, int64_t rows, int64_t C, float *save_mean, float *save_invstd, float *scratch,
                             cudaStream_t s) {
  // scratch: 2*C floats (sum, then sum of squared deviations). The op layer refuses training
  // batches with at most one value per channel and never calls kernels on empty tensors.
  if (C == 0 || rows == 0) return;
  check_cuda(cudaMemsetAsync(scratch, 0, 2 * C * sizeof(float), s), "batchNorm2d");
  RX_CUDA_DISPATCH_FLOAT(dt, "batchNorm2d", [&] {
    dim3 block(32, 8);
    int64_t row_blocks = std::min<int64_t>(std::max<int64_t>(1, rows / 64), 256);
    dim3 grid((unsigned)((C + 31) / 32), (unsigned)row_blocks);
    bn_train_reduce_kernel<T><<<grid, block, 0, s>>>((const T *)x, nullptr, rows, C, scratch);
    bn_train_mean_kernel<<<grid_for(C), kThreads, 0, s>>>(scratch, save_mean, rows, C);
    bn_train_reduce_kernel<T><<<grid, block, 0, s>>>((const T *)x, save_mean, rows, C, scratch + C);
    bn_train_finish_kernel<<<grid_for(C), kThreads, 0, s>>>(save_mean, scratch + C, momentum, eps, rows, C,
                                                            running_mean, running_var, save_mean, save_invstd);
    if (rows * C > 0)
      bn_eval_apply_kernel<T><<<grid_for(rows * C), kThreads, 0, s>>>((const T *)x, (const T *)residual, (T *)y, gamma,
                                                                      beta, save_mean, save_invstd, (int)act, rows, C);
  });
  check_launch("batchNorm2d");
}

void launch_bn_backward(DType dt, const void *gy, const void *x, const void *y, const float *gamma,
                        const float *mean, const float *invstd, bool training, BnAct act, int64_t rows, int64_t C,
                        void *gx, void *gres, float *ggamma, float *gbeta, float *sums, cudaStream_t s) {
  check_cuda(cudaMemsetAsync(sums, 0, 2 * C * sizeof(float), s), "batchNorm2d_backward");
  RX_CUDA_DISPATCH_FLOAT(dt, "batchNorm2d_backward", [&] {
    dim3 block(32, 8);
    // Enough row slices to fill the GPU, few enough that the atomics stay cheap.
    int64_t row_blocks = std::min<int64_t>(std::max<int64_t>(1, rows / 64), 256);
    dim3 grid((unsigned)((C + 31) / 32), (unsigned)row_blocks);
    bn_backward_reduce_kernel<T><<<grid, block, 0, s>>>((const T *)gy, (const T *)x, (const T *)y, mean, (int)act,
                                                        rows, C, sums);
    bn_backward_params_kernel<<<grid_for(C), kThreads, 0, s>>>(sums, invstd, ggamma, gbeta, C);
    if (rows * C > 0)
      bn_backward_apply_kernel<T><<<grid_for(rows * C), kThreads, 0, s>>>((const T *)gy, (const T *)x, (const T *)y,
                                                                          gamma, mean, invstd, training, (int)act,
                                                                          rows, C, sums, (T *)gx, (T *)gres);
  });
  check_launch("batchNorm2d_backward");
}

}  // namespace rx::cuda
