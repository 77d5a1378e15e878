#include "bind.h"

namespace rxb {

std::string describe(Napi::Value v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsNumber()) {
    std::string s = v.ToString().Utf8Value();  // JS's own spelling: 1.5, -1, NaN, Infinity
    return s;
  }
  if (v.IsString()) return "\"" + v.As<Napi::String>().Utf8Value() + "\"";
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? "true" : "false";
  if (v.IsArray()) return "an array of length " + std::to_string(v.As<Napi::Array>().Length());
  if (v.IsTypedArray()) return "a typed array";
  if (v.IsFunction()) return "a function";
  return "an object";
}

Export &BindList::add(const char *name, std::vector<std::string> params, std::vector<std::string> params_ts,
                      std::string result) {
  AddonData &d = addon(env_);
  d.exports.push_back(Export{name, std::move(params), std::move(params_ts), std::move(result)});
  order_.push_back(name);
  return d.exports.back();
}

void BindList::manual(const char *name, Napi::Value (*fn)(const Napi::CallbackInfo &),
                      std::vector<std::pair<std::string, std::string>> params, std::string result) {
  std::vector<std::string> names, types;
  for (auto &[n, t] : params) {
    names.push_back(n);
    types.push_back(t);
  }
  Export &e = add(name, std::move(names), std::move(types), std::move(result));
  exports_.Set(name, Napi::Function::New(env_, fn, name, &e));
}

void BindList::finish() {
  Napi::Array sigs = Napi::Array::New(env_);
  uint32_t i = 0;
  for (const Export &e : addon(env_).exports) {
    Napi::Object o = Napi::Object::New(env_);
    o.Set("name", e.name);
    Napi::Array ps = Napi::Array::New(env_);
    for (uint32_t k = 0; k < e.params.size(); k++) {
      Napi::Array p = Napi::Array::New(env_, 2);
      p.Set(0u, e.params[k]);
      p.Set(1u, e.params_ts[k]);
      ps.Set(k, p);
    }
    o.Set("params", ps);
    o.Set("result", e.result_ts);
    sigs.Set(i++, o);
  }
  exports_.Set("signatures", sigs);
  Napi::Object types = Napi::Object::New(env_);
  for (auto &[n, t] : types_) types.Set(n, t);
  exports_.Set("types", types);
  Napi::Object enums = Napi::Object::New(env_);
  for (auto &[n, ref] : enums_) enums.Set(n, ref.Value());
  exports_.Set("enums", enums);
}

}  // namespace rxb
