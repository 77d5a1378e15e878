// The CUDA backend: one device (cuda:0), one stream, one cuDNN and one cuBLAS handle. Every op
// enqueues on the stream and returns; only downloads and synchronize() wait.
//
// Layout: 4-D activations (and conv weights, whose [K, C/g, R, S] channels-last order is cuDNN's
// KRSC) are stored NHWC and marked Layout::ChannelsLast; everything else is dense row-major.
// Every op accepts either layout and converts what it needs into temporary buffers.
//
// Kernels: free functions in cuda_backend.cc, conv2d.cc and batch_norm.cc, each entered in
// cuda_kernels() (the table the op layer calls, core/ops.h) right after its definition; they
// reach the stream, handles and helpers through CudaBackend::get().
//
// ABI: this library is dlopen()ed by the CPU addon and may use only the inline parts of
// tensor.h / error.h (see backend.h). It never constructs rx::Tensor or rx::Storage; outputs come
// preallocated by the op layer through allocate() below, temporaries are raw DeviceBuffers.
#pragma once

#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <cudnn.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "../core/backend.h"
#include "memory.h"

namespace rx::cuda {

// ---------------------------------------------------------------- errors

// throw_cuda, check_cuda, the caching allocator and the staged upload: memory.h.
void check_cudnn(cudnnStatus_t s, const char *what);
void check_cublas(cublasStatus_t s, const char *what);
bool policy_is_alloc_failure(cudnnStatus_t s);
bool policy_is_alloc_failure(cublasStatus_t s);
// After a kernel launch: catches bad launch configurations (asynchronous faults surface later).
inline void check_launch(const char *what) { check_cuda(cudaGetLastError(), what); }

class CudaBackend;

// A temporary device buffer from the backend's allocator, returned on scope exit (stream-ordered,
// so returning it while kernels that use it are still queued is safe).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(CudaBackend &b, size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer &&o) noexcept : be_(o.be_), p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr; }
  DeviceBuffer &operator=(DeviceBuffer &&o) noexcept;
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  void *get() const { return p_; }
  template <typename T>
  T *as() const { return static_cast<T *>(p_); }
  size_t bytes() const { return bytes_; }

 private:
  CudaBackend *be_ = nullptr;
  void *p_ = nullptr;
  size_t bytes_ = 0;
};

// ---------------------------------------------------------------- strided walks

// A walk over an output's elements in its physical order, with each operand's stride per walked
// axis (0 where the operand broadcasts). Covers layout conversion, permute, expand and
// broadcasting binary ops with one kernel family.
constexpr int kMaxDims = 8;
struct Walk {
  int nd = 0;
  int64_t size[kMaxDims];
  int64_t stride[3][kMaxDims];  // [0] output, [1] first input, [2] second input
};

inline bool is_nhwc(const Tensor &t) { return t.ndim() == 4 && t.layout() == Layout::ChannelsLast; }
// Physical stride of each logical axis of t.
std::vector<int64_t> physical_strides(const Tensor &t);
std::vector<int64_t> physical_strides(const Shape &shape, bool nhwc);

// ---------------------------------------------------------------- kernels (launchers, *.cu)

// All launchers enqueue on `s`; element types are passed as rx::DType.
void launch_fill(void *p, int64_t n, DType dt, double value, cudaStream_t s);
// dst (dense in its walk order) <- src through the walk's input strides; elem_size 1/2/4/8.
void launch_strided_copy(const void *src, void *dst, const Walk &w, size_t elem_size, cudaStream_t s);
void launch_cast(const void *src, DType sdt, void *dst, DType ddt, int64_t n, cudaStream_t s);
void launch_random(void *p, DType dt, int64_t n, bool normal, double a, double b, uint64_t seed, uint64_t offset,
                   cudaStream_t s);
// flat: operands share shape and layout; w is then a 1-D walk of the element count.
void launch_binary(BinaryOp op, DType dt, const void *a, const void *b, void *out, const Walk &w, bool flat,
                   cudaStream_t s);
