#include "ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "backend.h"
#include "executor.h"

namespace rx::ops {

Shape broadcast_shapes(const std::string &op, const Shape &a, const Shape &b);

namespace {

std::string str(int64_t v) { return std::to_string(v); }

// A float dtype the tensor's device computes in: the CPU backend stores bfloat16 (cast, copy,
// fill) but computes in float32/float64, so bfloat16 there is refused here, at the call, instead
// of by the kernel at the next sync.
void check_compute_dtype(const std::string &op, const std::string &arg, DType dtype, Device device) {
  if (!dtype_is_float(dtype)) fail(ErrorCode::DType, op, arg, "float32 or float64", dtype_name(dtype));
  if (dtype == DType::BF16 && device.type == DeviceType::CPU)
    fail(ErrorCode::DType, op, arg, "float32 or float64 on the CPU (bfloat16 is computed on CUDA only; cast first)",
         "bfloat16");
}

void check_float(const std::string &op, const std::string &arg, const Tensor &t) {
  check_compute_dtype(op, arg, t.dtype(), t.device());
}

void check_same_dtype(const std::string &op, const std::string &arg, const Tensor &t, DType want) {
  if (t.dtype() != want)
    fail(ErrorCode::DType, op, arg, std::string(dtype_name(want)) + " (the dtype of the input)", dtype_name(t.dtype()));
}

void check_same_device(const std::string &op, const std::string &arg, const Tensor &t, Device want) {
  if (t.device() != want)
    fail(ErrorCode::Device, op, arg, "a tensor on " + want.str() + " (the device of the input)", t.device().str());
}

void check_like(const std::string &op, const std::string &arg, const Tensor &t, const Tensor &ref) {
  check_same_device(op, arg, t, ref.device());
  check_same_dtype(op, arg, t, ref.dtype());
}

void check_ndim(const std::string &op, const std::string &arg, const Tensor &t, int nd, const char *what) {
  if (t.ndim() != nd)
    fail(ErrorCode::Shape, op, arg, std::to_string(nd) + "-D " + what, shape_str(t.shape()));
}

void check_shape(const std::string &op, const std::string &arg, const Tensor &t, const Shape &want) {
  if (t.shape() != want) fail(ErrorCode::Shape, op, arg, "shape " + shape_str(want), shape_str(t.shape()));
}

void check_shape_valid(const std::string &op, const Shape &s, DType dtype = DType::F64) {
  for (size_t i = 0; i < s.size(); i++)
    if (s[i] < 0)
      fail(ErrorCode::Shape, op, "shape", "non-negative sizes", shape_str(s));
  if (checked_numel(s, dtype_size(dtype)) < 0)
    fail(ErrorCode::OOM, op, "shape", "a tensor of at most " + std::to_string(kMaxTensorBytes >> 40) + " TiB",
         shape_str(s) + " (more bytes than that, or a count that overflows 64 bits)");
}

Backend &be(const Tensor &t) { return backend_for(t.device()); }

// Hands the kernel that writes `out` to the executor of out's device. The lambda captures copies
// of the Tensors it uses (sharing their storage), so the data stays alive even if JS disposes a
// handle first. An empty output needs no kernel: every op is defined on zero-size tensors here,
// before any kernel sees a zero extent (kernels may divide by one).
template <typename F>
void run(const Tensor &out, F &&fn) {
  if (out.numel() == 0) return;
  enqueue(out.device(), std::function<void()>(std::forward<F>(fn)), out.nbytes());
}

// out = value, for results defined without the kernel (a sum over nothing is 0, a mean NaN).
void fill_with(const TensorPtr &out, double value) {
  run(*out, [=] { be(*out).kernels().fill(*out, value); });
}

// out[n, k, ...] = bias[k] (or 0 without bias): a convolution or linear layer over zero inputs.
void fill_with_bias(const TensorPtr &out, const Tensor *b) {
  if (!b) return fill_with(out, 0);
  Shape bs(out->ndim(), 1);
  bs[1] = b->numel();
  auto bv = std::make_shared<Tensor>(bs, b->dtype(), b->storage());
  run(*out, [=] { be(*out).kernels().expand(*bv, *out); });
}

void check_finite(const std::string &op, const std::string &arg, double v) {
  if (!std::isfinite(v)) fail(ErrorCode::Arg, op, arg, "a finite number", std::to_string(v));
}

// A value stored into an int32 tensor must be one (float tensors take inf and nan, IEEE).
void check_storable(const std::string &op, const std::string &arg, DType dt, double v) {
  if (dt == DType::I32 && !(v >= -2147483648.0 && v <= 2147483647.0))
    fail(ErrorCode::Arg, op, arg, "a number in the int32 range for an int32 tensor", std::to_string(v));
}

std::optional<Tensor> opt(const Tensor *t) { return t ? std::optional<Tensor>(*t) : std::nullopt; }
const Tensor *ptr(const std::optional<Tensor> &t) { return t ? &*t : nullptr; }
Tensor *ptr(std::optional<Tensor> &t) { return t ? &*t : nullptr; }

// Output size of a strided, padded window; throws if the window does not fit.
int64_t out_size(const std::string &op, const char *dim, int64_t in, int64_t k, int64_t stride, int64_t pad) {
  int64_t span = in + 2 * pad - k;
  if (span < 0)
    fail(ErrorCode::Shape, op, std::string("input ") + dim,
         "at least " + str(k - 2 * pad) + " (kernel " + str(k) + ", padding " + str(pad) + ")", str(in));
  return span / stride + 1;
}

void check_conv_args(const std::string &op, const Conv2dArgs &a) {
  if (a.stride_h < 1 || a.stride_w < 1)
    fail(ErrorCode::Arg, op, "stride", "integers >= 1", "[" + str(a.stride_h) + ", " + str(a.stride_w) + "]");
  if (a.pad_h < 0 || a.pad_w < 0)
    fail(ErrorCode::Arg, op, "padding", "integers >= 0", "[" + str(a.pad_h) + ", " + str(a.pad_w) + "]");
  if (a.groups < 1) fail(ErrorCode::Arg, op, "groups", "an integer >= 1", str(a.groups));
}

// Validates x [N,C,H,W] against w [K,C/g,R,S]; returns the output shape.
Shape conv_out_shape(const std::string &op, const Shape &x, const Shape &w, const Conv2dArgs &a) {
  check_conv_args(op, a);
  if (w[2] < 1 || w[3] < 1)
    fail(ErrorCode::Shape, op, "weight", "a kernel of at least 1x1 [K, C/groups, R >= 1, S >= 1]", shape_str(w));
  int64_t C = x[1], K = w[0];
  if (C % a.groups != 0)
    fail(ErrorCode::Arg, op, "groups", "a divisor of the input channels (" + str(C) + ")", str(a.groups));
  if (K % a.groups != 0)
    fail(ErrorCode::Arg, op, "groups", "a divisor of the output channels (" + str(K) + ")", str(a.groups));
  if (w[1] * a.groups != C)
    fail(ErrorCode::Shape, op, "weight", "[K, " + str(C / a.groups) + ", R, S] (input has " + str(C) + " channels, groups=" +
                                             str(a.groups) + ")",
         shape_str(w));
  int64_t P = out_size(op, "height", x[2], w[2], a.stride_h, a.pad_h);
  int64_t Q = out_size(op, "width", x[3], w[3], a.stride_w, a.pad_w);
  return {x[0], K, P, Q};
}

}  // namespace

// ---------------------------------------------------------------- creation and movement

namespace {
TensorPtr filled(const char *op, const Shape &shape, DType dtype, Device device, double value) {
  check_shape_valid(op, shape, dtype);  // value may be inf or nan, as in torch.full
  check_storable(op, "value", dtype, value);
  auto t = rx::empty(shape, dtype, device);
  run(*t, [=] { backend_for(device).kernels().fill(*t, value); });
  return t;
}
}  // namespace

TensorPtr full(const Shape &shape, DType dtype, Device device, double value) {
  return filled("full", shape, dtype, device, value);
}
TensorPtr zeros(const Shape &shape, DType dtype, Device device) { return filled("zeros", shape, dtype, device, 0); }
TensorPtr ones(const Shape &shape, DType dtype, Device device) { return filled("ones", shape, dtype, device, 1); }

TensorPtr empty(const Shape &shape, DType dtype, Device device) {
  check_shape_valid("empty", shape, dtype);
  return rx::empty(shape, dtype, device);
}

TensorPtr from_host(const void *data, size_t bytes, const Shape &shape, DType dtype, Device device) {
  check_shape_valid("tensor", shape, dtype);
  size_t want = shape_numel(shape) * dtype_size(dtype);
  if (bytes != want)
    fail(ErrorCode::Shape, "tensor", "data", str((int64_t)(want / dtype_size(dtype))) + " elements for shape " + shape_str(shape),
         str((int64_t)(bytes / dtype_size(dtype))) + " elements");
  auto host = std::make_shared<Tensor>(shape, dtype, Device{});
  if (bytes) std::memcpy(host->raw(), data, bytes);
  if (device.type == DeviceType::CPU) return host;
  auto t = rx::empty(shape, dtype, device);
  // A fresh host tensor no queued CPU kernel touches: the device backend uploads it on its own
  // stream, without draining the CPU queue.
  backend_for(device).kernels().copy(*host, *t);
  return t;
}

void to_host(const Tensor &t, void *dst, size_t bytes) {
  if (bytes != t.nbytes()) throw Error(ErrorCode::Internal, "to_host: size mismatch");
  cpu_executor().synchronize();  // the host reads: every queued CPU kernel must have run
  if (t.device().type == DeviceType::CPU) {
    if (bytes) std::memcpy(dst, t.raw(), bytes);
    return;
  }
  Tensor host(t.shape(), t.dtype(), Device{});
  enqueue_copy(t, host);  // a device download synchronises that device
  std::memcpy(dst, host.raw(), bytes);
}

namespace {
void check_random(const char *op, const Shape &shape, DType dtype, Device device, const char *a_name, double a,
                  const char *b_name, double b) {
  check_shape_valid(op, shape, dtype);
  check_compute_dtype(op, "dtype", dtype, device);
  check_finite(op, a_name, a);
  check_finite(op, b_name, b);
}
}  // namespace

TensorPtr rand(const Shape &shape, DType dtype, Device device, double low, double high, uint64_t seed,
               uint64_t offset) {
  check_random("rand", shape, dtype, device, "low", low, "high", high);
  auto t = rx::empty(shape, dtype, device);
  run(*t, [=] { backend_for(device).kernels().random_uniform(*t, low, high, seed, offset); });
  return t;
}

TensorPtr randn(const Shape &shape, DType dtype, Device device, double mean, double std, uint64_t seed,
                uint64_t offset) {
  check_random("randn", shape, dtype, device, "mean", mean, "std", std);
  auto t = rx::empty(shape, dtype, device);
  run(*t, [=] { backend_for(device).kernels().random_normal(*t, mean, std, seed, offset); });
  return t;
}

TensorPtr to(const Tensor &x, Device device) {
  auto t = rx::empty(x.shape(), x.dtype(), device);
  enqueue_copy(x, *t);
  return t;
}

void copy_(const Tensor &src, Tensor &dst) {
  check_same_dtype("copy_", "source", src, dst.dtype());
  check_shape("copy_", "source", src, dst.shape());
  enqueue_copy(src, dst);
}

void fill_(Tensor &t, double value) {
  check_storable("fill_", "value", t.dtype(), value);
  Tensor c = t;
  run(c, [=]() mutable { be(c).kernels().fill(c, value); });
}

TensorPtr cast(const Tensor &x, DType dtype) {
  auto t = rx::empty(x.shape(), dtype, x.device());
  run(*t, [=] { be(x).kernels().cast(x, *t); });
  return t;
}

TensorPtr reshape(const Tensor &x, const Shape &shape) {
  Shape s = shape;
  int infer = -1;
  int64_t known = 1;  // the product of the given sizes (0 as soon as one is 0, whatever follows)
  const bool has_zero = std::find(shape.begin(), shape.end(), 0) != shape.end();
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == -1) {
      if (infer >= 0) fail(ErrorCode::Shape, "reshape", "shape", "at most one -1", shape_str(shape));
      infer = (int)i;
    } else if (s[i] < 0) {
      fail(ErrorCode::Shape, "reshape", "shape", "non-negative sizes or a single -1", shape_str(shape));
    } else if (!has_zero && __builtin_mul_overflow(known, s[i], &known)) {
      fail(ErrorCode::Shape, "reshape", "shape", "a shape with " + str(x.numel()) + " elements", shape_str(shape));
    }
  }
  if (has_zero) known = 0;
  if (infer >= 0) {
    if (known == 0 || x.numel() % known != 0)
      fail(ErrorCode::Shape, "reshape", "shape", "a shape with " + str(x.numel()) + " elements", shape_str(shape));
    s[infer] = x.numel() / known;
  }
  if (checked_numel(s, dtype_size(x.dtype())) != x.numel())
    fail(ErrorCode::Shape, "reshape", "shape", "a shape with " + str(x.numel()) + " elements (input " + shape_str(x.shape()) + ")",
         shape_str(shape));
  if (x.layout() != Layout::Contiguous && s != x.shape()) {
    // A view of channels-last data would reinterpret it; make a contiguous copy first.
    auto c = rx::empty(x.shape(), x.dtype(), x.device());
    run(*c, [=] { be(x).kernels().copy(x, *c); });  // a copy into a fresh tensor is Contiguous
    return std::make_shared<Tensor>(s, c->dtype(), c->storage());
  }
  auto v = std::make_shared<Tensor>(s, x.dtype(), x.storage());
  v->set_layout(x.layout());
  return v;
}

