// Hand-written exports that move host data (typed arrays, a Promise); see tensor_data.cc.
#pragma once

#include <napi.h>

namespace rxb {

Napi::Value from_data(const Napi::CallbackInfo &info);        // (data, shape, dtype, device) -> handle
Napi::Value read_data(const Napi::CallbackInfo &info);        // (handle) -> typed array
Napi::Value read_data_async(const Napi::CallbackInfo &info);  // (handle) -> Promise<typed array>

}  // namespace rxb
