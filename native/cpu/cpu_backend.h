// The CPU backend: our own kernels, NCHW, multithreaded with parallel.h. Convolutions and GEMM
// live in conv2d.cc / gemm.cc (vectorised, with runtime ISA selection); the memory-bound ops
// are written as plain loops the compiler vectorises.
#pragma once

#include "../core/backend.h"
#include "../core/error.h"

namespace rx::cpu {

// Calls body.template operator()<T>() with T = float or double for a float tensor.
#define RX_DISPATCH_FLOAT(dtype, op, ...)                                                \
  do {                                                                                   \
    if ((dtype) == ::rx::DType::F32) {                                                   \
      using T = float;                                                                   \
      __VA_ARGS__();                                                                     \
    } else if ((dtype) == ::rx::DType::F64) {                                            \
      using T = double;                                                                  \
      __VA_ARGS__();                                                                     \
    } else {                                                                             \
      ::rx::fail(::rx::ErrorCode::DType, op, "input", "float32 or float64", dtype_name(dtype)); \
    }                                                                                    \
  } while (0)

class CpuBackend final : public Backend {
 public:
  const char *name() const override { return "cpu"; }
  void *allocate(size_t bytes) override;
  void deallocate(void *p, size_t bytes) override;
  int64_t reserved_bytes() override;  // bytes held in the block cache
  void release_cached();              // returns cached blocks to the system
  int num_threads() override;
  void set_num_threads(int n) override;
  void fill(Tensor &t, double value) override;
  void copy(const Tensor &src, Tensor &dst) override;
  void cast(const Tensor &src, Tensor &dst) override;
  void permute(const Tensor &src, Tensor &dst, const std::vector<int> &perm) override;
  void expand(const Tensor &src, Tensor &dst) override;
  void random_uniform(Tensor &t, double lo, double hi, uint64_t seed, uint64_t offset) override;
  void random_normal(Tensor &t, double mean, double std, uint64_t seed, uint64_t offset) override;
  void conv2d_forward(const Tensor &x, const Tensor &w, const Tensor *b, Tensor &y, const Conv2dArgs &a) override;
  void conv2d_backward_data(const Tensor &gy, const Tensor &w, Tensor &gx, const Conv2dArgs &a) override;
  void conv2d_backward_filter(const Tensor &gy, const Tensor &x, Tensor &gw, const Conv2dArgs &a) override;
  void batch_norm_forward(const Tensor &x, const Tensor &gamma, const Tensor &beta, const Tensor *residual,
                          Tensor &running_mean, Tensor &running_var, Tensor &y, Tensor &save_mean,
                          Tensor &save_invstd, const BatchNormArgs &a) override;
  void batch_norm_backward(const Tensor &gy, const Tensor &x, const Tensor &y, const Tensor &gamma,
                           const Tensor &save_mean, const Tensor &save_invstd, Tensor &gx, Tensor &ggamma,
                           Tensor &gbeta, Tensor *gresidual, const BatchNormArgs &a) override;
  void relu_forward(const Tensor &x, Tensor &y) override;
  void relu_backward(const Tensor &gy, const Tensor &y, Tensor &gx) override;
  void binary(BinaryOp op, const Tensor &a, const Tensor &b, Tensor &out) override;
  void scalar(ScalarOp op, const Tensor &x, double s, Tensor &out) override;
  void unary(UnaryOp op, const Tensor &x, Tensor &out) override;
  void sum(const Tensor &x, const std::vector<bool> &reduce, Tensor &out) override;
  void max_pool2d_forward(const Tensor &x, Tensor &y, Tensor &indices, const Pool2dArgs &a) override;
  void max_pool2d_backward(const Tensor &gy, const Tensor &indices, Tensor &gx) override;
  void global_avg_pool2d_forward(const Tensor &x, Tensor &y) override;
  void global_avg_pool2d_backward(const Tensor &gy, Tensor &gx) override;
  void matmul(const Tensor &a, const Tensor &b, bool ta, bool tb, const Tensor *bias, Tensor &out) override;
  void cross_entropy_forward(const Tensor &logits, const Tensor &targets, double smoothing, Tensor &loss,
                             Tensor &probs) override;
  void cross_entropy_backward(const Tensor &probs, const Tensor &targets, double smoothing, const Tensor &gloss,
                              Tensor &glogits) override;
  void topk(const Tensor &x, int64_t k, Tensor &indices) override;
  void sgd_step(Tensor &param, const Tensor &grad, Tensor *momentum_buf, const SgdArgs &a) override;
};

}  // namespace rx::cpu
