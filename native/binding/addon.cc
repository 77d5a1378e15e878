// The N-API binding: the only code that includes napi.h. It converts JS arguments to core
// types (rejecting bad ones with ERR_ARG / ERR_SHAPE before the core sees them), wraps core
// tensors in TensorHandle objects, and turns every C++ exception into an instance of the JS
// error class that lib/ registers (with a stable `code`). State lives in per-environment
// instance data (no static JS handles), so worker_threads and jest workers behave.
#include <napi.h>

#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "../core/backend.h"
#include "../core/executor.h"
#include "../core/cpu/parallel.h"
#include "../core/ops.h"

namespace {

using rx::Device;
using rx::DType;
using rx::ErrorCode;
using rx::Shape;
using rx::Tensor;
using rx::TensorPtr;

struct AddonData {
  Napi::FunctionReference tensor_ctor;
  Napi::FunctionReference error_class;
};

AddonData &addon(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

// Raise a JS error with a stable code, through the registered error class when there is one.
[[noreturn]] void throw_js(Napi::Env env, const std::string &code, const std::string &msg) {
  AddonData &d = addon(env);
  if (!d.error_class.IsEmpty()) {
    Napi::Value err = d.error_class.New({Napi::String::New(env, msg), Napi::String::New(env, code)});
    throw Napi::Error(env, err);
  }
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  throw e;
}

[[noreturn]] void arg_error(Napi::Env env, const std::string &op, const std::string &arg, const std::string &expected,
                            const std::string &received) {
  throw_js(env, "ERR_ARG", op + ": " + arg + " expected " + expected + ", received " + received);
}

std::string describe(Napi::Value v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsNumber()) return std::to_string(v.As<Napi::Number>().DoubleValue());
  if (v.IsString()) return "\"" + v.As<Napi::String>().Utf8Value() + "\"";
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? "true" : "false";
  if (v.IsArray()) return "an array";
  if (v.IsTypedArray()) return "a typed array";
  if (v.IsFunction()) return "a function";
  return "an object";
}

// ------------------------------------------------------------------ TensorHandle

class TensorHandle : public Napi::ObjectWrap<TensorHandle> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "TensorHandle",
                       {InstanceAccessor<&TensorHandle::GetShape>("shape"),
                        InstanceAccessor<&TensorHandle::GetDType>("dtype"),
                        InstanceAccessor<&TensorHandle::GetDevice>("device"),
                        InstanceAccessor<&TensorHandle::GetDisposed>("disposed"),
                        InstanceAccessor<&TensorHandle::GetNBytes>("nbytes"),
                        InstanceMethod<&TensorHandle::Dispose>("dispose"),
                        InstanceMethod<&TensorHandle::SharesStorage>("sharesStorage")});
  }

  explicit TensorHandle(const Napi::CallbackInfo &info) : Napi::ObjectWrap<TensorHandle>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw_js(info.Env(), "ERR_ARG", "TensorHandle: tensors are created by resnext functions, not with new");
    auto *p = info[0].As<Napi::External<TensorPtr>>().Data();
    t_ = std::move(*p);
    delete p;
  }

  static Napi::Object Wrap(Napi::Env env, TensorPtr t) {
    auto *p = new TensorPtr(std::move(t));
    return addon(env).tensor_ctor.New({Napi::External<TensorPtr>::New(env, p)});
  }

  Tensor &get(Napi::Env env, const std::string &op, const std::string &arg) {
    if (!t_) throw_js(env, "ERR_DISPOSED", op + ": " + arg + " expected a live tensor, received a disposed tensor");
    return *t_;
  }
  const TensorPtr &ptr() const { return t_; }

 private:
  Napi::Value GetShape(const Napi::CallbackInfo &info) {
    Tensor &t = get(info.Env(), "shape", "tensor");
    auto arr = Napi::Array::New(info.Env(), t.ndim());
    for (int i = 0; i < t.ndim(); i++) arr.Set(i, Napi::Number::New(info.Env(), (double)t.dim(i)));
    return arr;
  }
  Napi::Value GetDType(const Napi::CallbackInfo &info) {
    return Napi::String::New(info.Env(), rx::dtype_name(get(info.Env(), "dtype", "tensor").dtype()));
  }
  Napi::Value GetDevice(const Napi::CallbackInfo &info) {
    Device d = get(info.Env(), "device", "tensor").device();
    return Napi::String::New(info.Env(), d.type == rx::DeviceType::CPU ? "cpu" : "cuda");
  }
  Napi::Value GetDisposed(const Napi::CallbackInfo &info) { return Napi::Boolean::New(info.Env(), !t_); }
  Napi::Value GetNBytes(const Napi::CallbackInfo &info) {
    return Napi::Number::New(info.Env(), t_ ? (double)t_->nbytes() : 0);
  }
  Napi::Value Dispose(const Napi::CallbackInfo &info) {
    t_.reset();
    return info.Env().Undefined();
  }
  Napi::Value SharesStorage(const Napi::CallbackInfo &info);

  TensorPtr t_;
};

