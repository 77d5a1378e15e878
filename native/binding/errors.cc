#include "errors.h"

#include <exception>
#include <new>

namespace rxb {

AddonData &addon(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

Napi::Value make_error(Napi::Env env, const std::string &code, const std::string &msg) {
  AddonData &d = addon(env);
  if (!d.error_class.IsEmpty()) return d.error_class.New({Napi::String::New(env, msg), Napi::String::New(env, code)});
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  return e.Value();
}

CaughtError caught_error() {
  try {
    throw;
  } catch (const rx::Error &e) {
    return {rx::error_code_name(e.code()), e.what()};
  } catch (const std::bad_alloc &) {
    return {"ERR_OOM", "out of host memory"};
  } catch (const std::exception &e) {
    return {"ERR_INTERNAL", std::string("internal error: ") + e.what()};
  } catch (...) {
    return {"ERR_INTERNAL", "internal error: unknown exception"};
  }
}

Napi::Value set_error_class(const Napi::CallbackInfo &info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    if (!info[0].IsFunction()) rx::fail(rx::ErrorCode::Arg, "setErrorClass", "ctor", "a function", "another value");
    addon(info.Env()).error_class = Napi::Persistent(info[0].As<Napi::Function>());
    return info.Env().Undefined();
  });
}

}  // namespace rxb
