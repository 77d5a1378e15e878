// The backend interface: what a device provides besides its kernels (memory, synchronisation,
// device information, threads) and its kernel table (Kernels in ops.h), which the backend fills
// beside each kernel. The op layer (ops.cc) validates arguments, infers and allocates outputs,
// and then calls the kernel of the inputs' device with everything checked; a kernel only
// computes and assumes valid input. Adding an op: docs/adding-an-op.md.
// (ggml's backend interface struct; ATen's native_functions.yaml dispatch.)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ops.h"
#include "tensor.h"

namespace rx {

// The CUDA backend is a separate shared library built against these headers; the loader and
// the library refuse each other unless both were compiled from the same ones. The version is
// not written by hand: the build computes it from the contents of backend.h, ops.h, tensor.h,
// dtype.h and error.h (native/core/backend_abi.cmake for CMake, scripts/abi-hash.js for
// binding.gyp) and passes it as RESNEXT_BACKEND_ABI. A build that does not (a bench compiling
// sources by hand) gets 0, which no CUDA library accepts.
#ifndef RESNEXT_BACKEND_ABI
#define RESNEXT_BACKEND_ABI 0
#endif
constexpr uint64_t kBackendAbiVersion = RESNEXT_BACKEND_ABI;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char *name() const = 0;

  // Memory. allocate throws rx::Error(ERR_OOM) when the device is full; the process goes on.
  virtual void *allocate(size_t bytes) = 0;
  virtual void deallocate(void *p, size_t bytes) = 0;
  // Bytes held by a caching allocator: a device backend counts live and cached blocks, the CPU
  // backend only its cache of free blocks (live CPU bytes are counted by the core).
  virtual int64_t reserved_bytes() { return 0; }
  // Waits until every queued kernel has finished (a no-op for synchronous backends).
  virtual void synchronize() {}
  // A JSON object describing the device (name, memory, driver and library versions).
  virtual std::string device_info_json() { return "{}"; }
  // Worker threads its kernels use (the CPU backend's pool; 1 for a device backend).
  virtual int num_threads() { return 1; }
  virtual void set_num_threads(int) {}

  // The kernel table this backend filled (ops.h); the op layer calls kernels through it.
  virtual const Kernels &kernels() const = 0;
};

// Backend registry. The CPU backend is always present; the CUDA backend is registered by
// load_cuda_backend when its shared library loads.
Backend &backend_for(Device d);
void register_backend(DeviceType t, Backend *b);
bool backend_available(DeviceType t);
Backend &cpu_backend();

// The entry point a backend library exports (extern "C"): on success returns 0 and sets *out;
// otherwise returns non-zero and writes why into err (what is missing and how to fix it).
// A library may only use the inline parts of tensor.h / error.h (it cannot link against the
// addon), which is why Tensor's accessors are all inline.
using BackendEntryFn = int (*)(uint64_t abi_version, Backend **out, char *err, size_t err_len);
constexpr const char *kCudaEntryName = "resnext_cuda_backend_create";

struct CudaLoadResult {
  bool ok = false;
  std::string library;  // the path that was tried (or loaded)
  std::string reason;   // why it could not be used
};
// dlopen()s the CUDA backend library once (later calls return the first result) and registers it.
const CudaLoadResult &load_cuda_backend(const std::string &library_path);

}  // namespace rx
