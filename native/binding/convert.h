// Type conversion between JS values and the core's C++ types, one small reader per type (sharp's
// style), chosen by the parameter's C++ type in bind.h. Conversion only: a value of the wrong JS
// type is refused here (ERR_ARG, or ERR_DTYPE / ERR_DEVICE for those names); whether a value of
// the right type is valid (a stride >= 1, matching shapes) is for the core's op layer to say.
// Each reader also names its TypeScript type, from which lib/native/addon.generated.ts is made.
#pragma once

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../core/backend.h"
#include "../core/ops.h"
#include "tensor_handle.h"

namespace rxb {

// Where a value goes: the export and the parameter (or option field) it is read for.
struct Where {
  Napi::Env env;
  const char *op;
  const char *arg;
};

std::string describe(Napi::Value v);  // a short description of a JS value for messages

[[noreturn]] inline void wrong_type(const Where &w, const std::string &expected, Napi::Value v) {
  rx::fail(rx::ErrorCode::Arg, w.op, w.arg, expected, describe(v));
}

// ---------------------------------------------------------------- JS -> C++ (by parameter type)

template <typename T, typename = void>
struct FromJs;

// A tensor argument holds its own reference: reading a later argument may run JS (a getter on
// an options object) that disposes a handle already read, and the tensor must outlive the call.
struct TensorArg {
  rx::TensorPtr p;
  operator rx::Tensor &() const { return *p; }
};
struct OptionalTensorArg {
  rx::TensorPtr p;
  operator rx::Tensor *() const { return p.get(); }
};

template <>
struct FromJs<rx::Tensor> {  // const Tensor & and Tensor &
  static constexpr const char *ts = "TensorHandle";
  static TensorArg read(const Where &w, Napi::Value v) {
    TensorHandle &h = TensorHandle::From(w.env, v, w.op, w.arg);
    h.tensor(w.op, w.arg);  // ERR_DISPOSED when it was disposed
    return {h.ptr()};
  }
};

template <>
struct FromJs<rx::Tensor *> {  // const Tensor * and Tensor *: null or undefined for none
  static constexpr const char *ts = "TensorHandle | null";
  static OptionalTensorArg read(const Where &w, Napi::Value v) {
    if (v.IsNull() || v.IsUndefined()) return {nullptr};
    return {FromJs<rx::Tensor>::read(w, v).p};
  }
};

template <>
struct FromJs<double> {
  static constexpr const char *ts = "number";
  static double read(const Where &w, Napi::Value v) {
    if (!v.IsNumber()) wrong_type(w, "a number", v);
    return v.As<Napi::Number>().DoubleValue();
  }
};

// Integers: a JS number that is an exact integer (no rounding, no NaN, within 2^53).
inline double exact_integer(const Where &w, Napi::Value v, const char *expected) {
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!std::isfinite(d) || std::floor(d) != d || std::fabs(d) > 9007199254740991.0) wrong_type(w, expected, v);
  return d;
}

template <>
struct FromJs<int64_t> {
  static constexpr const char *ts = "number";
  static int64_t read(const Where &w, Napi::Value v) { return (int64_t)exact_integer(w, v, "an integer (exactly representable: |n| <= 2^53)"); }
};

template <>
struct FromJs<uint64_t> {
  static constexpr const char *ts = "number";
  static uint64_t read(const Where &w, Napi::Value v) {
    double d = exact_integer(w, v, "a non-negative integer");
    if (d < 0) wrong_type(w, "a non-negative integer", v);
    return (uint64_t)d;
  }
};

template <>
struct FromJs<bool> {
  static constexpr const char *ts = "boolean";
  static bool read(const Where &w, Napi::Value v) {
    if (!v.IsBoolean()) wrong_type(w, "a boolean", v);
    return v.As<Napi::Boolean>().Value();
  }
};

template <>
struct FromJs<std::string> {
  static constexpr const char *ts = "string";
  static std::string read(const Where &w, Napi::Value v) {
    if (!v.IsString()) wrong_type(w, "a string", v);
    return v.As<Napi::String>().Utf8Value();
  }
};

template <>
struct FromJs<std::vector<int64_t>> {  // Shape, dims
  static constexpr const char *ts = "number[]";
  static std::vector<int64_t> read(const Where &w, Napi::Value v) {
    if (!v.IsArray()) wrong_type(w, "an array of integers", v);
    Napi::Array a = v.As<Napi::Array>();
    std::vector<int64_t> out(a.Length());
    for (uint32_t k = 0; k < a.Length(); k++) {
      Napi::Value e = a.Get(k);
      std::string arg = std::string(w.arg) + "[" + std::to_string(k) + "]";
      out[k] = (int64_t)exact_integer({w.env, w.op, arg.c_str()}, e, "an integer (exactly representable: |n| <= 2^53)");
    }
    return out;
  }
};

