// TensorHandle: the JS object that owns one core tensor (a shared_ptr, so views and queued
// kernels keep the storage alive). dispose() drops it at once; the finalizer is the safety net.
#pragma once

#include <napi.h>

#include "../core/tensor.h"

namespace rxb {

class TensorHandle : public Napi::ObjectWrap<TensorHandle> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit TensorHandle(const Napi::CallbackInfo &info);

  static Napi::Value Wrap(Napi::Env env, rx::TensorPtr t);  // null for an empty pointer
  // The handle behind v, or ERR_ARG naming op and arg; ERR_DISPOSED when it was disposed.
  static TensorHandle &From(Napi::Env env, Napi::Value v, const char *op, const char *arg);

  rx::Tensor &tensor(const char *op, const char *arg);
  const rx::TensorPtr &ptr() const { return t_; }

 private:
  Napi::Value GetShape(const Napi::CallbackInfo &info);
  Napi::Value GetDType(const Napi::CallbackInfo &info);
  Napi::Value GetDevice(const Napi::CallbackInfo &info);
  Napi::Value GetDisposed(const Napi::CallbackInfo &info);
  Napi::Value GetNBytes(const Napi::CallbackInfo &info);
  Napi::Value Dispose(const Napi::CallbackInfo &info);
  Napi::Value SharesStorage(const Napi::CallbackInfo &info);

  rx::TensorPtr t_;
};

}  // namespace rxb
