// Host data in and out: fromData copies a typed array into a new tensor; readData copies a
// tensor out synchronously; readDataAsync waits for the tensor's queued kernels and copies it on
// a libuv worker thread, then resolves a Promise (the event loop runs meanwhile).
#include "tensor_data.h"

#include <cstring>
#include <vector>

#include "../core/executor.h"
#include "../core/ops.h"
#include "convert.h"
#include "errors.h"

namespace rxb {

namespace {

napi_typedarray_type typed_array_type(rx::DType dt) {
  return dt == rx::DType::F32 ? napi_float32_array : dt == rx::DType::F64 ? napi_float64_array : napi_int32_array;
}

void check_readable(const char *op, const rx::Tensor &t) {
  if (t.dtype() == rx::DType::BF16)
    rx::fail(rx::ErrorCode::DType, op, "tensor", "float32, float64 or int32 (cast bfloat16 tensors first)", "bfloat16");
}

Napi::Value typed_array(Napi::Env env, rx::DType dt, size_t n, Napi::ArrayBuffer buf) {
  if (dt == rx::DType::F32) return Napi::Float32Array::New(env, n, buf, 0);
  if (dt == rx::DType::F64) return Napi::Float64Array::New(env, n, buf, 0);
  return Napi::Int32Array::New(env, n, buf, 0);
}

class ReadWorker : public Napi::AsyncWorker {
 public:
  ReadWorker(Napi::Env env, rx::TensorPtr t)
      : Napi::AsyncWorker(env, "resnext.data"),
        t_(std::move(t)),
        deferred_(Napi::Promise::Deferred::New(env)),
        owner_(rx::current_owner()) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    rx::OwnerScope scope(owner_);  // wait, and see errors, as the thread that called data()
    try {
      buf_.resize(t_->nbytes());
      rx::ops::to_host(*t_, buf_.data(), buf_.size());
    } catch (...) {
      CaughtError e = caught_error();
      code_ = e.code;
      SetError(e.message);
    }
  }

  // A worker thread may be terminated while its read is in flight: then every call into its
  // environment throws, and nothing is left to tell, so the result is dropped.
  void OnOK() override {
    t_.reset();
    try {
      Napi::Env env = Env();
      Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, buf_.size());
      if (!buf_.empty()) std::memcpy(ab.Data(), buf_.data(), buf_.size());
      deferred_.Resolve(typed_array(env, dtype_, numel_, ab));
    } catch (...) {
    }
  }

  void OnError(const Napi::Error &e) override {
    t_.reset();
    try {
      deferred_.Reject(make_error(Env(), code_, e.Message()));
    } catch (...) {
    }
  }

 private:
  rx::TensorPtr t_;
  Napi::Promise::Deferred deferred_;
  std::vector<uint8_t> buf_;
  std::string code_ = "ERR_INTERNAL";
  rx::Owner owner_;
  rx::DType dtype_ = t_->dtype();
  size_t numel_ = (size_t)t_->numel();
};

}  // namespace

Napi::Value from_data(const Napi::CallbackInfo &info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const char *op = "tensor";
    if (!info[0].IsTypedArray()) wrong_type({env, op, "data"}, "a typed array", info[0]);
    Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
    rx::Shape shape = FromJs<rx::Shape>::read({env, op, "shape"}, info[1]);
    rx::DType dt = FromJs<rx::DType>::read({env, op, "dtype"}, info[2]);
    rx::Device device = FromJs<rx::Device>::read({env, op, "device"}, info[3]);
    if (ta.TypedArrayType() != typed_array_type(dt))
      rx::fail(rx::ErrorCode::DType, op, "data", std::string("a typed array matching dtype ") + rx::dtype_name(dt),
               "another kind");
    // The element pointer straight from the typed array: its buffer may be a SharedArrayBuffer
    // (which Napi::ArrayBuffer refuses) or detached (null data, length 0).
    napi_typedarray_type type;
    size_t length = 0, offset = 0;
    void *data = nullptr;
    napi_value buffer;
    if (napi_get_typedarray_info(env, info[0], &type, &length, &data, &buffer, &offset) != napi_ok)
      wrong_type({env, op, "data"}, "a readable typed array", info[0]);
    size_t bytes = length * ta.ElementSize();
    if (!data && bytes) wrong_type({env, op, "data"}, "a typed array with data", info[0]);
    return TensorHandle::Wrap(env, rx::ops::from_host(static_cast<const uint8_t *>(data), bytes, shape, dt, device));
  });
}

Napi::Value read_data(const Napi::CallbackInfo &info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    TensorArg arg = FromJs<rx::Tensor>::read({env, "data", "tensor"}, info[0]);
    rx::Tensor &t = arg;
    check_readable("data", t);
    Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, t.nbytes());
    rx::ops::to_host(t, buf.Data(), t.nbytes());
    return typed_array(env, t.dtype(), (size_t)t.numel(), buf);
  });
}

Napi::Value read_data_async(const Napi::CallbackInfo &info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    TensorHandle &h = TensorHandle::From(env, info[0], "data", "tensor");
    check_readable("data", h.tensor("data", "tensor"));
    auto *w = new ReadWorker(env, h.ptr());
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  });
}

}  // namespace rxb
