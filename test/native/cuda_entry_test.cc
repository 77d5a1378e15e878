// Calls the CUDA library's entry point (backend.h kCudaEntryName) the way the addon's loader
// does, with a given backend ABI version, and prints what it returns: the ABI check runs before
// anything touches CUDA, so test/gpu-check-policy.test.ts can check it on a machine without a GPU.
//   cuda_entry_test LIBRARY ABI
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace rx {
class Backend;
}
using Entry = int (*)(uint64_t, rx::Backend **, char *, size_t);

int main(int argc, char **argv) {
  if (argc != 3) return 64;
  void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    std::printf("dlopen failed: %s\n", dlerror());
    return 65;
  }
  auto entry = reinterpret_cast<Entry>(dlsym(h, "resnext_cuda_backend_create"));
  if (!entry) return 66;
  char err[1024] = {0};
  rx::Backend *b = nullptr;
  int rc = entry(std::strtoull(argv[2], nullptr, 0), &b, err, sizeof err);
  std::printf("rc=%d backend=%s err=%s\n", rc, b ? "set" : "null", err);
  return 0;
}
