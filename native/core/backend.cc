#include "backend.h"

#include <mutex>

#include "cpu/cpu_backend.h"

namespace rx {

namespace {
Backend *g_backends[2] = {nullptr, nullptr};
std::mutex g_mutex;
}  // namespace

Backend &cpu_backend() {
  static cpu::CpuBackend cpu;
  return cpu;
}

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
                                       " expected the CUDA backend library to be loaded, received a CPU-only build: build it with `npm run build:cuda` on a machine with the CUDA toolkit and cuDNN 9");
  return *b;
}

}  // namespace rx