TensorHandle *unwrap_handle(Napi::Env env, Napi::Value v, const std::string &op, const std::string &arg) {
  if (v.IsObject()) {
    Napi::Object o = v.As<Napi::Object>();
    if (o.InstanceOf(addon(env).tensor_ctor.Value())) return TensorHandle::Unwrap(o);
  }
  arg_error(env, op, arg, "a tensor", describe(v));
}

Napi::Value TensorHandle::SharesStorage(const Napi::CallbackInfo &info) {
  Tensor &a = get(info.Env(), "sharesStorage", "tensor");
  Tensor &b = unwrap_handle(info.Env(), info[0], "sharesStorage", "other")->get(info.Env(), "sharesStorage", "other");
  return Napi::Boolean::New(info.Env(), a.storage() == b.storage());
}

// ------------------------------------------------------------------ argument conversion

struct Args {
  const Napi::CallbackInfo &info;
  std::string op;
  Napi::Env env() const { return info.Env(); }

  Tensor &tensor(size_t i, const char *name) const {
    return unwrap_handle(env(), info[i], op, name)->get(env(), op, name);
  }
  const Tensor *opt_tensor(size_t i, const char *name) const {
    if (info[i].IsNull() || info[i].IsUndefined()) return nullptr;
    return &tensor(i, name);
  }
  Tensor *opt_tensor_mut(size_t i, const char *name) const { return const_cast<Tensor *>(opt_tensor(i, name)); }
  double number(size_t i, const char *name) const {
    if (!info[i].IsNumber()) arg_error(env(), op, name, "a number", describe(info[i]));
    double v = info[i].As<Napi::Number>().DoubleValue();
    if (!std::isfinite(v)) arg_error(env(), op, name, "a finite number", describe(info[i]));
    return v;
  }
  int64_t integer(size_t i, const char *name) const {
    double v = info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : NAN;
    if (!std::isfinite(v) || std::floor(v) != v || std::fabs(v) > 9007199254740991.0)
      arg_error(env(), op, name, "an integer", describe(info[i]));
    return (int64_t)v;
  }
  bool boolean(size_t i, const char *name) const {
    if (!info[i].IsBoolean()) arg_error(env(), op, name, "a boolean", describe(info[i]));
    return info[i].As<Napi::Boolean>().Value();
  }
  std::vector<int64_t> ints(size_t i, const char *name) const {
    if (!info[i].IsArray()) arg_error(env(), op, name, "an array of integers", describe(info[i]));
    Napi::Array a = info[i].As<Napi::Array>();
    std::vector<int64_t> out(a.Length());
    for (uint32_t k = 0; k < a.Length(); k++) {
      Napi::Value v = a.Get(k);
      double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
      if (!std::isfinite(d) || std::floor(d) != d || std::fabs(d) > 9007199254740991.0)
        arg_error(env(), op, name, "an array of integers", "element " + std::to_string(k) + " = " + describe(v));
      out[k] = (int64_t)d;
    }
    return out;
  }
  Shape shape(size_t i, const char *name) const { return ints(i, name); }
  std::pair<int64_t, int64_t> pair(size_t i, const char *name) const {
    auto v = ints(i, name);
    if (v.size() != 2) arg_error(env(), op, name, "two integers [h, w]", std::to_string(v.size()) + " values");
    return {v[0], v[1]};
  }
  DType dtype(size_t i) const {
    std::string s = info[i].IsString() ? info[i].As<Napi::String>().Utf8Value() : "";
    if (s == "float32") return DType::F32;
    if (s == "float64") return DType::F64;
    if (s == "int32") return DType::I32;
    if (s == "bfloat16") return DType::BF16;
    throw_js(env(), "ERR_DTYPE", op + ": dtype expected \"float32\", \"float64\", \"int32\" or \"bfloat16\", received " + describe(info[i]));
  }
  Device device(size_t i) const {
    std::string s = info[i].IsString() ? info[i].As<Napi::String>().Utf8Value() : "";
    if (s == "cpu") return {};
    if (s == "cuda" || s == "cuda:0") return {rx::DeviceType::CUDA, 0};
    throw_js(env(), "ERR_DEVICE", op + ": device expected \"cpu\" or \"cuda\", received " + describe(info[i]));
  }
};

