// bind<&ops::fn>(name, param names...): exports one core function. The template reads each
// parameter with the reader of its C++ type (convert.h), in order, calls the function and wraps
// its result; every C++ exception becomes a ResnextError. It also records the export's
// signature in TypeScript terms: the addon exports them (`signatures`, `types`, `enums`) and
// scripts/gen-addon-types.js writes lib/native/addon.generated.ts from them, which
// test/build.test.ts checks for drift.
#pragma once

#include <napi.h>

#include <deque>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "addon_data.h"
#include "convert.h"
#include "errors.h"

namespace rxb {

template <auto Fn>
struct Binder;

template <typename R, typename... P, R (*Fn)(P...)>
struct Binder<Fn> {
  static Napi::Value call(const Napi::CallbackInfo &info) {
    const Export &e = *static_cast<const Export *>(info.Data());
    return guarded(info.Env(), [&]() -> Napi::Value { return invoke(info, e, std::index_sequence_for<P...>{}); });
  }

  template <size_t... I>
  static Napi::Value invoke(const Napi::CallbackInfo &info, const Export &e, std::index_sequence<I...>) {
    Napi::Env env = info.Env();
    // A braced list is evaluated left to right: the first bad argument is the one reported.
    std::tuple<decltype(ParamReader<P>::read(std::declval<const Where &>(), info[0]))...> args{
        ParamReader<P>::read(Where{env, e.name.c_str(), e.params[I].c_str()}, info[I])...};
    if constexpr (std::is_void_v<R>) {
      std::apply(Fn, args);
      return env.Undefined();
    } else {
      return ToJs<std::decay_t<R>>::write(env, std::apply(Fn, args));
    }
  }

  static std::vector<std::string> params_ts() { return {ParamReader<P>::ts...}; }
  static std::string result() { return result_ts<std::decay_t<R>>(); }
};

// The TS spelling of a struct's fields or an enum's names, for the generated interface.
struct Describer {
  std::string body;
  template <typename T>
  void field(const char *name, T &) {
    body += std::string("  ") + name + ": " + FromJs<T>::ts + ";\n";
  }
  void pair(const char *name, int64_t &, int64_t &) { body += std::string("  ") + name + ": [number, number];\n"; }
};

class BindList {
 public:
  BindList(Napi::Env env, Napi::Object exports) : env_(env), exports_(exports) {}

  template <auto Fn, typename... Names>
  void bind(const char *name, Names... params) {
    using B = Binder<Fn>;
    Export &e = add(name, {params...}, B::params_ts(), B::result());
    if (e.params.size() != e.params_ts.size())
      throw std::logic_error(std::string("bind list: ") + name + " names " + std::to_string(e.params.size()) +
                             " parameters, the function has " + std::to_string(e.params_ts.size()));
    exports_.Set(name, Napi::Function::New(env_, &B::call, name, &e));
  }

  // A hand-written export (typed arrays, promises): its TS parameters and result spelled here.
  void manual(const char *name, Napi::Value (*fn)(const Napi::CallbackInfo &),
              std::vector<std::pair<std::string, std::string>> params, std::string result);

  template <typename S>
  void struct_type() {
    Describer d;
    S s{};
    Fields<S>::visit(d, s);
    types_[Fields<S>::ts] = "{\n" + d.body + "}";
  }

  template <typename E>
  void enum_type() {
    std::string u;
    Napi::Array names = Napi::Array::New(env_);
    uint32_t i = 0;
    for (const char *n : rx::EnumNames<E>::names) {
      u += std::string(i ? " | " : "") + "'" + n + "'";
      names.Set(i++, n);
    }
    types_[rx::EnumNames<E>::type] = u;
    enums_[rx::EnumNames<E>::type] = Napi::Persistent(static_cast<Napi::Value>(names).As<Napi::Object>());
  }

  // Exports `signatures`, `types` and `enums` (see the top of this file).
  void finish();

 private:
  Export &add(const char *name, std::vector<std::string> params, std::vector<std::string> params_ts,
              std::string result);

  Napi::Env env_;
  Napi::Object exports_;
  std::vector<std::string> order_;  // export names in bind order
  std::map<std::string, std::string> types_;
  std::map<std::string, Napi::ObjectReference> enums_;
};

}  // namespace rxb
