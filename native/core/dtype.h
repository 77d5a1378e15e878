// Element types. float32 is the compute type, float64 exists for gradcheck, int32 carries
// class indices, argmax results and pooling indices.
#pragma once

#include <cstddef>
#include <string>

namespace rx {

enum class DType { F32 = 0, F64 = 1, I32 = 2 };

inline size_t dtype_size(DType t) { return t == DType::F64 ? 8 : 4; }

inline const char *dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F64: return "float64";
    case DType::I32: return "int32";
  }
  return "?";
}

inline bool dtype_is_float(DType t) { return t == DType::F32 || t == DType::F64; }

enum class DeviceType { CPU = 0, CUDA = 1 };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool operator==(const Device &o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device &o) const { return !(*this == o); }
  std::string str() const { return type == DeviceType::CPU ? "cpu" : "cuda:" + std::to_string(index); }
};

}  // namespace rx
