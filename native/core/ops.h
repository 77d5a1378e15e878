// The op table: every operation the core offers, written once. Each op's signature lives here
// (with its argument structs and enums); ops.cc validates its arguments in one place (raising
// rx::Error with a stable code and a message naming the public op, the argument, what was
// expected and what was received), allocates outputs on the inputs' device and hands the kernel
// to the executor (executor.h), which runs it on that device's backend (backend.h). Backends
// assume valid input. Backward kernels are ops too; the autograd tape (lib/autograd) decides
// when to call them.
//
// The binding (native/binding/module.cc) exports each op in one line of its bind list; it
// converts each parameter by its C++ type (see native/binding/convert.h), reads the argument
// structs below from named JS objects and enums by the names in EnumNames.
// (ATen's native_functions.yaml, ggml's op enum with one name table and a static assert.)
#pragma once

#include <cstdint>
#include <iterator>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "tensor.h"

namespace rx {

// ---------------------------------------------------------------- argument structs

struct Conv2dArgs {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, groups = 1;
};

// Which fused epilogue follows the normalisation: y = act(bn(x) [+ residual]).
enum class BnAct { None = 0, ReLU = 1, AddReLU = 2 };

struct BatchNormArgs {
  bool training = true;
  double momentum = 0.1;
  double eps = 1e-5;
  BnAct act = BnAct::None;
};

struct Pool2dArgs {
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
};

struct SgdArgs {
  double lr = 0.01, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  bool first_step = true;  // momentum buffer is initialised from the gradient (PyTorch's rule)
};

enum class BinaryOp { Add = 0, Sub = 1, Mul = 2, Div = 3, Max = 4, Gt = 5 };
enum class ScalarOp { Add = 0, Mul = 1, Pow = 2, RSub = 3 /* s - x */, RDiv = 4 /* s / x */ };
enum class UnaryOp { Neg = 0, Exp = 1, Log = 2, Sqrt = 3, Abs = 4, Sign = 5 };

// ---------------------------------------------------------------- enum names

// The one name table of each enum, in value order: what JS passes and what the addon exports
// (`enums`). A new enumerator without a name fails the static_asserts below.
template <typename E>
struct EnumNames;
template <>
struct EnumNames<BinaryOp> {
  static constexpr const char *type = "BinaryOp";
  static constexpr const char *names[] = {"add", "sub", "mul", "div", "maximum", "gt"};
};
template <>
struct EnumNames<ScalarOp> {
  static constexpr const char *type = "ScalarOp";
  static constexpr const char *names[] = {"add", "mul", "pow", "rsub", "rdiv"};
};
template <>
struct EnumNames<UnaryOp> {
  static constexpr const char *type = "UnaryOp";
  static constexpr const char *names[] = {"neg", "exp", "log", "sqrt", "abs", "sign"};
};
template <>
struct EnumNames<BnAct> {
  static constexpr const char *type = "BnAct";
  static constexpr const char *names[] = {"none", "relu", "addRelu"};
};
static_assert(std::size(EnumNames<BinaryOp>::names) == (size_t)BinaryOp::Gt + 1);
static_assert(std::size(EnumNames<ScalarOp>::names) == (size_t)ScalarOp::RDiv + 1);
static_assert(std::size(EnumNames<UnaryOp>::names) == (size_t)UnaryOp::Sign + 1);
static_assert(std::size(EnumNames<BnAct>::names) == (size_t)BnAct::AddReLU + 1);

template <typename E>
const char *enum_name(E e) {
  return EnumNames<E>::names[(size_t)e];
}

// ---------------------------------------------------------------- the kernel table

// One kernel a backend provides, with its signature. Unset, it throws ERR_DEVICE instead of
// crashing, so a backend built without some kernel still fails cleanly.
template <typename Sig>
struct Kernel;
template <typename... A>
struct Kernel<void(A...)> {
  using Fn = void (*)(A...);
  Fn fn = &missing;
  void operator()(A... a) const { fn(std::forward<A>(a)...); }
  static void missing(A...) {
    throw Error(ErrorCode::Device, "this device's backend has no kernel for the op (the backend library is older)");
  }
};

// The kernels of one device: the interface each backend implements, written once. A backend
// keeps one table and sets each entry next to the kernel's definition (see cpu_backend.h and
// cuda_backend.h); the op layer (ops.cc) validates, allocates outputs and then calls
// backend.kernels().name(...). Kernels assume valid input. (ggml's backend struct, tfjs's kernel
// registry.)
struct Kernels {
  // Data movement. copy: same shape/dtype, either tensor may live on this backend's device.
  Kernel<void(Tensor &t, double value)> fill;
  Kernel<void(const Tensor &src, Tensor &dst)> copy;
  Kernel<void(const Tensor &src, Tensor &dst)> cast;
  Kernel<void(const Tensor &src, Tensor &dst, const std::vector<int> &perm)> permute;
  Kernel<void(const Tensor &src, Tensor &dst)> expand;  // broadcast src to dst's shape
  // Counter-based generator: element i draws from (seed, offset + i), so results do not
  // depend on thread count or device.
  Kernel<void(Tensor &t, double lo, double hi, uint64_t seed, uint64_t offset)> random_uniform;
  Kernel<void(Tensor &t, double mean, double std, uint64_t seed, uint64_t offset)> random_normal;