void launch_scalar(ScalarOp op, DType dt, const void *x, double c, void *out, int64_t n, cudaStream_t s);
void launch_unary(UnaryOp op, DType dt, const void *x, void *out, int64_t n, cudaStream_t s);
// out[o] = sum over the reduced index space; kept/red describe both sub-spaces with x strides.
struct ReduceSpec {
  int nk = 0, nr = 0;
  int64_t kept_size[kMaxDims], kept_stride[kMaxDims];
  int64_t red_size[kMaxDims], red_stride[kMaxDims];
  int64_t nout = 0, nred = 0;
};
void launch_sum(DType dt, const void *x, void *out, const ReduceSpec &r, cudaStream_t s);
// Adds bias[c] to every element of an NHWC (channel-innermost) buffer of `rows` x C.
void launch_add_channel_bias(DType dt, void *y, const void *bias, int64_t rows, int64_t C, cudaStream_t s);
// Broadcast bias[N] into every row of out[M, N] (the matmul epilogue is beta = 1).
void launch_fill_rows(DType dt, void *out, const void *bias, int64_t M, int64_t N, cudaStream_t s);

// NHWC pooling; indices are flat h*W+w within each plane, written NHWC like y.
void launch_max_pool2d_forward(DType dt, const void *x, void *y, int32_t *idx, int64_t N, int64_t C, int64_t H,
                               int64_t W, int64_t P, int64_t Q, const Pool2dArgs &a, cudaStream_t s);
// Scatter-add of gy into gx through the saved indices (the op layer passes no window geometry to
// backward). acc_f32 (N*H*W*C floats) is the accumulator for bfloat16, unused otherwise.
void launch_max_pool2d_backward(DType dt, const void *gy, const int32_t *idx, void *gx, void *acc_f32, int64_t N,
                                int64_t C, int64_t HW, int64_t PQ, cudaStream_t s);
void launch_global_avg_pool2d_forward(DType dt, const void *x, void *y, int64_t N, int64_t C, int64_t HW,
                                      cudaStream_t s);
void launch_global_avg_pool2d_backward(DType dt, const void *gy, void *gx, int64_t N, int64_t C, int64_t HW,
                                       cudaStream_t s);
// bad_target: one int on the device, set to 1 + the first bad row (0x7f7f7f7f when all are valid).
void launch_cross_entropy_forward(DType dt, const void *logits, const int32_t *targets, double smoothing, void *loss,
                                  void *probs, int64_t N, int64_t K, void *row_loss_f64, int32_t *bad_target,
                                  cudaStream_t s);
void launch_cross_entropy_backward(DType dt, const void *probs, const int32_t *targets, double smoothing,
                                   const void *gloss, void *glogits, int64_t N, int64_t K, cudaStream_t s);
void launch_topk(DType dt, const void *x, int32_t *idx, int64_t N, int64_t K, int64_t k, cudaStream_t s);
void launch_sgd_step(DType dt, void *p, const void *g, void *m, int64_t n, const SgdArgs &a, cudaStream_t s);

// Batch-norm helpers in NHWC (rows = N*H*W, C innermost). Statistics are float32.
void launch_bn_eval_forward(DType dt, const void *x, const void *residual, void *y, const float *gamma,
                            const float *beta, const float *mean, const float *var, double eps, BnAct act,
                            int64_t rows, int64_t C, float *save_mean, float *save_invstd, cudaStream_t s);
// Own training forward (when cuDNN's fused call is not used): batch statistics into save_mean /
// save_invstd, running statistics updated in place, y = act(bn(x) [+ residual]); scratch 2*C floats.
void launch_bn_train_forward(DType dt, const void *x, const void *residual, void *y, const float *gamma,
                             const float *beta, float *running_mean, float *running_var, double momentum, double eps,
                             BnAct act, int64_t rows, int64_t C, float *save_mean, float *save_invstd, float *scratch,
                             cudaStream_t s);
// Own backward (eval mode, and training mode when cuDNN's reserve space is not available):
// sums[0..C) = sum g, sums[C..2C) = sum g*(x-mean), g masked by y > 0 when act != None.
void launch_bn_backward(DType dt, const void *gy, const void *x, const void *y, const float *gamma,
                        const float *mean, const float *invstd, bool training, BnAct act, int64_t rows, int64_t C,
                        void *gx, void *gres, float *ggamma, float *gbeta, float *sums, cudaStream_t s);

