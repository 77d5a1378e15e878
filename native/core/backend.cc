#include "backend.h"

#include <dlfcn.h>

#include <mutex>


namespace rx {

namespace {
Backend *g_backends[2] = {nullptr, nullptr};
std::mutex g_mutex;
}  // namespace

void register_backend(DeviceType t, Backend *b) {
  std::lock_guard<std::mutex> g(g_mutex);
  g_backends[(int)t] = b;
}

bool backend_available(DeviceType t) {
  if (t == DeviceType::CPU) return true;
  std::lock_guard<std::mutex> g(g_mutex);
  return g_backends[(int)t] != nullptr;
}

Backend &backend_for(Device d) {
  if (d.type == DeviceType::CPU) return cpu_backend();
  std::lock_guard<std::mutex> g(g_mutex);
  Backend *b = g_backends[(int)d.type];
  if (!b)
    throw Error(ErrorCode::Device, "device " + d.str() +
                                       " expected a loaded CUDA backend, received none: call cudaAvailable() first (the JS "
                                       "layer does this for device 'cuda') and see cudaStatus() for why it cannot load");
  return *b;
}

const CudaLoadResult &load_cuda_backend(const std::string &library_path) {
  static CudaLoadResult result;
  static std::once_flag once;
  std::call_once(once, [&] {
    result.library = library_path;
    void *h = dlopen(library_path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char *e = dlerror();
      std::string msg = e ? e : "unknown error";
      result.reason = "could not load " + library_path + ": " + msg;
      if (msg.find("libcudnn") != std::string::npos || msg.find("libcublas") != std::string::npos)
        result.reason += " (install cuDNN 9 and cuBLAS for CUDA 13: apt packages cudnn9-cuda-13 and libcublas-13-0, or pip "
                         "nvidia-cudnn-cu13 and nvidia-cublas with their lib folders on LD_LIBRARY_PATH)";
      return;
    }
    auto entry = reinterpret_cast<BackendEntryFn>(dlsym(h, kCudaEntryName));
    if (!entry) {
      result.reason = library_path + " does not export " + kCudaEntryName + " (not a resnext CUDA backend)";
      return;
    }
    char err[1024] = {0};
    Backend *b = nullptr;
    if (entry(kBackendAbiVersion, &b, err, sizeof err) != 0 || !b) {
      result.reason = err[0] ? err : "the CUDA backend failed to initialise";
      return;
    }
    register_backend(DeviceType::CUDA, b);
    result.ok = true;
  });
  return result;
}

}  // namespace rx