Napi::Value wrap(Napi::Env env, TensorPtr t) {
  if (!t) return env.Null();
  return TensorHandle::Wrap(env, std::move(t));
}

template <typename... Ts>
Napi::Value wrap_all(Napi::Env env, Ts... ts) {
  Napi::Array a = Napi::Array::New(env, sizeof...(Ts));
  uint32_t i = 0;
  (a.Set(i++, wrap(env, ts)), ...);
  return a;
}

// Runs body, converting core exceptions into JS errors.
template <typename F>
Napi::Value guarded(const Napi::CallbackInfo &info, F body) {
  Napi::Env env = info.Env();
  try {
    return body();
  } catch (const Napi::Error &) {
    throw;
  } catch (const rx::Error &e) {
    throw_js(env, rx::error_code_name(e.code()), e.what());
  } catch (const std::bad_alloc &) {
    throw_js(env, "ERR_OOM", "out of host memory");
  } catch (const std::exception &e) {
    throw_js(env, "ERR_INTERNAL", std::string("internal error: ") + e.what());
  }
}

#define RX_FN(name) Napi::Value name(const Napi::CallbackInfo &info)
#define RX_BODY(opname) \
  Args A{info, opname}; \
  return guarded(info, [&]() -> Napi::Value

rx::Conv2dArgs conv_args(const Args &A, size_t i) {
  rx::Conv2dArgs c;
  std::tie(c.stride_h, c.stride_w) = A.pair(i, "stride");
  std::tie(c.pad_h, c.pad_w) = A.pair(i + 1, "padding");
  c.groups = A.integer(i + 2, "groups");
  return c;
}

rx::BatchNormArgs bn_args(const Args &A, size_t i) {
  rx::BatchNormArgs b;
  b.training = A.boolean(i, "training");
  b.momentum = A.number(i + 1, "momentum");
  b.eps = A.number(i + 2, "eps");
  int64_t act = A.integer(i + 3, "act");
  if (act < 0 || act > 2) arg_error(A.env(), A.op, "act", "0, 1 or 2", std::to_string(act));
  b.act = (rx::BnAct)act;
  return b;
}

// ------------------------------------------------------------------ exports

RX_FN(SetErrorClass) {
  if (!info[0].IsFunction()) arg_error(info.Env(), "setErrorClass", "ctor", "a function", describe(info[0]));
  addon(info.Env()).error_class = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

RX_FN(FromData) {
  RX_BODY("tensor") {
    if (!info[0].IsTypedArray()) arg_error(A.env(), A.op, "data", "a typed array", describe(info[0]));
    Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
    DType dt = A.dtype(2);
    napi_typedarray_type want = dt == DType::F32 ? napi_float32_array : dt == DType::F64 ? napi_float64_array : napi_int32_array;
    if (ta.TypedArrayType() != want)
      throw_js(A.env(), "ERR_DTYPE", "tensor: data expected a typed array matching dtype " + std::string(rx::dtype_name(dt)) + ", received another kind");
    const uint8_t *p = static_cast<const uint8_t *>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    return wrap(A.env(), rx::ops::from_host(p, ta.ByteLength(), A.shape(1, "shape"), dt, A.device(3)));
  });
}

RX_FN(ReadData) {
  RX_BODY("data") {
    Tensor &t = A.tensor(0, "tensor");
    size_t n = (size_t)t.numel();
    Napi::Env env = A.env();
    Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, t.nbytes());
    rx::ops::to_host(t, buf.Data(), t.nbytes());
    if (t.dtype() == DType::BF16)
      throw_js(env, "ERR_DTYPE", "data: tensor expected float32, float64 or int32 (cast bfloat16 tensors first), received bfloat16");
    if (t.dtype() == DType::F32) return Napi::Float32Array::New(env, n, buf, 0);
    if (t.dtype() == DType::F64) return Napi::Float64Array::New(env, n, buf, 0);
    return Napi::Int32Array::New(env, n, buf, 0);
  });
}