template <>
struct FromJs<rx::DType> {
  static constexpr const char *ts = "DTypeName";
  static rx::DType read(const Where &w, Napi::Value v) {
    std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
    for (rx::DType d : {rx::DType::F32, rx::DType::F64, rx::DType::I32, rx::DType::BF16})
      if (s == rx::dtype_name(d)) return d;
    rx::fail(rx::ErrorCode::DType, w.op, w.arg, "\"float32\", \"float64\", \"int32\" or \"bfloat16\"", describe(v));
  }
};

template <>
struct FromJs<rx::Device> {
  static constexpr const char *ts = "DeviceName";
  static rx::Device read(const Where &w, Napi::Value v) {
    std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
    if (s == "cpu") return {};
    if (s == "cuda" || s == "cuda:0") return {rx::DeviceType::CUDA, 0};
    rx::fail(rx::ErrorCode::Device, w.op, w.arg, "\"cpu\" or \"cuda\"", describe(v));
  }
};

// Enums by name (the core's EnumNames table); their TS type is the union of the names.
template <typename E>
struct FromJs<E, std::enable_if_t<std::is_enum_v<E>, decltype((void)rx::EnumNames<E>::names, void())>> {
  static constexpr const char *ts = rx::EnumNames<E>::type;
  static E read(const Where &w, Napi::Value v) {
    std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
    std::string all;
    size_t i = 0;
    for (const char *n : rx::EnumNames<E>::names) {
      if (s == n) return (E)i;
      all += std::string(i ? ", " : "") + "\"" + n + "\"";
      i++;
    }
    wrong_type(w, "one of " + all, v);
  }
};

// ---------------------------------------------------------------- option structs

// Each argument struct lists its fields once, for a visitor: Reader fills the struct from a named
// JS object, Writer turns a result struct into one, Describer names the TS type of each field.
template <typename S>
struct Fields;

template <>
struct Fields<rx::Conv2dArgs> {
  static constexpr const char *ts = "Conv2dArgs";
  template <typename V>
  static void visit(V &v, rx::Conv2dArgs &a) {
    v.pair("stride", a.stride_h, a.stride_w);
    v.pair("padding", a.pad_h, a.pad_w);
    v.field("groups", a.groups);
  }
};

template <>
struct Fields<rx::Pool2dArgs> {
  static constexpr const char *ts = "Pool2dArgs";
  template <typename V>
  static void visit(V &v, rx::Pool2dArgs &a) {
    v.pair("kernelSize", a.kh, a.kw);
    v.pair("stride", a.sh, a.sw);
    v.pair("padding", a.ph, a.pw);
  }
};

template <>
struct Fields<rx::BatchNormArgs> {
  static constexpr const char *ts = "BatchNormArgs";
  template <typename V>
  static void visit(V &v, rx::BatchNormArgs &a) {
    v.field("training", a.training);
    v.field("momentum", a.momentum);
    v.field("eps", a.eps);
    v.field("act", a.act);
  }
};

template <>
struct Fields<rx::SgdArgs> {
  static constexpr const char *ts = "SgdArgs";
  template <typename V>
  static void visit(V &v, rx::SgdArgs &a) {
    v.field("lr", a.lr);
    v.field("momentum", a.momentum);
    v.field("dampening", a.dampening);
    v.field("weightDecay", a.weight_decay);
    v.field("nesterov", a.nesterov);
    v.field("firstStep", a.first_step);
  }
};

template <>
struct Fields<rx::MemoryStats> {
  static constexpr const char *ts = "MemoryStats";
  template <typename V>
  static void visit(V &v, rx::MemoryStats &s) {
    v.field("tensors", s.tensors);
    v.field("storages", s.storages);
    v.field("bytes", s.bytes);
    v.field("peakBytes", s.peak_bytes);
    v.field("reservedBytes", s.reserved_bytes);
  }
};

template <>
struct Fields<rx::CudaLoadResult> {
  static constexpr const char *ts = "CudaLoadResult";
  template <typename V>
  static void visit(V &v, rx::CudaLoadResult &r) {
    v.field("ok", r.ok);
    v.field("library", r.library);
    v.field("reason", r.reason);
  }
};

template <>
struct Fields<rx::ops::CpuFeatures> {
  static constexpr const char *ts = "CpuFeatures";
  template <typename V>
  static void visit(V &v, rx::ops::CpuFeatures &f) {
    v.field("avx2", f.avx2);
    v.field("fma", f.fma);
    v.field("avx512f", f.avx512f);
  }
};

