#include "tensor_handle.h"

#include "addon_data.h"
#include "errors.h"

namespace rxb {

Napi::Function TensorHandle::Init(Napi::Env env) {
  return DefineClass(env, "TensorHandle",
                     {InstanceAccessor<&TensorHandle::GetShape>("shape"),
                      InstanceAccessor<&TensorHandle::GetDType>("dtype"),
                      InstanceAccessor<&TensorHandle::GetDevice>("device"),
                      InstanceAccessor<&TensorHandle::GetDisposed>("disposed"),
                      InstanceAccessor<&TensorHandle::GetNBytes>("nbytes"),
                      InstanceMethod<&TensorHandle::Dispose>("dispose"),
                      InstanceMethod<&TensorHandle::SharesStorage>("sharesStorage"),
                      InstanceMethod<&TensorHandle::Account>("account")});
}

TensorHandle::TensorHandle(const Napi::CallbackInfo &info) : Napi::ObjectWrap<TensorHandle>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throw Napi::Error(info.Env(), make_error(info.Env(), "ERR_ARG",
                                             "TensorHandle: tensors are created by resnext functions, not with new"));
  auto *p = info[0].As<Napi::External<rx::TensorPtr>>().Data();
  t_ = std::move(*p);
  delete p;
  if (!addon(info.Env()).defer_accounting) account(info.Env());
}

void TensorHandle::account(Napi::Env env) {
  if (!t_ || accounted_) return;
  accounted_ = (int64_t)t_->nbytes();
  if (accounted_) Napi::MemoryManagement::AdjustExternalMemory(env, accounted_);
}

Napi::Value TensorHandle::Account(const Napi::CallbackInfo &info) {
  account(info.Env());
  return info.Env().Undefined();
}

Napi::Value TensorHandle::DeferExternalMemory(const Napi::CallbackInfo &info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsBoolean())
      rx::fail(rx::ErrorCode::Arg, "deferExternalMemory", "on", "a boolean", "another value");
    addon(info.Env()).defer_accounting = info[0].As<Napi::Boolean>().Value();
    return info.Env().Undefined();
  });
}

void TensorHandle::release(Napi::BasicEnv env) {
  t_.reset();
  if (accounted_) Napi::MemoryManagement::AdjustExternalMemory(env, -accounted_);
  accounted_ = 0;
}

void TensorHandle::Finalize(Napi::BasicEnv env) { release(env); }

Napi::Value TensorHandle::Wrap(Napi::Env env, rx::TensorPtr t) {
  if (!t) return env.Null();
  auto *p = new rx::TensorPtr(std::move(t));
  return addon(env).tensor_ctor.New({Napi::External<rx::TensorPtr>::New(env, p)});
}

TensorHandle &TensorHandle::From(Napi::Env env, Napi::Value v, const char *op, const char *arg) {
  if (v.IsObject()) {
    Napi::Object o = v.As<Napi::Object>();
    if (o.InstanceOf(addon(env).tensor_ctor.Value())) return *Unwrap(o);
  }
  rx::fail(rx::ErrorCode::Arg, op, arg, "a tensor", v.IsNull() ? "null" : v.IsUndefined() ? "undefined" : "another value");
}

rx::Tensor &TensorHandle::tensor(const char *op, const char *arg) {
  if (!t_) rx::fail(rx::ErrorCode::Disposed, op, arg, "a live tensor", "a disposed tensor");
  return *t_;
}

Napi::Value TensorHandle::GetShape(const Napi::CallbackInfo &info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    rx::Tensor &t = tensor("shape", "tensor");
    auto arr = Napi::Array::New(info.Env(), t.ndim());
    for (int i = 0; i < t.ndim(); i++) arr.Set(i, Napi::Number::New(info.Env(), (double)t.dim(i)));
    return arr;
  });
}

Napi::Value TensorHandle::GetDType(const Napi::CallbackInfo &info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return Napi::String::New(info.Env(), rx::dtype_name(tensor("dtype", "tensor").dtype()));
  });
}

Napi::Value TensorHandle::GetDevice(const Napi::CallbackInfo &info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    rx::Device d = tensor("device", "tensor").device();
    return Napi::String::New(info.Env(), d.type == rx::DeviceType::CPU ? "cpu" : "cuda");
  });
}

Napi::Value TensorHandle::GetDisposed(const Napi::CallbackInfo &info) { return Napi::Boolean::New(info.Env(), !t_); }

Napi::Value TensorHandle::GetNBytes(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), t_ ? (double)t_->nbytes() : 0);
}

Napi::Value TensorHandle::Dispose(const Napi::CallbackInfo &info) {
  release(info.Env());
  return info.Env().Undefined();
}

Napi::Value TensorHandle::SharesStorage(const Napi::CallbackInfo &info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    rx::Tensor &a = tensor("sharesStorage", "tensor");
    rx::Tensor &b = From(info.Env(), info[0], "sharesStorage", "other").tensor("sharesStorage", "other");
    return Napi::Boolean::New(info.Env(), a.storage() == b.storage());
  });
}

}  // namespace rxb
