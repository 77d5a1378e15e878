// Device memory and the host-side error path of the CUDA backend, apart from the rest so that
// test/native/cuda_memory_test.cc can run them against a fake CUDA runtime (it defines the few
// runtime functions used here) on a machine without a GPU: which cudaMalloc failures are
// ERR_OOM and which are reported as the fault that caused them (finding 4), and that an upload's
// host buffer is free to reuse once the call returns (finding 10).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <unordered_map>

#include "../core/error.h"

namespace rx::cuda {

// Throws rx::Error for a CUDA error: ERR_OOM for cudaErrorMemoryAllocation, else ERR_CUDA; an
// error that leaves the context unusable says so, and later ones name the first (policy.h).
[[noreturn]] void throw_cuda(cudaError_t e, const char *what);
inline void check_cuda(cudaError_t e, const char *what) {
  if (e != cudaSuccess) throw_cuda(e, what);
}

// Stream-ordered caching allocator. With a single stream, a block freed by the host can be
// handed to the next allocation at once: the kernels that still read it were queued earlier
// on the same stream, so they finish before anything the new owner queues.
// Sizes are rounded (512 B below 1 MiB, 2 MiB above) so a training loop's repeated shapes hit
// exact-size free lists. cudaMalloc's out-of-memory frees every cached block and retries once,
// then throws ERR_OOM; nothing is left half-done, so the process keeps working. Any other
// cudaMalloc failure (after a kernel fault every call returns the fault) is thrown as ERR_CUDA
// naming that error, without touching the cache.
class CachingAllocator {
 public:
  void *allocate(size_t bytes);
  void deallocate(void *p);
  void release_cached();  // cudaFree every cached (unused) block
  int64_t reserved_bytes() const { return reserved_; }
  int64_t allocated_bytes() const { return allocated_; }
  int64_t peak_reserved_bytes() const { return peak_reserved_; }
  static size_t round_size(size_t bytes);

 private:
  std::multimap<size_t, void *> free_;       // size -> block, unused
  std::unordered_map<void *, size_t> live_;  // block -> size, handed out
  int64_t reserved_ = 0, allocated_ = 0, peak_reserved_ = 0;
};

// A pinned staging buffer and the event of the last copy that read it.
struct StagingSlot {
  void *buf = nullptr;  // pinned, `chunk` bytes, allocated on first use
  cudaEvent_t done = nullptr;
};
// Host-to-device copy of n bytes from pageable memory through the pinned slots (used in turn,
// starting at slots[next]; next is advanced): the source is copied into a slot before the
// asynchronous copy is queued, so the caller may free or reuse it as soon as this returns.
void staged_upload(StagingSlot *slots, size_t nslots, size_t &next, size_t chunk, void *dst, const void *src,
                   size_t n, cudaStream_t stream);

}  // namespace rx::cuda