// data(): waits for the tensor's queued kernels and copies it to the host on a libuv worker
// thread, then resolves a Promise with a typed array; the event loop runs meanwhile.
class ReadWorker : public Napi::AsyncWorker {
 public:
  ReadWorker(Napi::Env env, TensorPtr t)
      : Napi::AsyncWorker(env, "resnext.data"), t_(std::move(t)), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      buf_.resize(t_->nbytes());
      rx::ops::to_host(*t_, buf_.data(), buf_.size());
    } catch (const rx::Error &e) {
      code_ = rx::error_code_name(e.code());
      SetError(e.what());
    } catch (const std::bad_alloc &) {
      code_ = "ERR_OOM";
      SetError("data: out of host memory");
    } catch (const std::exception &e) {
      code_ = "ERR_INTERNAL";
      SetError(e.what());
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    size_t n = (size_t)t_->numel();
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, buf_.size());
    if (!buf_.empty()) std::memcpy(ab.Data(), buf_.data(), buf_.size());
    Napi::Value out;
    if (t_->dtype() == DType::F32) out = Napi::Float32Array::New(env, n, ab, 0);
    else if (t_->dtype() == DType::F64) out = Napi::Float64Array::New(env, n, ab, 0);
    else out = Napi::Int32Array::New(env, n, ab, 0);
    t_.reset();
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error &e) override {
    Napi::Env env = Env();
    AddonData &d = addon(env);
    std::string msg = e.Message();
    t_.reset();
    if (!d.error_class.IsEmpty())
      deferred_.Reject(d.error_class.New({Napi::String::New(env, msg), Napi::String::New(env, code_)}));
    else
      deferred_.Reject(e.Value());
  }

 private:
  TensorPtr t_;
  Napi::Promise::Deferred deferred_;
  std::vector<uint8_t> buf_;
  std::string code_ = "ERR_INTERNAL";
};

RX_FN(ReadDataAsync) {
  RX_BODY("data") {
    TensorHandle *h = unwrap_handle(A.env(), info[0], A.op, "tensor");
    Tensor &t = h->get(A.env(), A.op, "tensor");
    if (t.dtype() == DType::BF16)
      throw_js(A.env(), "ERR_DTYPE", "data: tensor expected float32, float64 or int32 (cast bfloat16 tensors first), received bfloat16");
    auto *w = new ReadWorker(A.env(), h->ptr());
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  });
}

RX_FN(Full) {
  RX_BODY("full") { return wrap(A.env(), rx::ops::full(A.shape(0, "shape"), A.dtype(1), A.device(2), A.number(3, "value"))); });
}

RX_FN(Empty) {
  RX_BODY("empty") {
    rx::Shape s = A.shape(0, "shape");
    for (auto d : s)
      if (d < 0) throw_js(A.env(), "ERR_SHAPE", "empty: shape expected non-negative sizes, received " + rx::shape_str(s));
    return wrap(A.env(), rx::empty(s, A.dtype(1), A.device(2)));
  });
}

RX_FN(RandUniform) {
  RX_BODY("rand") {
    return wrap(A.env(), rx::ops::random_uniform(A.shape(0, "shape"), A.dtype(1), A.device(2), A.number(3, "low"),
                                                 A.number(4, "high"), (uint64_t)A.integer(5, "seed"), (uint64_t)A.integer(6, "offset")));
  });
}

RX_FN(RandNormal) {
  RX_BODY("randn") {
    return wrap(A.env(), rx::ops::random_normal(A.shape(0, "shape"), A.dtype(1), A.device(2), A.number(3, "mean"),
                                                A.number(4, "std"), (uint64_t)A.integer(5, "seed"), (uint64_t)A.integer(6, "offset")));
  });
}