TensorPtr permute(const Tensor &x, const std::vector<int64_t> &dims) {
  const std::vector<int> perm(dims.begin(), dims.end());
  if ((int)perm.size() != x.ndim())
    fail(ErrorCode::Arg, "permute", "dims", str(x.ndim()) + " axes", str((int64_t)perm.size()) + " axes");
  std::vector<bool> seen(perm.size(), false);
  Shape out(perm.size());
  for (size_t i = 0; i < perm.size(); i++) {
    int64_t p = dims[i];
    if (p < 0 || p >= x.ndim() || seen[p])
      fail(ErrorCode::Arg, "permute", "dims", "a permutation of 0.." + str(x.ndim() - 1), "axis " + str(p) + " at position " + str((int64_t)i));
    seen[p] = true;
    out[i] = x.dim(p);
  }
  auto t = rx::empty(out, x.dtype(), x.device());
  run(*t, [=] { be(x).kernels().permute(x, *t, perm); });
  return t;
}

TensorPtr expand(const Tensor &x, const Shape &shape) {
  Shape b = broadcast_shapes("expand", x.shape(), shape);
  if (b != shape) fail(ErrorCode::Shape, "expand", "shape", "a shape that " + shape_str(x.shape()) + " broadcasts to", shape_str(shape));
  auto t = rx::empty(shape, x.dtype(), x.device());
  run(*t, [=] { be(x).kernels().expand(x, *t); });
  return t;
}

