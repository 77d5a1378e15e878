// TensorHandle: the JS object that owns one core tensor (a shared_ptr, so views and queued
// kernels keep the storage alive). dispose() drops it at once; the finalizer is the safety net.
// Its bytes are reported to V8 as external memory while it holds them, so a program that relies
// on GC collects soon enough. Handles made inside a tidy scope are the exception: the scope frees
// them deterministically, and reporting the churn of a training step (hundreds of MB allocated and
// freed) made V8 run 4-25 full mark-compacts per step; they are reported once they leave every
// scope (account(), called by lib/tensor/tensor.ts). The finalizer is a "basic" one (the addon is built with
// NAPI_EXPERIMENTAL): it runs inside GC, never calls into JS, and frees the tensor at once instead
// of queueing behind the event loop, so a synchronous loop does not pile up dead handles.
#pragma once

#include <napi.h>

#include "../core/tensor.h"

namespace rxb {

class TensorHandle : public Napi::ObjectWrap<TensorHandle> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit TensorHandle(const Napi::CallbackInfo &info);

  static Napi::Value Wrap(Napi::Env env, rx::TensorPtr t);  // null for an empty pointer
  // deferExternalMemory(on): whether handles made from now on wait for account() (see above).
  static Napi::Value DeferExternalMemory(const Napi::CallbackInfo &info);
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
  Napi::Value Account(const Napi::CallbackInfo &info);  // reports its bytes now (once)
  void Finalize(Napi::BasicEnv env) override;
  void release(Napi::BasicEnv env);  // drops the tensor and its external-memory share
  void account(Napi::Env env);

  rx::TensorPtr t_;
  int64_t accounted_ = 0;  // bytes reported to V8 for this handle
};

}  // namespace rxb