RX_FN(Copy) { RX_BODY("to") { return wrap(A.env(), rx::ops::copy(A.tensor(0, "tensor"), A.device(1))); }); }
RX_FN(CopyInto) {
  RX_BODY("copy_") {
    rx::ops::copy_into(A.tensor(0, "source"), A.tensor(1, "destination"));
    return A.env().Undefined();
  });
}
RX_FN(Fill) {
  RX_BODY("fill_") {
    rx::ops::fill_(A.tensor(0, "tensor"), A.number(1, "value"));
    return A.env().Undefined();
  });
}
RX_FN(Cast) { RX_BODY("cast") { return wrap(A.env(), rx::ops::cast(A.tensor(0, "tensor"), A.dtype(1))); }); }
RX_FN(Reshape) { RX_BODY("reshape") { return wrap(A.env(), rx::ops::reshape(A.tensor(0, "tensor"), A.shape(1, "shape"))); }); }
RX_FN(Permute) {
  RX_BODY("permute") {
    auto d = A.ints(1, "dims");
    return wrap(A.env(), rx::ops::permute(A.tensor(0, "tensor"), std::vector<int>(d.begin(), d.end())));
  });
}
RX_FN(Expand) { RX_BODY("expand") { return wrap(A.env(), rx::ops::expand(A.tensor(0, "tensor"), A.shape(1, "shape"))); }); }

RX_FN(Conv2dForward) {
  RX_BODY("conv2d") {
    return wrap(A.env(), rx::ops::conv2d_forward(A.tensor(0, "input"), A.tensor(1, "weight"), A.opt_tensor(2, "bias"), conv_args(A, 3)));
  });
}
RX_FN(Conv2dBackwardData) {
  RX_BODY("conv2d_backward_data") {
    return wrap(A.env(), rx::ops::conv2d_backward_data(A.tensor(0, "grad_output"), A.tensor(1, "weight"), A.shape(2, "input_shape"), conv_args(A, 3)));
  });
}
RX_FN(Conv2dBackwardFilter) {
  RX_BODY("conv2d_backward_filter") {
    return wrap(A.env(), rx::ops::conv2d_backward_filter(A.tensor(0, "grad_output"), A.tensor(1, "input"), A.shape(2, "weight_shape"), conv_args(A, 3)));
  });
}

RX_FN(BatchNormForward) {
  RX_BODY("batchNorm2d") {
    auto [y, sm, si] = rx::ops::batch_norm_forward(A.tensor(0, "input"), A.tensor(1, "weight"), A.tensor(2, "bias"),
                                                   A.opt_tensor(3, "residual"), A.tensor(4, "runningMean"),
                                                   A.tensor(5, "runningVar"), bn_args(A, 6));
    return wrap_all(A.env(), y, sm, si);
  });
}
RX_FN(BatchNormBackward) {
  RX_BODY("batchNorm2d_backward") {
    auto [gx, gg, gb, gr] = rx::ops::batch_norm_backward(A.tensor(0, "grad_output"), A.tensor(1, "input"), A.tensor(2, "output"),
                                                         A.tensor(3, "weight"), A.tensor(4, "saveMean"),
                                                         A.tensor(5, "saveInvstd"), bn_args(A, 6));
    return wrap_all(A.env(), gx, gg, gb, gr);
  });
}

RX_FN(Relu) { RX_BODY("relu") { return wrap(A.env(), rx::ops::relu_forward(A.tensor(0, "input"))); }); }
RX_FN(ReluBackward) {
  RX_BODY("relu_backward") { return wrap(A.env(), rx::ops::relu_backward(A.tensor(0, "grad_output"), A.tensor(1, "output"))); });
}
RX_FN(Binary) {
  RX_BODY("binary") {
    int64_t op = A.integer(0, "op");
    if (op < 0 || op > 5) arg_error(A.env(), A.op, "op", "0..5", std::to_string(op));
    return wrap(A.env(), rx::ops::binary((rx::BinaryOp)op, A.tensor(1, "a"), A.tensor(2, "b")));
  });
}
RX_FN(Scalar) {
  RX_BODY("scalar") {
    int64_t op = A.integer(0, "op");
    if (op < 0 || op > 4) arg_error(A.env(), A.op, "op", "0..4", std::to_string(op));
    return wrap(A.env(), rx::ops::scalar((rx::ScalarOp)op, A.tensor(1, "input"), A.number(2, "scalar")));
  });
}
RX_FN(Unary) {
  RX_BODY("unary") {
    int64_t op = A.integer(0, "op");
    if (op < 0 || op > 5) arg_error(A.env(), A.op, "op", "0..5", std::to_string(op));
    return wrap(A.env(), rx::ops::unary((rx::UnaryOp)op, A.tensor(1, "input")));
  });
}
RX_FN(Sum) {
  RX_BODY("sum") {
    auto d = A.ints(1, "dims");
    return wrap(A.env(), rx::ops::sum(A.tensor(0, "input"), std::vector<int>(d.begin(), d.end()), A.boolean(2, "keepdim")));
  });
}