// ---------------------------------------------------------------- convolution

namespace {
// The forward's input and weight checks (conv2d and the fused conv2d_bn_eval); the output shape.
Shape check_conv_forward(const std::string &op, const Tensor &x, const Tensor &w, const Conv2dArgs &a) {
  check_float(op, "input", x);
  check_ndim(op, "input", x, 4, "tensor [N, C, H, W]");
  check_like(op, "weight", w, x);
  check_ndim(op, "weight", w, 4, "tensor [K, C/groups, R, S]");
  return conv_out_shape(op, x.shape(), w.shape(), a);
}
}  // namespace

TensorPtr conv2d_forward(const Tensor &x, const Tensor &w, const Tensor *b, const Conv2dArgs &a) {
  const std::string op = "conv2d";
  Shape ys = check_conv_forward(op, x, w, a);
  if (b) {
    check_like(op, "bias", *b, x);
    check_shape(op, "bias", *b, {w.dim(0)});
  }
  auto y = rx::empty(ys, x.dtype(), x.device());
  if (x.dim(1) == 0) {  // no input channels: each output is its bias (PyTorch's answer)
    fill_with_bias(y, b);
    return y;
  }
  run(*y, [=, b = opt(b)] { be(x).kernels().conv2d_forward(x, w, ptr(b), *y, a); });
  return y;
}

