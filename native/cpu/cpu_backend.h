// The CPU backend: our own kernels, NCHW, multithreaded with parallel.h. Convolutions and GEMM
// live in conv2d.cc / gemm.cc (vectorised, with runtime ISA selection); the memory-bound ops
// are written as plain loops the compiler vectorises. The kernels are free functions in
// tensor_ops.cc and nn_ops.cc, each entered in cpu_kernels() right after its definition.
#pragma once

#include "../core/backend.h"
#include "../core/error.h"

namespace rx::cpu {

// Calls body.template operator()<T>() with T = float or double for a float tensor.
#define RX_DISPATCH_FLOAT(dtype, op, ...)                                                \
  do {                                                                                   \
    if ((dtype) == ::rx::DType::F32) {                                                   \
      using T = float;                                                                   \
      __VA_ARGS__();                                                                     \
    } else if ((dtype) == ::rx::DType::F64) {                                            \
      using T = double;                                                                  \
      __VA_ARGS__();                                                                     \
    } else {                                                                             \
      ::rx::fail(::rx::ErrorCode::DType, op, "input", "float32 or float64", dtype_name(dtype)); \
    }                                                                                    \
  } while (0)

// The CPU backend's table: each kernel file sets its entries beside the kernels.
Kernels &cpu_kernels();

class CpuBackend final : public Backend {
 public:
  const char *name() const override { return "cpu"; }
  void *allocate(size_t bytes) override;
  void deallocate(void *p, size_t bytes) override;
  int64_t reserved_bytes() override;  // bytes held in the block cache
  void release_cached();              // returns cached blocks to the system
  int num_threads() override;
  void set_num_threads(int n) override;
  const Kernels &kernels() const override { return cpu_kernels(); }
};

}  // namespace rx::cpu