template <typename S, typename = void>
struct HasFields : std::false_type {};
template <typename S>
struct HasFields<S, decltype((void)Fields<S>::ts, void())> : std::true_type {};

struct Reader {
  Napi::Object obj;
  Where w;
  std::string path(const char *name) const { return std::string(w.arg) + "." + name; }
  template <typename T>
  void field(const char *name, T &out) {
    std::string p = path(name);
    out = FromJs<T>::read({w.env, w.op, p.c_str()}, obj.Get(name));
  }
  void pair(const char *name, int64_t &a, int64_t &b) {
    std::string p = path(name);
    Where fw{w.env, w.op, p.c_str()};
    auto v = FromJs<std::vector<int64_t>>::read(fw, obj.Get(name));
    if (v.size() != 2) wrong_type(fw, "two integers [h, w]", obj.Get(name));
    a = v[0];
    b = v[1];
  }
};

template <typename S>
struct FromJs<S, std::enable_if_t<HasFields<S>::value>> {
  static constexpr const char *ts = Fields<S>::ts;
  static S read(const Where &w, Napi::Value v) {
    if (!v.IsObject() || v.IsArray()) wrong_type(w, std::string("an options object (") + ts + ")", v);
    S s;
    Reader r{v.As<Napi::Object>(), w};
    Fields<S>::visit(r, s);
    return s;
  }
};

// The reader of a parameter type: references and const dropped, pointers to Tensor kept.
template <typename P>
struct ReadAs {
  using type = std::remove_const_t<std::remove_reference_t<P>>;
};
template <typename P>
struct ReadAs<P *> {
  using type = std::remove_const_t<P> *;
};
template <typename P>
using ParamReader = FromJs<typename ReadAs<P>::type>;

// ---------------------------------------------------------------- C++ -> JS (by result type)

template <typename T, typename = void>
struct ToJs;

template <>
struct ToJs<void> {
  static constexpr const char *ts = "void";
};

template <>
struct ToJs<rx::TensorPtr> {  // results are never null, except where the type says OptionalTensor
  static constexpr const char *ts = "TensorHandle";
  static Napi::Value write(Napi::Env env, rx::TensorPtr t) { return TensorHandle::Wrap(env, std::move(t)); }
};

template <>
struct ToJs<rx::ops::OptionalTensor> {
  static constexpr const char *ts = "TensorHandle | null";
  static Napi::Value write(Napi::Env env, rx::ops::OptionalTensor t) { return TensorHandle::Wrap(env, std::move(t.ptr)); }
};

template <typename T>
struct ToJs<T, std::enable_if_t<std::is_arithmetic_v<T> && !std::is_same_v<T, bool>>> {
  static constexpr const char *ts = "number";
  static Napi::Value write(Napi::Env env, T v) { return Napi::Number::New(env, (double)v); }
};

template <>
struct ToJs<bool> {
  static constexpr const char *ts = "boolean";
  static Napi::Value write(Napi::Env env, bool v) { return Napi::Boolean::New(env, v); }
};

template <>
struct ToJs<std::string> {
  static constexpr const char *ts = "string";
  static Napi::Value write(Napi::Env env, const std::string &v) { return Napi::String::New(env, v); }
};

template <typename... Ts>
struct ToJs<std::tuple<Ts...>> {
  static std::string type() {
    std::string s = "[";
    size_t i = 0;
    ((s += std::string(i++ ? ", " : "") + ToJs<Ts>::ts), ...);
    return s + "]";
  }
  static Napi::Value write(Napi::Env env, std::tuple<Ts...> t) {
    Napi::Array a = Napi::Array::New(env, sizeof...(Ts));
    std::apply([&](auto &...v) {
      uint32_t i = 0;
      (a.Set(i++, ToJs<std::decay_t<decltype(v)>>::write(env, std::move(v))), ...);
    }, t);
    return a;
  }
};

struct Writer {
  Napi::Object obj;
  template <typename T>
  void field(const char *name, T &v) {
    obj.Set(name, ToJs<T>::write(obj.Env(), v));
  }
};

template <typename S>
struct ToJs<S, std::enable_if_t<HasFields<S>::value>> {
  static constexpr const char *ts = Fields<S>::ts;
  static Napi::Value write(Napi::Env env, S s) {
    Writer w{Napi::Object::New(env)};
    Fields<S>::visit(w, s);
    return w.obj;
  }
};

template <typename T>
struct HasTupleType : std::false_type {};
template <typename... Ts>
struct HasTupleType<std::tuple<Ts...>> : std::true_type {};

// The TS name of a result type (tuples are spelled out).
template <typename R>
std::string result_ts() {
  if constexpr (HasTupleType<R>::value) return ToJs<R>::type();
  else return ToJs<R>::ts;
}

}  // namespace rxb