// ---------------------------------------------------------------- the backend

struct BnReserve;   // cuDNN reserve space + exact float statistics, attached to save_invstd
struct ConvCache;   // engine choice per (direction, shape, dtype), see conv2d.cc
std::shared_ptr<ConvCache> make_conv_cache();
// Where convolution engine choices persist between runs (policy::plan_cache_path), "" if nowhere.
std::string conv_plan_cache_path();

// The CUDA backend's kernel table: each kernel file sets its entries beside the kernels, which
// are free functions that reach the backend through CudaBackend::get().
Kernels &cuda_kernels();

class CudaBackend final : public Backend {
 public:
  CudaBackend();  // throws rx::Error with what is missing
  ~CudaBackend() override;
  const char *name() const override { return "cuda"; }

  void *allocate(size_t bytes) override;
  void deallocate(void *p, size_t bytes) override;
  int64_t reserved_bytes() override;
  void synchronize() override;
  std::string device_info_json() override;

  const Kernels &kernels() const override { return cuda_kernels(); }
  // The one instance: create() makes it (the entry point calls it; throws what is missing), get()
  // returns it to the kernel functions, which only run after it exists.
  static CudaBackend &create();
  static CudaBackend &get();

  // Helpers shared by the op files.
  cudaStream_t stream() const { return stream_; }
  cudnnHandle_t cudnn() const { return cudnn_; }
  void *raw_allocate(size_t bytes);
  void raw_deallocate(void *p);
  // The data of t in NHWC order: t's own storage when it already is, else a converted copy in tmp.
  const void *nhwc_data(const Tensor &t, DeviceBuffer &tmp);
  // The data of t in dense row-major (Contiguous) order.
  const void *contiguous_data(const Tensor &t, DeviceBuffer &tmp);
  // Converts a dense buffer between NCHW and NHWC for logical shape [N, C, H, W].
  void convert_layout(const void *src, bool src_nhwc, void *dst, bool dst_nhwc, const Shape &shape, size_t elem_size);
  // A float32 copy (or t itself) of a 1-D statistics tensor for cuDNN; write_back copies results home.
  const float *f32_data(const Tensor &t, DeviceBuffer &tmp);
  void store_f32(const float *src, Tensor &dst);
  bool strict_fp32() const { return strict_fp32_; }
  // Host-to-device copy of n bytes from pageable memory through pinned staging buffers: the
  // source may be freed as soon as this returns.
  void upload(void *dst, const void *src, size_t n);
  // Runs a cuBLAS/cuDNN call; if the library could not allocate, releases our cached blocks and
  // runs it once more (finding 7).
  template <typename F>
  auto retry_on_alloc_failure(F &&f) -> decltype(f()) {
    auto s = f();
    if (policy_is_alloc_failure(s)) {
      alloc_.release_cached();
      s = f();
    }
    return s;
  }
  // Throws ERR_CUDNN if a persistent-mode batch norm reported an overflow since the last check
  // (call after a stream synchronisation).
  void check_bn_runtime(const char *what);

  // State, used directly by the kernel functions of this folder (the backend's own code).
  std::recursive_mutex mu_;  // cuDNN/cuBLAS handles are not thread-safe; ops may come from workers
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  CachingAllocator alloc_;
  bool strict_fp32_ = false;  // RESNEXT_CUDA_STRICT_FP32=1: no TF32 in convolutions and matmuls
  std::shared_ptr<ConvCache> conv_;  // shared_ptr: the type is complete only in conv2d.cc
  int32_t *host_flag_ = nullptr;  // pinned, for the cross-entropy target check
  bool bn_persistent_pending_ = false;  // a persistent batch norm ran since the last runtime-error query
  static constexpr size_t kStagingBytes = size_t(8) << 20;
  StagingSlot staging_[2];
  size_t staging_next_ = 0;
};

}  // namespace rx::cuda