  Kernel<void(const Tensor &x, const Tensor &w, const Tensor *b, Tensor &y, const Conv2dArgs &a)> conv2d_forward;
  Kernel<void(const Tensor &gy, const Tensor &w, Tensor &gx, const Conv2dArgs &a)> conv2d_backward_data;
  Kernel<void(const Tensor &gy, const Tensor &x, Tensor &gw, const Conv2dArgs &a)> conv2d_backward_filter;

  // Inference: act(batchNorm_eval(conv2d(x, w)) [+ residual]) in one pass, the batch norm folded
  // into the convolution's epilogue (a.training is false). Optional: where a backend leaves it
  // unset the op layer runs conv2d_forward then batch_norm_forward.
  Kernel<void(const Tensor &x, const Tensor &w, const Tensor &gamma, const Tensor &beta, const Tensor &running_mean,
              const Tensor &running_var, const Tensor *residual, Tensor &y, const Conv2dArgs &ca,
              const BatchNormArgs &a)>
      conv2d_bn_eval;

  // residual only for BnAct::AddReLU. Updates running stats in training mode. A backend whose
  // backward needs more than the saved statistics sets save_invstd.saved (backward gets it back).
  Kernel<void(const Tensor &x, const Tensor &gamma, const Tensor &beta, const Tensor *residual, Tensor &running_mean,
              Tensor &running_var, Tensor &y, Tensor &save_mean, Tensor &save_invstd, const BatchNormArgs &a)>
      batch_norm_forward;
  // y is the forward output (its sign masks the ReLU); gresidual only for AddReLU.
  Kernel<void(const Tensor &gy, const Tensor &x, const Tensor &y, const Tensor &gamma, const Tensor &save_mean,
              const Tensor &save_invstd, Tensor &gx, Tensor &ggamma, Tensor &gbeta, Tensor *gresidual,
              const BatchNormArgs &a)>
      batch_norm_backward;

  Kernel<void(const Tensor &x, Tensor &y)> relu_forward;
  Kernel<void(const Tensor &gy, const Tensor &y, Tensor &gx)> relu_backward;
  Kernel<void(BinaryOp op, const Tensor &a, const Tensor &b, Tensor &out)> binary;  // broadcasting
  Kernel<void(ScalarOp op, const Tensor &x, double s, Tensor &out)> scalar;
  Kernel<void(UnaryOp op, const Tensor &x, Tensor &out)> unary;
  // Sums over the axes where reduce[i] is true; out has x's rank with those axes set to 1.
  Kernel<void(const Tensor &x, const std::vector<bool> &reduce, Tensor &out)> sum;

