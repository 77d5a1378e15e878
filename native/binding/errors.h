// Errors across the boundary: every C++ exception becomes an instance of the JS error class that
// lib/native registers (ResnextError), with the stable code of rx::ErrorCode. Messages are made
// by the core's one formatter (rx::fail in core/error.h); this file only converts.
#pragma once

#include <napi.h>

#include <string>

#include "../core/error.h"
#include "addon_data.h"

namespace rxb {

// A JS error object with a stable code, of the registered class when there is one.
Napi::Value make_error(Napi::Env env, const std::string &code, const std::string &msg);

// The stable code and message of the exception being handled (call inside a catch block).
struct CaughtError {
  std::string code, message;
};
CaughtError caught_error();

// Runs body, turning any C++ exception into a thrown JS error.
template <typename F>
Napi::Value guarded(Napi::Env env, F &&body) {
  try {
    return body();
  } catch (const Napi::Error &) {
    throw;
  } catch (...) {
    CaughtError e = caught_error();
    throw Napi::Error(env, make_error(env, e.code, e.message));
  }
}

// setErrorClass(ctor): registers lib/native's ResnextError.
Napi::Value set_error_class(const Napi::CallbackInfo &info);

}  // namespace rxb
