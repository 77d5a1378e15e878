// Shared device helpers for the .cu files: the dtype dispatch, loads and stores that compute in
// float (double for float64) whatever the storage type, grid sizing, and block reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_backend.h"

namespace rx::cuda {

using bf16 = __nv_bfloat16;

// Arithmetic type for a storage type: bfloat16 and float compute in float, double in double.
template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccOf<T>::type;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(bf16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_acc(float v);
template <>
__device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <>
__device__ __forceinline__ bf16 from_acc<bf16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ double from_acc<double>(float v) { return v; }
template <typename T>
__device__ __forceinline__ T from_acc_d(double v) { return from_acc<T>((float)v); }
template <>
__device__ __forceinline__ double from_acc_d<double>(double v) { return v; }

// Runs the body with T bound to the storage type of a float dtype.
#define RX_CUDA_DISPATCH_FLOAT(dt, op, ...)                                                              \
  do {                                                                                                   \
    switch (dt) {                                                                                        \
      case ::rx::DType::F32: {                                                                           \
        using T = float;                                                                                 \
        __VA_ARGS__();                                                                                   \
        break;                                                                                           \
      }                                                                                                  \
      case ::rx::DType::BF16: {                                                                          \
        using T = ::rx::cuda::bf16;                                                                      \
        __VA_ARGS__();                                                                                   \
        break;                                                                                           \
      }                                                                                                  \
      case ::rx::DType::F64: {                                                                           \
        using T = double;                                                                                \
        __VA_ARGS__();                                                                                   \
        break;                                                                                           \
      }                                                                                                  \
      default:                                                                                           \
        ::rx::fail(::rx::ErrorCode::DType, op, "input", "float32, bfloat16 or float64", dtype_name(dt)); \
    }                                                                                                    \
  } while (0)

constexpr int kThreads = 256;

// Enough blocks to fill the GPU for grid-stride loops, never more than the work needs.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > 65536) b = 65536;
  return (unsigned)b;
}

#define RX_GRID_STRIDE(i, n) \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)blockDim.x * gridDim.x)

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename A>
__device__ __forceinline__ A warp_max(A v) {
  for (int o = 16; o > 0; o >>= 1) {
    A u = __shfl_xor_sync(0xffffffffu, v, o);
    v = u > v ? u : v;
  }
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
template <typename A>
__device__ A block_sum(A v) {
  __shared__ A part[32];
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // part may still be read by a previous call
  if (lane == 0) part[wid] = v;
  __syncthreads();
  A t = lane < nw ? part[lane] : A(0);
  return warp_sum(t);
}

template <typename A>
__device__ A block_max(A v, A lowest) {
  __shared__ A part[32];
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) part[wid] = v;
  __syncthreads();
  A t = lane < nw ? part[lane] : lowest;
  return warp_max(t);
}

}  // namespace rx::cuda
