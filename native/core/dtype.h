// Element types. float32 is the compute type, float64 exists for gradcheck, int32 carries
// class indices, argmax results and pooling indices, bfloat16 is the GPU's mixed-precision
// storage type (the CPU backend only casts to and from it).
#pragma once

#include <cstddef>
#include <string>

namespace rx {

enum class DType { F32 = 0, F64 = 1, I32 = 2, BF16 = 3 };

inline size_t dtype_size(DType t) { return t == DType::F64 ? 8 : t == DType::BF16 ? 2 : 4; }

inline const char *dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F64: return "float64";
    case DType::I32: return "int32";
    case DType::BF16: return "bfloat16";
  }
  return "?";
}

inline bool dtype_is_float(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::BF16; }

enum class DeviceType { CPU = 0, CUDA = 1 };

// Physical order of a 4-D tensor's elements. The logical shape is always [N, C, H, W] (PyTorch's);
// a backend may store activations channels-last (the CUDA backend does, for cuDNN's fused
// batch-norm kernels). Host copies, views and the CPU backend always see Contiguous.
enum class Layout { Contiguous = 0, ChannelsLast = 1 };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool operator==(const Device &o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device &o) const { return !(*this == o); }
  std::string str() const { return type == DeviceType::CPU ? "cpu" : "cuda:" + std::to_string(index); }
};

}  // namespace rx