TensorPtr conv2d_backward_data(const Tensor &gy, const Tensor &w, const Shape &x_shape, const Conv2dArgs &a) {
  const std::string op = "conv2d_backward_data";
  check_float(op, "grad_output", gy);
  check_like(op, "weight", w, gy);
  check_ndim(op, "weight", w, 4, "tensor [K, C/groups, R, S]");
  if (x_shape.size() != 4) fail(ErrorCode::Shape, op, "input_shape", "4 dims", shape_str(x_shape));
  check_shape(op, "grad_output", gy, conv_out_shape(op, x_shape, w.shape(), a));
  auto gx = rx::empty(x_shape, gy.dtype(), gy.device());
  if (gy.numel() == 0) {  // no output channels or positions: nothing flows back
    fill_with(gx, 0);
    return gx;
  }
  run(*gx, [=] { be(gy).kernels().conv2d_backward_data(gy, w, *gx, a); });
  return gx;
}

TensorPtr conv2d_backward_filter(const Tensor &gy, const Tensor &x, const Shape &w_shape, const Conv2dArgs &a) {
  const std::string op = "conv2d_backward_filter";
  check_float(op, "grad_output", gy);
  check_like(op, "input", x, gy);
  check_ndim(op, "input", x, 4, "tensor [N, C, H, W]");
  if (w_shape.size() != 4) fail(ErrorCode::Shape, op, "weight_shape", "4 dims", shape_str(w_shape));
  check_shape(op, "grad_output", gy, conv_out_shape(op, x.shape(), w_shape, a));
  auto gw = rx::empty(w_shape, gy.dtype(), gy.device());
  if (gy.numel() == 0 || x.numel() == 0) {  // an empty batch: the weight gradient sums nothing
    fill_with(gw, 0);
    return gw;
  }
  run(*gw, [=] { be(gy).kernels().conv2d_backward_filter(gy, x, *gw, a); });
  return gw;
}

// ---------------------------------------------------------------- batch norm

namespace {
const char *bn_name(BnAct act) {
  return act == BnAct::None ? "batchNorm2d" : act == BnAct::ReLU ? "batchNormReLU" : "batchNormAddReLU";
}
}  // namespace

// The batch norm's parameters, residual and scalars against an input of shape xs (x's dtype and
// device); shared by batch_norm_forward and the fused conv2d_bn_eval.
static void check_bn_params(const std::string &op, const Tensor &x, const Shape &xs, const Tensor &gamma, const Tensor &beta,
                     const Tensor *residual, const Tensor &running_mean, const Tensor &running_var,
                     const BatchNormArgs &a) {
  const int64_t C = xs[1];
  // Mixed precision: bfloat16 activations keep float32 BN parameters and statistics.
  DType pdt = x.dtype() == DType::BF16 ? DType::F32 : x.dtype();
  for (auto [name, t] : {std::pair<const char *, const Tensor *>{"weight", &gamma}, {"bias", &beta},
                         {"runningMean", &running_mean}, {"runningVar", &running_var}}) {
    check_same_device(op, name, *t, x.device());
    check_same_dtype(op, name, *t, pdt);
    check_shape(op, name, *t, {C});
  }
  if (a.act == BnAct::AddReLU) {
    if (!residual) fail(ErrorCode::Arg, op, "residual", "a tensor", "none");
    check_like(op, "residual", *residual, x);
    check_shape(op, "residual", *residual, xs);
  }
  if (!(a.eps > 0 && std::isfinite(a.eps))) fail(ErrorCode::Arg, op, "eps", "a positive finite number", std::to_string(a.eps));
  if (!(a.momentum >= 0 && a.momentum <= 1))
    fail(ErrorCode::Arg, op, "momentum", "a number in [0, 1]", std::to_string(a.momentum));
}