RX_FN(MaxPool2dForward) {
  RX_BODY("maxPool2d") {
    rx::Pool2dArgs p;
    std::tie(p.kh, p.kw) = A.pair(1, "kernelSize");
    std::tie(p.sh, p.sw) = A.pair(2, "stride");
    std::tie(p.ph, p.pw) = A.pair(3, "padding");
    auto [y, idx] = rx::ops::max_pool2d_forward(A.tensor(0, "input"), p);
    return wrap_all(A.env(), y, idx);
  });
}
RX_FN(MaxPool2dBackward) {
  RX_BODY("maxPool2d_backward") {
    return wrap(A.env(), rx::ops::max_pool2d_backward(A.tensor(0, "grad_output"), A.tensor(1, "indices"), A.shape(2, "input_shape")));
  });
}
RX_FN(GlobalAvgPoolForward) {
  RX_BODY("globalAvgPool2d") { return wrap(A.env(), rx::ops::global_avg_pool2d_forward(A.tensor(0, "input"))); });
}
RX_FN(GlobalAvgPoolBackward) {
  RX_BODY("globalAvgPool2d_backward") {
    return wrap(A.env(), rx::ops::global_avg_pool2d_backward(A.tensor(0, "grad_output"), A.shape(1, "input_shape")));
  });
}
RX_FN(Matmul) {
  RX_BODY("matmul") {
    return wrap(A.env(), rx::ops::matmul(A.tensor(0, "a"), A.tensor(1, "b"), A.boolean(2, "transposeA"), A.boolean(3, "transposeB")));
  });
}
RX_FN(LinearForward) {
  RX_BODY("linear") {
    return wrap(A.env(), rx::ops::linear_forward(A.tensor(0, "input"), A.tensor(1, "weight"), A.opt_tensor(2, "bias")));
  });
}
RX_FN(CrossEntropyForward) {
  RX_BODY("crossEntropy") {
    auto [loss, probs] = rx::ops::cross_entropy_forward(A.tensor(0, "logits"), A.tensor(1, "targets"), A.number(2, "labelSmoothing"));
    return wrap_all(A.env(), loss, probs);
  });
}
RX_FN(CrossEntropyBackward) {
  RX_BODY("crossEntropy_backward") {
    return wrap(A.env(), rx::ops::cross_entropy_backward(A.tensor(0, "probs"), A.tensor(1, "targets"), A.number(2, "labelSmoothing"),
                                                         A.tensor(3, "grad_output")));
  });
}
RX_FN(TopK) { RX_BODY("topk") { return wrap(A.env(), rx::ops::topk(A.tensor(0, "input"), A.integer(1, "k"))); }); }
RX_FN(SgdStep) {
  RX_BODY("sgdStep") {
    rx::SgdArgs s;
    s.lr = A.number(3, "lr");
    s.momentum = A.number(4, "momentum");
    s.dampening = A.number(5, "dampening");
    s.weight_decay = A.number(6, "weightDecay");
    s.nesterov = A.boolean(7, "nesterov");
    s.first_step = A.boolean(8, "firstStep");
    rx::ops::sgd_step(A.tensor(0, "param"), A.tensor(1, "grad"), A.opt_tensor_mut(2, "momentumBuffer"), s);
    return A.env().Undefined();
  });
}

RX_FN(Memory) {
  RX_BODY("memory") {
    Device d = info.Length() > 0 && !info[0].IsUndefined() ? A.device(0) : Device{};
    rx::cpu_executor().synchronize();  // queued kernels hold references until they run
    auto s = rx::memory_stats(d);
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("tensors", (double)s.tensors);
    o.Set("storages", (double)s.storages);
    o.Set("bytes", (double)s.bytes);
    o.Set("peakBytes", (double)s.peak_bytes);
    o.Set("reservedBytes", (double)s.reserved_bytes);
    return o;
  });
}