  Kernel<void(const Tensor &x, Tensor &y, Tensor &indices, const Pool2dArgs &a)> max_pool2d_forward;
  Kernel<void(const Tensor &gy, const Tensor &indices, Tensor &gx)> max_pool2d_backward;
  Kernel<void(const Tensor &x, Tensor &y)> global_avg_pool2d_forward;
  Kernel<void(const Tensor &gy, Tensor &gx)> global_avg_pool2d_backward;

  // out[M,N] = op(a) op(b) (+ bias[N] broadcast over rows when given)
  Kernel<void(const Tensor &a, const Tensor &b, bool ta, bool tb, const Tensor *bias, Tensor &out)> matmul;

  // loss = mean_i [ -(1-eps) log p[i,t_i] - eps/K sum_j log p[i,j] ]; probs = softmax(logits)
  Kernel<void(const Tensor &logits, const Tensor &targets, double smoothing, Tensor &loss, Tensor &probs)>
      cross_entropy_forward;
  // glogits = gloss * (probs - ((1-eps) onehot + eps/K)) / N
  Kernel<void(const Tensor &probs, const Tensor &targets, double smoothing, const Tensor &gloss, Tensor &glogits)>
      cross_entropy_backward;
  Kernel<void(const Tensor &x, int64_t k, Tensor &indices)> topk;  // rows of [N, K], descending

  // In place: param -= lr * update, PyTorch's SGD rule (weight decay, momentum, dampening, Nesterov).
  Kernel<void(Tensor &param, const Tensor &grad, Tensor *momentum_buf, const SgdArgs &a)> sgd_step;
};

// Sets one entry of a backend's table; used as `const bool reg_x = set_kernel(table().x, &x);`
// beside the kernel, so the kernel's file is the only place that names it.
template <typename Sig>
bool set_kernel(Kernel<Sig> &slot, typename Kernel<Sig>::Fn fn) {
  slot.fn = fn;
  return true;
}

}  // namespace rx

