// native/cuda/memory.cc against a fake CUDA runtime (the runtime functions it calls are defined
// below), so the allocator's error paths and the staged upload run on a machine without a GPU:
//  - finding 4: only an out-of-memory is ERR_OOM (after releasing the cache and one retry); a
//    kernel fault returned by cudaMalloc is ERR_CUDA naming the fault, does not touch the
//    cache, and later failures name the first; a failing cudaMemGetInfo is not "0 of 0 free";
//  - finding 10: an upload's source buffer can be overwritten as soon as staged_upload returns:
//    the fake DMA runs only when the stream is synchronised, from the pinned copy.
// Built and run by test/gpu-check-policy.test.ts.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../native/cuda/memory.h"

using rx::Error;
using rx::ErrorCode;

// ---------------------------------------------------------------- the fake runtime

namespace fake {
size_t capacity = 64 << 20, used = 0;
cudaError_t malloc_error = cudaSuccess;  // returned by every cudaMalloc when set (a sticky fault)
bool meminfo_fails = false;
int mallocs = 0, frees = 0;
std::vector<std::pair<void *, size_t>> blocks;
struct Copy {
  void *dst;
  const void *src;
  size_t n;
};
std::vector<Copy> queued;  // the "stream": copies run when synchronised
std::vector<void *> pinned;
void run_stream() {
  for (auto &c : queued) std::memcpy(c.dst, c.src, c.n);
  queued.clear();
}
bool is_pinned(const void *p) {
  for (void *q : pinned)
    if (p >= q && p < static_cast<char *>(q) + (8 << 20)) return true;
  return false;
}
}  // namespace fake

extern "C" {
cudaError_t cudaMalloc(void **p, size_t n) {
  fake::mallocs++;
  if (fake::malloc_error != cudaSuccess) return fake::malloc_error;
  if (fake::used + n > fake::capacity) return cudaErrorMemoryAllocation;
  *p = std::malloc(n);
  fake::used += n;
  fake::blocks.push_back({*p, n});
  return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
  fake::frees++;
  for (auto it = fake::blocks.begin(); it != fake::blocks.end(); ++it)
    if (it->first == p) {
      fake::used -= it->second;
      fake::blocks.erase(it);
      break;
    }
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *f, size_t *t) {
  if (fake::meminfo_fails) return fake::malloc_error != cudaSuccess ? fake::malloc_error : cudaErrorUnknown;
  *f = fake::capacity - fake::used;
  *t = fake::capacity;
  return cudaSuccess;
}
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
const char *cudaGetErrorName(cudaError_t e) {
  return e == cudaErrorIllegalAddress ? "cudaErrorIllegalAddress" : e == cudaErrorMemoryAllocation ? "cudaErrorMemoryAllocation" : "cudaErrorOther";
}
const char *cudaGetErrorString(cudaError_t e) {
  return e == cudaErrorIllegalAddress ? "an illegal memory access was encountered" : "some error";
}
cudaError_t cudaMallocHost(void **p, size_t n) {
  *p = std::malloc(n);
  fake::pinned.push_back(*p);
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int) {
  *e = reinterpret_cast<cudaEvent_t>(new int(0));
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) {
  fake::run_stream();  // the copies queued before the event have finished
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind, cudaStream_t) {
  fake::queued.push_back({dst, src, n});
  return cudaSuccess;
}
}

// ---------------------------------------------------------------- checks

static int failures = 0, checks = 0;
#define CHECK(cond)                                               \
  do {                                                            \
    checks++;                                                     \
    if (!(cond)) {                                                \
      failures++;                                                 \
      std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
    }                                                             \
  } while (0)
static bool has(const std::string &s, const char *sub) { return s.find(sub) != std::string::npos; }

template <typename F>
static bool throws(F f, ErrorCode code, std::string &msg) {
  try {
    f();
  } catch (const Error &e) {
    msg = e.what();
    return e.code() == code;
  }
  msg = "(nothing thrown)";
  return false;
}

