// The op table: every operation the core offers, as plain C++ functions. Each one validates
// its arguments (raising rx::Error with a stable code and a message naming op, argument,
// expectation and what it received), allocates outputs on the inputs' device and dispatches to
// that device's backend. Backward kernels are ops too; the autograd tape (lib/autograd) decides
// when to call them.
#pragma once

#include <string>
#include <tuple>
#include <vector>

#include "backend.h"
#include "tensor.h"

namespace rx::ops {

// Creation and movement
TensorPtr full(const Shape &shape, DType dtype, Device device, double value);
TensorPtr from_host(const void *data, size_t bytes, const Shape &shape, DType dtype, Device device);
void to_host(const Tensor &t, void *dst, size_t bytes);
TensorPtr random_uniform(const Shape &shape, DType dtype, Device device, double lo, double hi, uint64_t seed,
                         uint64_t offset);
TensorPtr random_normal(const Shape &shape, DType dtype, Device device, double mean, double std, uint64_t seed,
                        uint64_t offset);
TensorPtr copy(const Tensor &x, Device device);
void copy_into(const Tensor &src, Tensor &dst);  // same shape and dtype; used for in-place updates
void fill_(Tensor &t, double value);
TensorPtr cast(const Tensor &x, DType dtype);
TensorPtr reshape(const Tensor &x, const Shape &shape);  // a view; one dimension may be -1
TensorPtr permute(const Tensor &x, const std::vector<int> &perm);
TensorPtr expand(const Tensor &x, const Shape &shape);  // broadcast to shape

// Convolution
TensorPtr conv2d_forward(const Tensor &x, const Tensor &w, const Tensor *b, const Conv2dArgs &a);
TensorPtr conv2d_backward_data(const Tensor &gy, const Tensor &w, const Shape &x_shape, const Conv2dArgs &a);
TensorPtr conv2d_backward_filter(const Tensor &gy, const Tensor &x, const Shape &w_shape, const Conv2dArgs &a);

// Batch normalisation, plain and fused. Returns y, save_mean, save_invstd.
std::tuple<TensorPtr, TensorPtr, TensorPtr> batch_norm_forward(const Tensor &x, const Tensor &gamma,
                                                               const Tensor &beta, const Tensor *residual,
                                                               Tensor &running_mean, Tensor &running_var,
                                                               const BatchNormArgs &a);
// Returns gx, ggamma, gbeta, gresidual (null unless AddReLU).
std::tuple<TensorPtr, TensorPtr, TensorPtr, TensorPtr> batch_norm_backward(
    const Tensor &gy, const Tensor &x, const Tensor &y, const Tensor &gamma, const Tensor &save_mean,
    const Tensor &save_invstd, const BatchNormArgs &a);

// Elementwise and reductions
TensorPtr relu_forward(const Tensor &x);
TensorPtr relu_backward(const Tensor &gy, const Tensor &y);
TensorPtr binary(BinaryOp op, const Tensor &a, const Tensor &b);
TensorPtr scalar(ScalarOp op, const Tensor &x, double s);
TensorPtr unary(UnaryOp op, const Tensor &x);
TensorPtr sum(const Tensor &x, const std::vector<int> &dims, bool keepdim);  // empty dims: all
Shape broadcast_shapes(const std::string &op, const Shape &a, const Shape &b);

// Pooling. max_pool2d_forward returns y and int32 argmax indices (flat within each H*W plane).
std::pair<TensorPtr, TensorPtr> max_pool2d_forward(const Tensor &x, const Pool2dArgs &a);
TensorPtr max_pool2d_backward(const Tensor &gy, const Tensor &indices, const Shape &x_shape);
TensorPtr global_avg_pool2d_forward(const Tensor &x);  // [N,C,H,W] -> [N,C,1,1]
TensorPtr global_avg_pool2d_backward(const Tensor &gy, const Shape &x_shape);

// Dense
TensorPtr matmul(const Tensor &a, const Tensor &b, bool ta, bool tb);
TensorPtr linear_forward(const Tensor &x, const Tensor &w, const Tensor *b);  // x [N,in], w [out,in]

// Loss and metrics. cross_entropy_forward returns the scalar loss and the softmax probabilities.
std::pair<TensorPtr, TensorPtr> cross_entropy_forward(const Tensor &logits, const Tensor &targets,
                                                      double smoothing);
TensorPtr cross_entropy_backward(const Tensor &probs, const Tensor &targets, double smoothing,
                                 const Tensor &gloss);
TensorPtr topk(const Tensor &x, int64_t k);  // int32 [N, k]
TensorPtr argmax(const Tensor &x);           // int32 [N]

// Optimiser
void sgd_step(Tensor &param, const Tensor &grad, Tensor *momentum_buf, const SgdArgs &a);

}  // namespace rx::ops