namespace rx::ops {

// A result that may be absent (a gradient an op does not produce): null in JS.
struct OptionalTensor {
  TensorPtr ptr;
};

// ---------------------------------------------------------------- creation and movement

TensorPtr full(const Shape &shape, DType dtype, Device device, double value);
TensorPtr zeros(const Shape &shape, DType dtype, Device device);
TensorPtr ones(const Shape &shape, DType dtype, Device device);
TensorPtr empty(const Shape &shape, DType dtype, Device device);  // uninitialised
TensorPtr from_host(const void *data, size_t bytes, const Shape &shape, DType dtype, Device device);
void to_host(const Tensor &t, void *dst, size_t bytes);
TensorPtr rand(const Shape &shape, DType dtype, Device device, double low, double high, uint64_t seed,
               uint64_t offset);
TensorPtr randn(const Shape &shape, DType dtype, Device device, double mean, double std, uint64_t seed,
                uint64_t offset);
TensorPtr to(const Tensor &x, Device device);
void copy_(const Tensor &src, Tensor &dst);  // same shape and dtype; in-place updates, state loads
void fill_(Tensor &t, double value);
TensorPtr cast(const Tensor &x, DType dtype);
TensorPtr reshape(const Tensor &x, const Shape &shape);  // a view; one dimension may be -1
TensorPtr permute(const Tensor &x, const std::vector<int64_t> &dims);
TensorPtr expand(const Tensor &x, const Shape &shape);  // broadcast to shape

// ---------------------------------------------------------------- convolution

TensorPtr conv2d_forward(const Tensor &x, const Tensor &w, const Tensor *b, const Conv2dArgs &a);
// conv2d (no bias) then an eval-mode batch norm (running statistics) with its fused act, as one op
// for inference; the public ops are conv2d and batchNorm2d/-ReLU/-AddReLU, and errors name them.
TensorPtr conv2d_bn_eval(const Tensor &x, const Tensor &w, const Tensor &gamma, const Tensor &beta,
                         const Tensor &running_mean, const Tensor &running_var, const Tensor *residual,
                         const Conv2dArgs &ca, const BatchNormArgs &a);
TensorPtr conv2d_backward_data(const Tensor &gy, const Tensor &w, const Shape &x_shape, const Conv2dArgs &a);
TensorPtr conv2d_backward_filter(const Tensor &gy, const Tensor &x, const Shape &w_shape, const Conv2dArgs &a);

// ---------------------------------------------------------------- batch normalisation

// Plain and fused. Returns y, save_mean, save_invstd; a backend may attach the state its
// backward needs to save_invstd (Tensor::saved, e.g. cuDNN's reserve space).
std::tuple<TensorPtr, TensorPtr, TensorPtr> batch_norm_forward(const Tensor &x, const Tensor &gamma,
                                                               const Tensor &beta, const Tensor *residual,
                                                               Tensor &running_mean, Tensor &running_var,
                                                               const BatchNormArgs &a);
// Returns gx, ggamma, gbeta, gresidual (absent unless AddReLU).
std::tuple<TensorPtr, TensorPtr, TensorPtr, OptionalTensor> batch_norm_backward(
    const Tensor &gy, const Tensor &x, const Tensor &y, const Tensor &gamma, const Tensor &save_mean,
    const Tensor &save_invstd, const BatchNormArgs &a);

// ---------------------------------------------------------------- elementwise and reductions

TensorPtr relu(const Tensor &x);
TensorPtr relu_backward(const Tensor &gy, const Tensor &y);
TensorPtr binary(BinaryOp op, const Tensor &a, const Tensor &b);  // broadcasting
TensorPtr scalar(ScalarOp op, const Tensor &x, double s);
TensorPtr unary(UnaryOp op, const Tensor &x);
TensorPtr sum(const Tensor &x, const std::vector<int64_t> &dims, bool keepdim);  // empty dims: all

// ---------------------------------------------------------------- pooling

// max_pool2d_forward returns y and int32 argmax indices (flat within each H*W plane).
std::tuple<TensorPtr, TensorPtr> max_pool2d_forward(const Tensor &x, const Pool2dArgs &a);
TensorPtr max_pool2d_backward(const Tensor &gy, const Tensor &indices, const Shape &x_shape);
TensorPtr global_avg_pool2d_forward(const Tensor &x);  // [N,C,H,W] -> [N,C,1,1]
TensorPtr global_avg_pool2d_backward(const Tensor &gy, const Shape &x_shape);

// ---------------------------------------------------------------- dense

TensorPtr matmul(const Tensor &a, const Tensor &b, bool ta, bool tb);
TensorPtr linear(const Tensor &x, const Tensor &w, const Tensor *b);  // x [N,in], w [out,in]

// ---------------------------------------------------------------- loss and metrics

// Returns the scalar loss and the softmax probabilities.
std::tuple<TensorPtr, TensorPtr> cross_entropy_forward(const Tensor &logits, const Tensor &targets, double smoothing);
TensorPtr cross_entropy_backward(const Tensor &probs, const Tensor &targets, double smoothing, const Tensor &gloss);
TensorPtr topk(const Tensor &x, int64_t k);  // int32 [N, k]
TensorPtr argmax(const Tensor &x);           // int32 [N]

// ---------------------------------------------------------------- optimiser

void sgd_step(Tensor &param, const Tensor &grad, Tensor *momentum_buf, const SgdArgs &a);

// ---------------------------------------------------------------- runtime

// Live tensors and bytes on d's device type, after the queued kernels that hold references ran.
MemoryStats memory(Device d);
void synchronize(Device d);
// A JSON object describing the device (name, memory, driver and library versions).
std::string device_info(Device d);
int num_threads();
void set_num_threads(int64_t threads);
struct CpuFeatures {
  bool avx2 = false, fma = false, avx512f = false;
};
CpuFeatures cpu_features();

}  // namespace rx::ops
