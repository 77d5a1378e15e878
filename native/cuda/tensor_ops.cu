// CUDA kernels for data movement, casts, random numbers, elementwise ops and sums.
// Layout: flat kernels see raw element order (operands share one layout); strided kernels walk
// the output in its physical order and read each input through per-axis strides (a Walk), which
// covers NCHW<->NHWC conversion, permute, expand and broadcasting. Grid-stride loops, 64-bit
// indices. The random generator is the CPU's counter-based one (cpu/tensor_ops.cc), so a seed
// gives the same numbers on both devices.
#include <algorithm>
#include <type_traits>

#include "cuda_common.cuh"

namespace rx::cuda {

namespace {

// ---------------------------------------------------------------- fill, copy, cast

template <typename T>
__global__ void fill_kernel(T *p, int64_t n, T v) {
  RX_GRID_STRIDE(i, n) p[i] = v;
}

template <typename E>
__global__ void strided_copy_kernel(const E *src, E *dst, Walk w, int64_t n) {
  RX_GRID_STRIDE(i, n) {
    int64_t rem = i, so = 0, d_off = 0;
    for (int d = w.nd - 1; d >= 0; d--) {
      int64_t c = rem % w.size[d];
      rem /= w.size[d];
      d_off += c * w.stride[0][d];
      so += c * w.stride[1][d];
    }
    dst[d_off] = src[so];
  }
}

// Casts go through double (bfloat16 through float), like the CPU backend.
__device__ __forceinline__ double load_d(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ double load_d(const double *p, int64_t i) { return p[i]; }
__device__ __forceinline__ double load_d(const int32_t *p, int64_t i) { return p[i]; }
__device__ __forceinline__ double load_d(const bf16 *p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store_d(float *p, int64_t i, double v) { p[i] = (float)v; }
__device__ __forceinline__ void store_d(double *p, int64_t i, double v) { p[i] = v; }
__device__ __forceinline__ void store_d(int32_t *p, int64_t i, double v) { p[i] = (int32_t)v; }
__device__ __forceinline__ void store_d(bf16 *p, int64_t i, double v) { p[i] = __float2bfloat16_rn((float)v); }

template <typename S, typename D>
__global__ void cast_kernel(const S *src, D *dst, int64_t n) {
  RX_GRID_STRIDE(i, n) store_d(dst, i, load_d(src, i));
}

// ---------------------------------------------------------------- random

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
// Uniform in (0, 1]: 53 random bits from (seed, counter, stream); bit-identical to the CPU.
__device__ __forceinline__ double uniform01(uint64_t seed, uint64_t counter, uint64_t stream) {
  uint64_t z = mix64(mix64(seed * 0x9E3779B97F4A7C15ULL + stream) ^ (counter * 0xD1B54A32D192ED03ULL));
  return ((z >> 11) + 1) * (1.0 / 9007199254740992.0);
}

template <typename T>
__global__ void random_kernel(T *p, int64_t n, bool normal, double a, double b, uint64_t seed, uint64_t offset) {
  RX_GRID_STRIDE(i, n) {
    double v;
    if (normal) {
      // Box-Muller on two independent streams of the same counter (as on the CPU), in double.
      double u1 = uniform01(seed, offset + i, 1), u2 = uniform01(seed, offset + i, 2);
      v = a + b * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
    } else {
      v = a + (b - a) * (1.0 - uniform01(seed, offset + i, 0));
    }
    p[i] = from_acc_d<T>(v);
  }
}

// ---------------------------------------------------------------- elementwise

template <typename A>
__device__ __forceinline__ A apply_binary(int op, A u, A v) {
  switch (op) {
    case (int)BinaryOp::Add: return u + v;
    case (int)BinaryOp::Sub: return u - v;
    case (int)BinaryOp::Mul: return u * v;
    case (int)BinaryOp::Div: return u / v;
    case (int)BinaryOp::Max: return u > v ? u : v;
    default: return u > v ? A(1) : A(0);  // Gt
  }
}

template <typename T, int OP>
__global__ void binary_flat_kernel(const T *a, const T *b, T *out, int64_t n) {
  RX_GRID_STRIDE(i, n) out[i] = from_acc<T>(apply_binary(OP, to_acc(a[i]), to_acc(b[i])));
}

template <typename T, int OP>
__global__ void binary_walk_kernel(const T *a, const T *b, T *out, Walk w, int64_t n) {
  RX_GRID_STRIDE(i, n) {
    int64_t rem = i, oo = 0, oa = 0, ob = 0;
    for (int d = w.nd - 1; d >= 0; d--) {
      int64_t c = rem % w.size[d];
      rem /= w.size[d];
      oo += c * w.stride[0][d];
      oa += c * w.stride[1][d];
      ob += c * w.stride[2][d];
    }
    out[oo] = from_acc<T>(apply_binary(OP, to_acc(a[oa]), to_acc(b[ob])));
  }
}

template <typename A>
__device__ __forceinline__ A apply_scalar(int op, A v, A c) {
  switch (op) {
    case (int)ScalarOp::Add: return v + c;
    case (int)ScalarOp::Mul: return v * c;
    case (int)ScalarOp::Pow: return pow(v, c);
    case (int)ScalarOp::RSub: return c - v;
    default: return c / v;  // RDiv
  }
}

template <typename T>
__global__ void scalar_kernel(int op, const T *x, acc_t<T> c, T *out, int64_t n) {
  RX_GRID_STRIDE(i, n) out[i] = from_acc<T>(apply_scalar(op, to_acc(x[i]), c));
}

template <typename A>
__device__ __forceinline__ A apply_unary(int op, A v) {
  switch (op) {
    case (int)UnaryOp::Neg: return -v;
    case (int)UnaryOp::Exp: return exp(v);
    case (int)UnaryOp::Log: return log(v);
    case (int)UnaryOp::Sqrt: return sqrt(v);
    case (int)UnaryOp::Abs: return fabs(v);
    default: return A((v > A(0)) - (v < A(0)));  // Sign
  }
}

template <typename T>
__global__ void unary_kernel(int op, const T *x, T *out, int64_t n) {
  RX_GRID_STRIDE(i, n) out[i] = from_acc<T>(apply_unary(op, to_acc(x[i])));
}

template <typename T>
__global__ void relu_forward_kernel(const T *x, T *y, int64_t n) {
  RX_GRID_STRIDE(i, n) {
    acc_t<T> v = to_acc(x[i]);
    y[i] = from_acc<T>(v > acc_t<T>(0) ? v : acc_t<T>(0));
  }
}

template <typename T>
__global__ void relu_backward_kernel(const T *gy, const T *y, T *gx, int64_t n) {
  RX_GRID_STRIDE(i, n) gx[i] = to_acc(y[i]) > acc_t<T>(0) ? gy[i] : from_acc<T>(0.f);
}

// ---------------------------------------------------------------- sums

__device__ __forceinline__ int64_t kept_offset(const ReduceSpec &r, int64_t o) {
  int64_t off = 0;
  for (int d = r.nk - 1; d >= 0; d--) {
    off += (o % r.kept_size[d]) * r.kept_stride[d];
    o /= r.kept_size[d];
  }
  return off;
}

__device__ __forceinline__ int64_t red_offset(const ReduceSpec &r, int64_t j) {
  int64_t off = 0;
  for (int d = r.nr - 1; d >= 0; d--) {
    off += (j % r.red_size[d]) * r.red_stride[d];
    j /= r.red_size[d];
  }
  return off;
}

// Few elements per output: one thread per output.
template <typename T>
__global__ void sum_thread_kernel(const T *x, T *out, ReduceSpec r) {
  RX_GRID_STRIDE(o, r.nout) {
    int64_t base = kept_offset(r, o);
    acc_t<T> s = 0;
    for (int64_t j = 0; j < r.nred; j++) s += to_acc(x[base + red_offset(r, j)]);
    out[o] = from_acc_d<T>(s);
  }
}

// Many elements per output: one block per output, tree reduction (more accurate than a serial sum).
template <typename T>
__global__ void sum_block_kernel(const T *x, T *out, ReduceSpec r) {
  for (int64_t o = blockIdx.x; o < r.nout; o += gridDim.x) {
    int64_t base = kept_offset(r, o);
    acc_t<T> s = 0;
    for (int64_t j = threadIdx.x; j < r.nred; j += blockDim.x) s += to_acc(x[base + red_offset(r, j)]);
    s = block_sum(s);
    if (threadIdx.x == 0) out[o] = from_acc_d<T>(s);
  }
}

template <typename T>
__global__ void add_channel_bias_kernel(T *y, const T *bias, int64_t rows, int64_t C) {
  RX_GRID_STRIDE(i, rows * C) y[i] = from_acc<T>(to_acc(y[i]) + to_acc(bias[i % C]));
}

template <typename T>
__global__ void fill_rows_kernel(T *out, const T *bias, int64_t M, int64_t N) {
  RX_GRID_STRIDE(i, M * N) out[i] = bias[i % N];
}

template <typename T>
T host_value(double v);
template <>
float host_value<float>(double v) { return (float)v; }
template <>
double host_value<double>(double v) { return v; }
template <>
int32_t host_value<int32_t>(double v) { return (int32_t)v; }
template <>
bf16 host_value<bf16>(double v) { return __float2bfloat16_rn((float)v); }

}  // namespace

// ---------------------------------------------------------------- launchers

void launch_fill(void *p, int64_t n, DType dt, double value, cudaStream_t s) {
  if (n == 0) return;
  switch (dt) {
    case DType::F32: fill_kernel<<<grid_for(n), kThreads, 0, s>>>((float *)p, n, host_value<float>(value)); break;
    case DType::F64: fill_kernel<<<grid_for(n), kThreads, 0, s>>>((double *)p, n, host_value<double>(value)); break;
    case DType::I32: fill_kernel<<<grid_for(n), kThreads, 0, s>>>((int32_t *)p, n, host_value<int32_t>(value)); break;
    case DType::BF16: fill_kernel<<<grid_for(n), kThreads, 0, s>>>((bf16 *)p, n, host_value<bf16>(value)); break;
  }
  check_launch("fill");
}

void launch_strided_copy(const void *src, void *dst, const Walk &w, size_t elem_size, cudaStream_t s) {
  int64_t n = 1;
  for (int d = 0; d < w.nd; d++) n *= w.size[d];
  if (n == 0) return;
  switch (elem_size) {
    case 1: strided_copy_kernel<<<grid_for(n), kThreads, 0, s>>>((const uint8_t *)src, (uint8_t *)dst, w, n); break;
    case 2: strided_copy_kernel<<<grid_for(n), kThreads, 0, s>>>((const uint16_t *)src, (uint16_t *)dst, w, n); break;
    case 4: strided_copy_kernel<<<grid_for(n), kThreads, 0, s>>>((const uint32_t *)src, (uint32_t *)dst, w, n); break;
    default: strided_copy_kernel<<<grid_for(n), kThreads, 0, s>>>((const uint64_t *)src, (uint64_t *)dst, w, n); break;
  }
  check_launch("copy");
}

namespace {
template <typename S>
void cast_from(const S *src, void *dst, DType ddt, int64_t n, cudaStream_t s) {
  switch (ddt) {
    case DType::F32: cast_kernel<<<grid_for(n), kThreads, 0, s>>>(src, (float *)dst, n); break;
    case DType::F64: cast_kernel<<<grid_for(n), kThreads, 0, s>>>(src, (double *)dst, n); break;
    case DType::I32: cast_kernel<<<grid_for(n), kThreads, 0, s>>>(src, (int32_t *)dst, n); break;
    case DType::BF16: cast_kernel<<<grid_for(n), kThreads, 0, s>>>(src, (bf16 *)dst, n); break;
  }
}
}  // namespace

void launch_cast(const void *src, DType sdt, void *dst, DType ddt, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  if (sdt == ddt) {
    if (src != dst) check_cuda(cudaMemcpyAsync(dst, src, n * dtype_size(sdt), cudaMemcpyDeviceToDevice, s), "cast");
    return;
  }
  switch (sdt) {
    case DType::F32: cast_from((const float *)src, dst, ddt, n, s); break;
    case DType::F64: cast_from((const double *)src, dst, ddt, n, s); break;
    case DType::I32: cast_from((const int32_t *)src, dst, ddt, n, s); break;
    case DType::BF16: cast_from((const bf16 *)src, dst, ddt, n, s); break;
  }
  check_launch("cast");
}

void launch_random(void *p, DType dt, int64_t n, bool normal, double a, double b, uint64_t seed, uint64_t offset,
                   cudaStream_t s) {
  if (n == 0) return;
  RX_CUDA_DISPATCH_FLOAT(dt, normal ? "randn" : "rand", [&] {
    random_kernel<T><<<grid_for(n), kThreads, 0, s>>>((T *)p, n, normal, a, b, seed, offset);
  });
  check_launch(normal ? "randn" : "rand");
}

void launch_binary(BinaryOp op, DType dt, const void *a, const void *b, void *out, const Walk &w, bool flat,
                   cudaStream_t s) {
  RX_CUDA_DISPATCH_FLOAT(dt, "binary", [&] {
    const T *pa = (const T *)a, *pb = (const T *)b;
    T *po = (T *)out;
    int64_t n = 1;
    for (int d = 0; d < w.nd; d++) n *= w.size[d];
    auto run = [&](auto op_c) {
      constexpr int OP = decltype(op_c)::value;
      if (flat) {
        binary_flat_kernel<T, OP><<<grid_for(n), kThreads, 0, s>>>(pa, pb, po, n);
      } else {
        binary_walk_kernel<T, OP><<<grid_for(n), kThreads, 0, s>>>(pa, pb, po, w, n);
      }
    };
    switch (op) {
      case BinaryOp::Add: run(std::integral_constant<int, 0>{}); break;
      case BinaryOp::Sub: run(std::integral_constant<int, 1>{}); break;
      case BinaryOp::Mul: run(std::integral_constant<int, 2>{}); break;
      case BinaryOp::Div: run(std::integral_constant<int, 3>{}); break;
      case BinaryOp::Max: run(std::integral_constant<int, 4>{}); break;
      case BinaryOp::Gt: run(std::integral_constant<int, 5>{}); break;
    }
  });
  check_launch("binary");
}

void launch_scalar(ScalarOp op, DType dt, const void *x, double c, void *out, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  RX_CUDA_DISPATCH_FLOAT(dt, "scalar", [&] {
    scalar_kernel<T><<<grid_for(n), kThreads, 0, s>>>((int)op, (const T *)x, (acc_t<T>)c, (T *)out, n);
  });
  check_launch("scalar");
}

void launch_unary(UnaryOp op, DType dt, const void *x, void *out, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  RX_CUDA_DISPATCH_FLOAT(dt, "unary",
                         [&] { unary_kernel<T><<<grid_for(n), kThreads, 0, s>>>((int)op, (const T *)x, (T *)out, n); });
  check_launch("unary");
}

void launch_sum(DType dt, const void *x, void *out, const ReduceSpec &r, cudaStream_t s) {
  RX_CUDA_DISPATCH_FLOAT(dt, "sum", [&] {
    if (r.nred <= 32)
      sum_thread_kernel<T><<<grid_for(r.nout), kThreads, 0, s>>>((const T *)x, (T *)out, r);
    else
      sum_block_kernel<T><<<(unsigned)std::min<int64_t>(r.nout, 65536), kThreads, 0, s>>>((const T *)x, (T *)out, r);
  });
  check_launch("sum");
}

void launch_add_channel_bias(DType dt, void *y, const void *bias, int64_t rows, int64_t C, cudaStream_t s) {
  if (rows * C == 0) return;
  RX_CUDA_DISPATCH_FLOAT(dt, "conv2d bias", [&] {
    add_channel_bias_kernel<T><<<grid_for(rows * C), kThreads, 0, s>>>((T *)y, (const T *)bias, rows, C);
  });
  check_launch("conv2d bias");
}

void launch_fill_rows(DType dt, void *out, const void *bias, int64_t M, int64_t N, cudaStream_t s) {
  if (M * N == 0) return;
  RX_CUDA_DISPATCH_FLOAT(dt, "linear bias", [&] {
    fill_rows_kernel<T><<<grid_for(M * N), kThreads, 0, s>>>((T *)out, (const T *)bias, M, N);
  });
  check_launch("linear bias");
}

// ---------------------------------------------------------------- relu (one file: kernels above,
// launchers and the entries of the kernel table here; how a new op's CUDA side is written)

namespace {

void launch_relu_forward(DType dt, const void *x, void *y, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  RX_CUDA_DISPATCH_FLOAT(dt, "relu",
                         [&] { relu_forward_kernel<T><<<grid_for(n), kThreads, 0, s>>>((const T *)x, (T *)y, n); });
  check_launch("relu");
}

void launch_relu_backward(DType dt, const void *gy, const void *y, void *gx, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  RX_CUDA_DISPATCH_FLOAT(dt, "relu_backward", [&] {
    relu_backward_kernel<T><<<grid_for(n), kThreads, 0, s>>>((const T *)gy, (const T *)y, (T *)gx, n);
  });
  check_launch("relu_backward");
}

}  // namespace

void relu_forward(const Tensor &x, Tensor &y) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  launch_relu_forward(x.dtype(), x.raw(), y.raw(), x.numel(), be.stream_);
  y.set_layout(x.layout());
}
const bool relu_forward_set = set_kernel(cuda_kernels().relu_forward, &relu_forward);

void relu_backward(const Tensor &gy, const Tensor &y, Tensor &gx) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  DeviceBuffer tmp;
  const void *py = y.raw();
  if (is_nhwc(y) != is_nhwc(gy)) py = is_nhwc(gy) ? be.nhwc_data(y, tmp) : be.contiguous_data(y, tmp);
  launch_relu_backward(gy.dtype(), gy.raw(), py, gx.raw(), gy.numel(), be.stream_);
  gx.set_layout(gy.layout());
}
const bool relu_backward_set = set_kernel(cuda_kernels().relu_backward, &relu_backward);

}  // namespace rx::cuda