RX_FN(LoadCuda) {
  RX_BODY("loadCuda") {
    if (!info[0].IsString()) arg_error(A.env(), A.op, "library", "a path", describe(info[0]));
    const rx::CudaLoadResult &r = rx::load_cuda_backend(info[0].As<Napi::String>().Utf8Value());
    Napi::Object o = Napi::Object::New(A.env());
    o.Set("ok", r.ok);
    o.Set("library", r.library);
    o.Set("reason", r.reason);
    return o;
  });
}

RX_FN(DeviceInfo) {
  RX_BODY("deviceInfo") { return Napi::String::New(A.env(), rx::backend_for(A.device(0)).device_info_json()); });
}

RX_FN(Synchronize) {
  RX_BODY("synchronize") {
    rx::cpu_executor().synchronize();
    rx::backend_for(A.device(0)).synchronize();
    return A.env().Undefined();
  });
}

RX_FN(NumThreads) { return Napi::Number::New(info.Env(), rx::cpu::num_threads()); }
RX_FN(SetNumThreads) {
  RX_BODY("setNumThreads") {
    int64_t n = A.integer(0, "threads");
    if (n < 1 || n > 1024) arg_error(A.env(), A.op, "threads", "an integer in [1, 1024]", std::to_string(n));
    rx::cpu_executor().synchronize();
    rx::cpu::set_num_threads((int)n);
    return A.env().Undefined();
  });
}

RX_FN(CpuFeatures) {
  Napi::Object o = Napi::Object::New(info.Env());
  __builtin_cpu_init();
  o.Set("avx2", (bool)__builtin_cpu_supports("avx2"));
  o.Set("fma", (bool)__builtin_cpu_supports("fma"));
  o.Set("avx512f", (bool)__builtin_cpu_supports("avx512f"));
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto *data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  Napi::Function ctor = TensorHandle::Init(env);
  data->tensor_ctor = Napi::Persistent(ctor);
  exports.Set("TensorHandle", ctor);
  struct Entry {
    const char *name;
    Napi::Value (*fn)(const Napi::CallbackInfo &);
  };
  static const Entry table[] = {
      {"setErrorClass", SetErrorClass}, {"fromData", FromData}, {"readData", ReadData}, {"readDataAsync", ReadDataAsync}, {"full", Full}, {"empty", Empty},
      {"randUniform", RandUniform}, {"randNormal", RandNormal}, {"copy", Copy}, {"copyInto", CopyInto},
      {"fill", Fill}, {"cast", Cast}, {"reshape", Reshape}, {"permute", Permute}, {"expand", Expand},
      {"conv2dForward", Conv2dForward}, {"conv2dBackwardData", Conv2dBackwardData},
      {"conv2dBackwardFilter", Conv2dBackwardFilter}, {"batchNormForward", BatchNormForward},
      {"batchNormBackward", BatchNormBackward}, {"relu", Relu}, {"reluBackward", ReluBackward},
      {"binary", Binary}, {"scalar", Scalar}, {"unary", Unary}, {"sum", Sum},
      {"maxPool2dForward", MaxPool2dForward}, {"maxPool2dBackward", MaxPool2dBackward},
      {"globalAvgPool2dForward", GlobalAvgPoolForward}, {"globalAvgPool2dBackward", GlobalAvgPoolBackward},
      {"matmul", Matmul}, {"linearForward", LinearForward}, {"crossEntropyForward", CrossEntropyForward},
      {"crossEntropyBackward", CrossEntropyBackward}, {"topk", TopK}, {"sgdStep", SgdStep},
      {"memory", Memory}, {"numThreads", NumThreads}, {"setNumThreads", SetNumThreads},
      {"cpuFeatures", CpuFeatures}, {"loadCuda", LoadCuda}, {"deviceInfo", DeviceInfo},
      {"synchronize", Synchronize},
  };
  for (const Entry &e : table) exports.Set(e.name, Napi::Function::New(env, e.fn, e.name));
  return exports;
}

}  // namespace

NODE_API_MODULE(resnext, Init)