std::tuple<TensorPtr, TensorPtr, TensorPtr> batch_norm_forward(const Tensor &x, const Tensor &gamma,
                                                               const Tensor &beta, const Tensor *residual,
                                                               Tensor &running_mean, Tensor &running_var,
                                                               const BatchNormArgs &a) {
  const std::string op = bn_name(a.act);
  check_float(op, "input", x);
  check_ndim(op, "input", x, 4, "tensor [N, C, H, W]");
  int64_t C = x.dim(1);
  DType pdt = x.dtype() == DType::BF16 ? DType::F32 : x.dtype();
  check_bn_params(op, x, x.shape(), gamma, beta, residual, running_mean, running_var, a);
  if (a.training && C > 0 && x.numel() / C <= 1)
    fail(ErrorCode::Shape, op, "input", "more than one value per channel in training mode", shape_str(x.shape()));
  auto y = rx::empty(x.shape(), x.dtype(), x.device());
  auto sm = rx::empty({C}, pdt, x.device());
  auto si = rx::empty({C}, pdt, x.device());
  Tensor rm = running_mean, rv = running_var;
  if (y->numel() == 0) {  // eval over an empty batch (training refused it above): no statistics
    fill_with(sm, 0);
    fill_with(si, 0);
    return {y, sm, si};
  }
  run(*y, [=, r = opt(a.act == BnAct::AddReLU ? residual : nullptr)]() mutable {
    be(x).kernels().batch_norm_forward(x, gamma, beta, ptr(r), rm, rv, *y, *sm, *si, a);
  });
  return {y, sm, si};
}

TensorPtr conv2d_bn_eval(const Tensor &x, const Tensor &w, const Tensor &gamma, const Tensor &beta,
                         const Tensor &running_mean, const Tensor &running_var, const Tensor *residual,
                         const Conv2dArgs &ca, const BatchNormArgs &a) {
  const Shape ys = check_conv_forward("conv2d", x, w, ca);
  const std::string bop = bn_name(a.act);
  if (a.training) fail(ErrorCode::Arg, bop, "training", "false (the fused inference op uses running statistics)", "true");
  check_bn_params(bop, x, ys, gamma, beta, residual, running_mean, running_var, a);
  const Kernels &k = be(x).kernels();
  const bool fused = k.conv2d_bn_eval.fn != &decltype(k.conv2d_bn_eval)::missing && x.dtype() != DType::BF16 &&
                     x.dim(1) > 0 && shape_numel(ys) > 0;
  if (!fused) {  // the two ops one after the other (a backend without the kernel, bf16, empty shapes)
    auto c = conv2d_forward(x, w, nullptr, ca);
    Tensor rm = running_mean, rv = running_var;
    return std::get<0>(batch_norm_forward(*c, gamma, beta, residual, rm, rv, a));
  }
  auto y = rx::empty(ys, x.dtype(), x.device());
  run(*y, [=, r = opt(a.act == BnAct::AddReLU ? residual : nullptr)] {
    be(x).kernels().conv2d_bn_eval(x, w, gamma, beta, running_mean, running_var, ptr(r), *y, ca, a);
  });
  return y;
}

std::tuple<TensorPtr, TensorPtr, TensorPtr, OptionalTensor> batch_norm_backward(
    const Tensor &gy, const Tensor &x, const Tensor &y, const Tensor &gamma, const Tensor &save_mean,
    const Tensor &save_invstd, const BatchNormArgs &a) {
  const std::string op = std::string(bn_name(a.act)) + "_backward";
  check_float(op, "grad_output", gy);
  check_ndim(op, "input", x, 4, "tensor [N, C, H, W]");
  check_like(op, "input", x, gy);
  check_shape(op, "grad_output", gy, x.shape());
  check_shape(op, "output", y, x.shape());
  int64_t C = x.dim(1);
  check_shape(op, "weight", gamma, {C});
  check_shape(op, "saveMean", save_mean, {C});
  check_shape(op, "saveInvstd", save_invstd, {C});
  const DType pdt = x.dtype() == DType::BF16 ? DType::F32 : x.dtype();
  check_like(op, "output", y, x);
  for (auto [name, t] : {std::pair<const char *, const Tensor *>{"weight", &gamma}, {"saveMean", &save_mean},
                         {"saveInvstd", &save_invstd}}) {
    check_same_device(op, name, *t, x.device());
    check_same_dtype(op, name, *t, pdt);
  }
  auto gx = rx::empty(x.shape(), x.dtype(), x.device());
  auto gg = rx::empty({C}, gamma.dtype(), x.device());
  auto gb = rx::empty({C}, gamma.dtype(), x.device());
  TensorPtr gr = a.act == BnAct::AddReLU ? rx::empty(x.shape(), x.dtype(), x.device()) : nullptr;
  if (x.numel() == 0) {  // an empty batch: the parameter gradients sum nothing
    fill_with(gg, 0);
    fill_with(gb, 0);
    return {gx, gg, gb, OptionalTensor{gr}};
  }
  run(*gx, [=] { be(x).kernels().batch_norm_backward(gy, x, y, gamma, save_mean, save_invstd, *gx, *gg, *gb, gr.get(), a); });
  return {gx, gg, gb, OptionalTensor{gr}};
}

