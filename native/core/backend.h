// The backend interface: one virtual method per kernel. The op layer (ops.cc) validates
// arguments, infers and allocates outputs, and then calls the backend of the inputs' device
// with everything checked; a backend only computes and assumes valid input. Adding an op means
// one entry in ops.h/ops.cc, one method here, a kernel per backend, a gradient (lib/ops) and a
// test (docs/adding-an-op.md).
// (Same split as ggml's backend interface struct and ATen's native_functions.yaml dispatch.)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ops.h"
#include "tensor.h"

namespace rx {

// Bumped whenever this interface or the layout of Tensor/Storage changes: the CUDA backend is
// a separate shared library built against these headers, and the loader refuses a library
// whose version differs.
constexpr int kBackendAbiVersion = 2;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char *name() const = 0;

  // Memory. allocate throws rx::Error(ERR_OOM) when the device is full; the process goes on.
  virtual void *allocate(size_t bytes) = 0;
  virtual void deallocate(void *p, size_t bytes) = 0;
  // Bytes held by a caching allocator: a device backend counts live and cached blocks, the CPU
  // backend only its cache of free blocks (live CPU bytes are counted by the core).
  virtual int64_t reserved_bytes() { return 0; }
  // Waits until every queued kernel has finished (a no-op for synchronous backends).
  virtual void synchronize() {}
  // A JSON object describing the device (name, memory, driver and library versions).
  virtual std::string device_info_json() { return "{}"; }
  // Worker threads its kernels use (the CPU backend's pool; 1 for a device backend).
  virtual int num_threads() { return 1; }
  virtual void set_num_threads(int) {}

  // Data movement. copy: same shape/dtype, either tensor may live on this backend's device.
  virtual void fill(Tensor &t, double value) = 0;
  virtual void copy(const Tensor &src, Tensor &dst) = 0;
  virtual void cast(const Tensor &src, Tensor &dst) = 0;
  virtual void permute(const Tensor &src, Tensor &dst, const std::vector<int> &perm) = 0;
  virtual void expand(const Tensor &src, Tensor &dst) = 0;  // broadcast src to dst's shape
  // Counter-based generator: element i draws from (seed, offset + i), so results do not
  // depend on thread count or device.
  virtual void random_uniform(Tensor &t, double lo, double hi, uint64_t seed, uint64_t offset) = 0;
  virtual void random_normal(Tensor &t, double mean, double std, uint64_t seed, uint64_t offset) = 0;

  virtual void conv2d_forward(const Tensor &x, const Tensor &w, const Tensor *b, Tensor &y, const Conv2dArgs &a) = 0;
  virtual void conv2d_backward_data(const Tensor &gy, const Tensor &w, Tensor &gx, const Conv2dArgs &a) = 0;
  virtual void conv2d_backward_filter(const Tensor &gy, const Tensor &x, Tensor &gw, const Conv2dArgs &a) = 0;

  // residual only for BnAct::AddReLU. Updates running stats in training mode. A backend whose
  // backward needs more than the saved statistics sets save_invstd.saved (backward gets it back).
  virtual void batch_norm_forward(const Tensor &x, const Tensor &gamma, const Tensor &beta, const Tensor *residual,
                                  Tensor &running_mean, Tensor &running_var, Tensor &y, Tensor &save_mean,
                                  Tensor &save_invstd, const BatchNormArgs &a) = 0;
  // y is the forward output (its sign masks the ReLU); gresidual only for AddReLU.
  virtual void batch_norm_backward(const Tensor &gy, const Tensor &x, const Tensor &y, const Tensor &gamma,
                                   const Tensor &save_mean, const Tensor &save_invstd, Tensor &gx, Tensor &ggamma,
                                   Tensor &gbeta, Tensor *gresidual, const BatchNormArgs &a) = 0;

  virtual void relu_forward(const Tensor &x, Tensor &y) = 0;
  virtual void relu_backward(const Tensor &gy, const Tensor &y, Tensor &gx) = 0;
  virtual void binary(BinaryOp op, const Tensor &a, const Tensor &b, Tensor &out) = 0;  // broadcasting
  virtual void scalar(ScalarOp op, const Tensor &x, double s, Tensor &out) = 0;
  virtual void unary(UnaryOp op, const Tensor &x, Tensor &out) = 0;
  // Sums over the axes where reduce[i] is true; out has x's rank with those axes set to 1.
  virtual void sum(const Tensor &x, const std::vector<bool> &reduce, Tensor &out) = 0;

  virtual void max_pool2d_forward(const Tensor &x, Tensor &y, Tensor &indices, const Pool2dArgs &a) = 0;
  virtual void max_pool2d_backward(const Tensor &gy, const Tensor &indices, Tensor &gx) = 0;
  virtual void global_avg_pool2d_forward(const Tensor &x, Tensor &y) = 0;
  virtual void global_avg_pool2d_backward(const Tensor &gy, Tensor &gx) = 0;

  // out[M,N] = op(a) op(b) (+ bias[N] broadcast over rows when given)
  virtual void matmul(const Tensor &a, const Tensor &b, bool ta, bool tb, const Tensor *bias, Tensor &out) = 0;

  // loss = mean_i [ -(1-eps) log p[i,t_i] - eps/K sum_j log p[i,j] ]; probs = softmax(logits)
  virtual void cross_entropy_forward(const Tensor &logits, const Tensor &targets, double smoothing, Tensor &loss,
                                     Tensor &probs) = 0;
  // glogits = gloss * (probs - ((1-eps) onehot + eps/K)) / N
  virtual void cross_entropy_backward(const Tensor &probs, const Tensor &targets, double smoothing,
                                      const Tensor &gloss, Tensor &glogits) = 0;
  virtual void topk(const Tensor &x, int64_t k, Tensor &indices) = 0;  // rows of [N, K], descending

  // In place: param -= lr * update, PyTorch's SGD rule (weight decay, momentum, dampening, Nesterov).
  virtual void sgd_step(Tensor &param, const Tensor &grad, Tensor *momentum_buf, const SgdArgs &a) = 0;
};

// Backend registry. The CPU backend is always present; the CUDA backend is registered by
// load_cuda_backend when its shared library loads.
Backend &backend_for(Device d);
void register_backend(DeviceType t, Backend *b);
bool backend_available(DeviceType t);
Backend &cpu_backend();

// The entry point a backend library exports (extern "C"): on success returns 0 and sets *out;
// otherwise returns non-zero and writes why into err (what is missing and how to fix it).
// A library may only use the inline parts of tensor.h / error.h (it cannot link against the
// addon), which is why Tensor's accessors are all inline.
using BackendEntryFn = int (*)(int abi_version, Backend **out, char *err, size_t err_len);
constexpr const char *kCudaEntryName = "resnext_cuda_backend_create";

struct CudaLoadResult {
  bool ok = false;
  std::string library;  // the path that was tried (or loaded)
  std::string reason;   // why it could not be used
};
// dlopen()s the CUDA backend library once (later calls return the first result) and registers it.
const CudaLoadResult &load_cuda_backend(const std::string &library_path);

}  // namespace rx