int main() {
  using rx::cuda::CachingAllocator;
  std::string msg;
  {
    // Out of memory: the cache is released and the allocation retried before ERR_OOM.
    CachingAllocator a;
    void *b1 = a.allocate(24 << 20), *b2 = a.allocate(24 << 20);
    a.deallocate(b1);  // cached, still reserved
    CHECK(a.reserved_bytes() == (48 << 20));
    void *b3 = a.allocate(30 << 20);  // does not fit beside the cache: release, retry, succeed
    CHECK(b3 != nullptr);
    CHECK(fake::frees == 1);
    CHECK(throws([&] { a.allocate(40 << 20); }, ErrorCode::OOM, msg));
    CHECK(has(msg, "out of GPU memory") && has(msg, "free on the device"));
    a.deallocate(b2);
    a.deallocate(b3);
    a.release_cached();
    CHECK(fake::used == 0 && a.reserved_bytes() == 0);
  }
  {
    // A kernel fault that cudaMalloc returns: ERR_CUDA naming it, no release or retry, and the
    // cache stays as it was (it is not the problem).
    CachingAllocator a;
    void *b = a.allocate(4 << 20);
    a.deallocate(b);
    int frees = fake::frees, mallocs = fake::mallocs;
    fake::malloc_error = cudaErrorIllegalAddress;
    CHECK(throws([&] { a.allocate(16 << 20); }, ErrorCode::Cuda, msg));
    CHECK(has(msg, "cudaErrorIllegalAddress") && has(msg, "context is unusable") && !has(msg, "out of GPU memory"));
    CHECK(fake::frees == frees && fake::mallocs == mallocs + 1);
    CHECK(a.reserved_bytes() == (4 << 20));
    // The next failure names the first one.
    CHECK(throws([&] { a.allocate(16 << 20); }, ErrorCode::Cuda, msg));
    CHECK(has(msg, "unusable since an earlier failure") && has(msg, "first failure: alloc: CUDA error cudaErrorIllegalAddress"));
    CHECK(throws([&] { rx::cuda::check_cuda(cudaErrorLaunchFailure, "synchronize"); }, ErrorCode::Cuda, msg));
    CHECK(has(msg, "synchronize") && has(msg, "first failure"));
    fake::malloc_error = cudaSuccess;
    a.release_cached();
  }
  {
    // A failing cudaMemGetInfo is reported as unknown, not as "0 of 0 free".
    CachingAllocator a;
    fake::meminfo_fails = true;
    CHECK(throws([&] { a.allocate(100 << 20); }, ErrorCode::OOM, msg));
    CHECK(has(msg, "free memory unknown") && !has(msg, "0 of 0"));
    fake::meminfo_fails = false;
  }
  {
    // Staged uploads: overwrite the source right after each call; the device gets what the
    // source held at the call. 20 MiB through two 8 MiB slots (a slot is reused only after the
    // copy that read it ran).
    const size_t n = 20 << 20, chunk = 8 << 20;
    std::vector<unsigned char> src(n), dev(n, 0), dev2(1000, 0);
    for (size_t i = 0; i < n; i++) src[i] = (unsigned char)(i * 7 + 3);
    std::vector<unsigned char> expect = src;
    rx::cuda::StagingSlot slots[2];
    size_t next = 0;
    rx::cuda::staged_upload(slots, 2, next, chunk, dev.data(), src.data(), n, nullptr);
    for (auto &c : fake::queued) CHECK(fake::is_pinned(c.src));  // never the caller's memory
    std::memset(src.data(), 0xee, n);  // the caller frees or reuses its buffer at once
    std::vector<unsigned char> small(1000, 0x5a);
    rx::cuda::staged_upload(slots, 2, next, chunk, dev2.data(), small.data(), small.size(), nullptr);
    std::memset(small.data(), 0, small.size());
    fake::run_stream();  // the stream drains
    CHECK(std::memcmp(dev.data(), expect.data(), n) == 0);
    CHECK(dev2[0] == 0x5a && dev2[999] == 0x5a);
    CHECK(fake::pinned.size() == 2);
    CHECK(next == (3 + 1) % 2);
  }
  std::printf("cuda_memory_test: %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