// ---------------------------------------------------------------- elementwise

TensorPtr relu(const Tensor &x) {
  check_float("relu", "input", x);
  auto y = rx::empty(x.shape(), x.dtype(), x.device());
  run(*y, [=] { be(x).kernels().relu_forward(x, *y); });
  return y;
}

TensorPtr relu_backward(const Tensor &gy, const Tensor &y) {
  check_like("relu_backward", "output", y, gy);
  check_shape("relu_backward", "output", y, gy.shape());
  auto gx = rx::empty(gy.shape(), gy.dtype(), gy.device());
  run(*gx, [=] { be(gy).kernels().relu_backward(gy, y, *gx); });
  return gx;
}

Shape broadcast_shapes(const std::string &op, const Shape &a, const Shape &b) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; i++) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      fail(ErrorCode::Shape, op, "shapes", "broadcastable shapes (sizes equal or 1 in each axis)",
           shape_str(a) + " and " + shape_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

TensorPtr binary(BinaryOp op, const Tensor &a, const Tensor &b) {
  const std::string name = enum_name(op);
  check_float(name, "a", a);
  check_like(name, "b", b, a);
  auto out = rx::empty(broadcast_shapes(name, a.shape(), b.shape()), a.dtype(), a.device());
  run(*out, [=] { be(a).kernels().binary(op, a, b, *out); });
  return out;
}

TensorPtr scalar(ScalarOp op, const Tensor &x, double s) {
  // The public op: rsub is sub(s, x), rdiv is div(s, x).
  const std::string name = op == ScalarOp::RSub ? "sub" : op == ScalarOp::RDiv ? "div" : enum_name(op);
  check_float(name, "input", x);  // s may be inf or nan: IEEE arithmetic, as in PyTorch
  auto out = rx::empty(x.shape(), x.dtype(), x.device());
  run(*out, [=] { be(x).kernels().scalar(op, x, s, *out); });
  return out;
}

TensorPtr unary(UnaryOp op, const Tensor &x) {
  check_float(enum_name(op), "input", x);
  auto out = rx::empty(x.shape(), x.dtype(), x.device());
  run(*out, [=] { be(x).kernels().unary(op, x, *out); });
  return out;
}

TensorPtr sum(const Tensor &x, const std::vector<int64_t> &dims, bool keepdim) {
  check_float("sum", "input", x);
  std::vector<bool> reduce(x.ndim(), dims.empty());
  for (int64_t d : dims) {
    int64_t dd = d < 0 ? d + x.ndim() : d;
    if (dd < 0 || dd >= x.ndim())
      fail(ErrorCode::Arg, "sum", "dims", "axes in [" + str(-x.ndim()) + ", " + str(x.ndim() - 1) + "]", str(d));
    reduce[dd] = true;
  }
  Shape ks(x.ndim()), out;
  for (int i = 0; i < x.ndim(); i++) {
    ks[i] = reduce[i] ? 1 : x.dim(i);
    if (!reduce[i] || keepdim) out.push_back(ks[i]);
  }
  auto t = rx::empty(ks, x.dtype(), x.device());
  if (x.numel() == 0) fill_with(t, 0);  // a sum over nothing is 0
  else run(*t, [=] { be(x).kernels().sum(x, reduce, *t); });
  return keepdim ? t : reshape(*t, out);
}

// ---------------------------------------------------------------- pooling

std::tuple<TensorPtr, TensorPtr> max_pool2d_forward(const Tensor &x, const Pool2dArgs &a) {
  const std::string op = "maxPool2d";
  check_float(op, "input", x);
  check_ndim(op, "input", x, 4, "tensor [N, C, H, W]");
  if (a.kh < 1 || a.kw < 1) fail(ErrorCode::Arg, op, "kernelSize", "integers >= 1", str(a.kh) + "x" + str(a.kw));
  if (a.sh < 1 || a.sw < 1) fail(ErrorCode::Arg, op, "stride", "integers >= 1", str(a.sh) + "x" + str(a.sw));
  if (a.ph < 0 || a.pw < 0 || 2 * a.ph > a.kh || 2 * a.pw > a.kw)
    fail(ErrorCode::Arg, op, "padding", "between 0 and half the kernel size", str(a.ph) + "x" + str(a.pw));
  int64_t P = out_size(op, "height", x.dim(2), a.kh, a.sh, a.ph);
  int64_t Q = out_size(op, "width", x.dim(3), a.kw, a.sw, a.pw);
  auto y = rx::empty({x.dim(0), x.dim(1), P, Q}, x.dtype(), x.device());
  auto idx = rx::empty({x.dim(0), x.dim(1), P, Q}, DType::I32, x.device());
  run(*y, [=] { be(x).kernels().max_pool2d_forward(x, *y, *idx, a); });
  return {y, idx};
}

TensorPtr max_pool2d_backward(const Tensor &gy, const Tensor &indices, const Shape &x_shape) {
  const std::string op = "maxPool2d_backward";
  check_float(op, "grad_output", gy);
  check_ndim(op, "grad_output", gy, 4, "tensor [N, C, P, Q]");
  check_shape(op, "indices", indices, gy.shape());
  check_same_device(op, "indices", indices, gy.device());
  if (indices.dtype() != DType::I32) fail(ErrorCode::DType, op, "indices", "int32", dtype_name(indices.dtype()));
  if (x_shape.size() != 4 || x_shape[0] != gy.dim(0) || x_shape[1] != gy.dim(1))
    fail(ErrorCode::Shape, op, "input_shape", "[" + str(gy.dim(0)) + ", " + str(gy.dim(1)) + ", H, W]", shape_str(x_shape));
  // Index values are data: the kernels skip any outside [0, H*W) rather than trust them.
  auto gx = rx::empty(x_shape, gy.dtype(), gy.device());
  if (gy.numel() == 0) fill_with(gx, 0);
  else run(*gx, [=] { be(gy).kernels().max_pool2d_backward(gy, indices, *gx); });
  return gx;
}

TensorPtr global_avg_pool2d_forward(const Tensor &x) {
  check_float("globalAvgPool2d", "input", x);
  check_ndim("globalAvgPool2d", "input", x, 4, "tensor [N, C, H, W]");
  auto y = rx::empty({x.dim(0), x.dim(1), 1, 1}, x.dtype(), x.device());
  if (x.numel() == 0) fill_with(y, std::nan(""));  // the mean of nothing (PyTorch: nan)
  else run(*y, [=] { be(x).kernels().global_avg_pool2d_forward(x, *y); });
  return y;
}

TensorPtr global_avg_pool2d_backward(const Tensor &gy, const Shape &x_shape) {
  const std::string op = "globalAvgPool2d_backward";
  check_float(op, "grad_output", gy);
  if (x_shape.size() != 4) fail(ErrorCode::Shape, op, "input_shape", "4 dims [N, C, H, W]", shape_str(x_shape));
  check_shape(op, "grad_output", gy, {x_shape[0], x_shape[1], 1, 1});
  auto gx = rx::empty(x_shape, gy.dtype(), gy.device());
  run(*gx, [=] { be(gy).kernels().global_avg_pool2d_backward(gy, *gx); });
  return gx;
}

// ---------------------------------------------------------------- dense

TensorPtr matmul(const Tensor &a, const Tensor &b, bool ta, bool tb) {
  check_float("matmul", "a", a);
  check_ndim("matmul", "a", a, 2, "matrix");
  check_like("matmul", "b", b, a);
  check_ndim("matmul", "b", b, 2, "matrix");
  int64_t M = ta ? a.dim(1) : a.dim(0), K = ta ? a.dim(0) : a.dim(1);
  int64_t K2 = tb ? b.dim(1) : b.dim(0), N = tb ? b.dim(0) : b.dim(1);
  if (K != K2)
    fail(ErrorCode::Shape, "matmul", "b", "a matrix with " + str(K) + " rows (after transpose)",
         shape_str(b.shape()) + (tb ? " (transposed)" : ""));
  auto out = rx::empty({M, N}, a.dtype(), a.device());
  if (K == 0) fill_with(out, 0);  // an inner dimension of 0: every dot product is empty
  else run(*out, [=] { be(a).kernels().matmul(a, b, ta, tb, nullptr, *out); });
  return out;
}

TensorPtr linear(const Tensor &x, const Tensor &w, const Tensor *b) {
  const std::string op = "linear";
  check_float(op, "input", x);
  check_ndim(op, "input", x, 2, "matrix [N, in]");
  check_like(op, "weight", w, x);
  check_ndim(op, "weight", w, 2, "matrix [out, in]");
  if (w.dim(1) != x.dim(1))
    fail(ErrorCode::Shape, op, "weight", "[out, " + str(x.dim(1)) + "] (input has " + str(x.dim(1)) + " features)",
         shape_str(w.shape()));
  if (b) {
    check_like(op, "bias", *b, x);
    check_shape(op, "bias", *b, {w.dim(0)});
  }
  auto y = rx::empty({x.dim(0), w.dim(0)}, x.dtype(), x.device());
  if (x.dim(1) == 0) fill_with_bias(y, b);  // no input features: each output is its bias
  else run(*y, [=, b = opt(b)] { be(x).kernels().matmul(x, w, false, true, ptr(b), *y); });
  return y;
}

// ---------------------------------------------------------------- loss and metrics

namespace {
void check_targets(const std::string &op, const Tensor &logits, const Tensor &targets) {
  if (targets.dtype() != DType::I32) fail(ErrorCode::DType, op, "targets", "int32 class indices", dtype_name(targets.dtype()));
  check_same_device(op, "targets", targets, logits.device());
  check_shape(op, "targets", targets, {logits.dim(0)});
}
}  // namespace

std::tuple<TensorPtr, TensorPtr> cross_entropy_forward(const Tensor &logits, const Tensor &targets,
                                                       double smoothing) {
  const std::string op = "crossEntropy";
  check_float(op, "logits", logits);
  check_ndim(op, "logits", logits, 2, "matrix [N, classes]");
  check_targets(op, logits, targets);
  if (logits.dim(0) < 1 || logits.dim(1) < 1) fail(ErrorCode::Shape, op, "logits", "at least one row and one class", shape_str(logits.shape()));
  if (!(smoothing >= 0 && smoothing <= 1))
    fail(ErrorCode::Arg, op, "labelSmoothing", "a number in [0, 1]", std::to_string(smoothing));
  // Class indices are range-checked by the kernel (an error surfaces at the next sync); the JS
  // layer checks arrays before they become tensors, so the common case fails at the call.
  auto loss = rx::empty({}, logits.dtype(), logits.device());
  auto probs = rx::empty(logits.shape(), logits.dtype(), logits.device());
  run(*probs, [=] { be(logits).kernels().cross_entropy_forward(logits, targets, smoothing, *loss, *probs); });
  return {loss, probs};
}

TensorPtr cross_entropy_backward(const Tensor &probs, const Tensor &targets, double smoothing,
                                 const Tensor &gloss) {
  const std::string op = "crossEntropy_backward";
  check_float(op, "probs", probs);
  check_ndim(op, "probs", probs, 2, "matrix [N, classes]");
  check_targets(op, probs, targets);
  check_like(op, "grad_output", gloss, probs);
  check_shape(op, "grad_output", gloss, {});
  if (!(smoothing >= 0 && smoothing <= 1))
    fail(ErrorCode::Arg, op, "labelSmoothing", "a number in [0, 1]", std::to_string(smoothing));
  auto g = rx::empty(probs.shape(), probs.dtype(), probs.device());
  run(*g, [=] { be(probs).kernels().cross_entropy_backward(probs, targets, smoothing, gloss, *g); });
  return g;
}

namespace {
TensorPtr top_indices(const char *op, const Tensor &x, int64_t k) {
  check_float(op, "input", x);
  check_ndim(op, "input", x, 2, "matrix [N, classes]");
  if (k < 1 || k > x.dim(1)) fail(ErrorCode::Arg, op, "k", "an integer in [1, " + str(x.dim(1)) + "]", str(k));
  auto idx = rx::empty({x.dim(0), k}, DType::I32, x.device());
  run(*idx, [=] { be(x).kernels().topk(x, k, *idx); });
  return idx;
}
}  // namespace

TensorPtr topk(const Tensor &x, int64_t k) { return top_indices("topk", x, k); }

TensorPtr argmax(const Tensor &x) {
  auto idx = top_indices("argmax", x, 1);
  return reshape(*idx, {x.dim(0)});
}

// ---------------------------------------------------------------- optimiser

void sgd_step(Tensor &param, const Tensor &grad, Tensor *momentum_buf, const SgdArgs &a) {
  const std::string op = "sgdStep";
  for (auto [name, v] : {std::pair<const char *, double>{"lr", a.lr}, {"momentum", a.momentum}, {"dampening", a.dampening},
                         {"weightDecay", a.weight_decay}})
    check_finite(op, name, v);
  check_float(op, "param", param);
  check_like(op, "grad", grad, param);
  check_shape(op, "grad", grad, param.shape());
  if (momentum_buf) {
    check_like(op, "momentumBuffer", *momentum_buf, param);
    check_shape(op, "momentumBuffer", *momentum_buf, param.shape());
  }
  if (a.momentum != 0 && !momentum_buf) fail(ErrorCode::Arg, op, "momentumBuffer", "a tensor when momentum != 0", "none");
  if (a.nesterov && (a.momentum <= 0 || a.dampening != 0))
    fail(ErrorCode::Arg, op, "nesterov", "momentum > 0 and dampening = 0", "momentum " + std::to_string(a.momentum) + ", dampening " + std::to_string(a.dampening));
  Tensor p = param;
  run(p, [=, m = opt(momentum_buf)]() mutable { be(p).kernels().sgd_step(p, grad, ptr(m), a); });
}

// ---------------------------------------------------------------- runtime

MemoryStats memory(Device d) {
  cpu_executor().synchronize();  // queued kernels hold references until they run
  return memory_stats(d);
}

void synchronize(Device d) { rx::synchronize(d); }

std::string device_info(Device d) { return backend_for(d).device_info_json(); }

int num_threads() { return cpu_backend().num_threads(); }

void set_num_threads(int64_t threads) {
  if (threads < 1 || threads > 1024)
    fail(ErrorCode::Arg, "setNumThreads", "threads", "an integer in [1, 1024]", str(threads));
  cpu_executor().synchronize();  // running kernels keep the pool they started with
  cpu_backend().set_num_threads((int)threads);
}

CpuFeatures cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
#endif
  return f;
}

}  // namespace rx::ops
