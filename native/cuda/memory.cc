// See memory.h. Calls only the CUDA runtime functions a fake can stand in for.
#include "memory.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>

#include "policy.h"

namespace rx::cuda {

namespace {
// The first error that left the context unusable (a kernel fault): every later failure names it,
// so the first cause is never hidden behind what it broke (issue 14, finding 4).
std::mutex g_sticky_mu;
std::string g_first_sticky;
}  // namespace

void throw_cuda(cudaError_t e, const char *what) {
  cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  std::string msg = policy::cuda_error_message(what, e, cudaGetErrorName(e), cudaGetErrorString(e));
  if (policy::is_sticky(e)) {
    std::lock_guard<std::mutex> g(g_sticky_mu);
    if (g_first_sticky.empty()) g_first_sticky = msg;
    else msg = policy::context_lost_message(what, g_first_sticky);
  }
  throw Error(policy::code_for(e), msg);
}

// ---------------------------------------------------------------- allocator

size_t CachingAllocator::round_size(size_t bytes) {
  constexpr size_t kSmall = 512, kLarge = 2u << 20, kSplit = 1u << 20;
  if (bytes < kSplit) return std::max(kSmall, (bytes + kSmall - 1) / kSmall * kSmall);
  return (bytes + kLarge - 1) / kLarge * kLarge;
}

void *CachingAllocator::allocate(size_t bytes) {
  size_t size = round_size(bytes);
  // Exact size first, then a cached block at most 25% larger (keeps fragmentation bounded).
  auto it = free_.lower_bound(size);
  if (it != free_.end() && it->first <= size + size / 4) {
    void *p = it->second;
    size_t got = it->first;
    free_.erase(it);
    live_[p] = got;
    allocated_ += (int64_t)got;
    return p;
  }
  void *p = nullptr;
  cudaError_t e = cudaMalloc(&p, size);
  // Only an out-of-memory is worth releasing the cache for; anything else (after a kernel fault
  // every call returns the fault) is reported as what it is, not as ERR_OOM (finding 4).
  if (e != cudaSuccess && !policy::is_out_of_memory(e)) throw_cuda(e, "alloc");
  if (e != cudaSuccess) {
    cudaGetLastError();
    release_cached();
    e = cudaMalloc(&p, size);
    if (e != cudaSuccess && !policy::is_out_of_memory(e)) throw_cuda(e, "alloc");
    if (e != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      bool info_ok = cudaMemGetInfo(&free_b, &total_b) == cudaSuccess;
      if (!info_ok) cudaGetLastError();
      throw Error(ErrorCode::OOM, policy::alloc_failure_message(bytes, allocated_, reserved_, info_ok, free_b, total_b));
    }
  }
  live_[p] = size;
  reserved_ += (int64_t)size;
  allocated_ += (int64_t)size;
  peak_reserved_ = std::max(peak_reserved_, reserved_);
  return p;
}

void CachingAllocator::deallocate(void *p) {
  auto it = live_.find(p);
  if (it == live_.end()) return;  // not ours; never throw from a destructor path
  allocated_ -= (int64_t)it->second;
  free_.emplace(it->second, p);
  live_.erase(it);
}

void CachingAllocator::release_cached() {
  if (free_.empty()) return;
  // cudaFree synchronises the device, so blocks whose last readers are still queued are safe.
  for (auto &[size, p] : free_) {
    cudaFree(p);
    reserved_ -= (int64_t)size;
  }
  free_.clear();
}

// ---------------------------------------------------------------- uploads

void staged_upload(StagingSlot *slots, size_t nslots, size_t &next, size_t chunk, void *dst, const void *src,
                   size_t n, cudaStream_t stream) {
  // Pageable host memory is copied into our pinned staging buffers first: cudaMemcpyAsync from
  // pageable memory makes no promise about when it has read the source (finding 10). The slots
  // alternate, so the CPU fills one while the DMA of another runs; a slot is refilled only after
  // the copy that read it has finished.
  for (auto [off, len] : policy::staging_chunks(n, chunk)) {
    StagingSlot &slot = slots[next];
    next = (next + 1) % nslots;
    if (!slot.buf) {
      check_cuda(cudaMallocHost(&slot.buf, chunk), "copy to cuda (pinned staging buffer)");
      check_cuda(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming), "copy to cuda");
    } else {
      check_cuda(cudaEventSynchronize(slot.done), "copy to cuda");
    }
    std::memcpy(slot.buf, static_cast<const char *>(src) + off, len);
    check_cuda(cudaMemcpyAsync(static_cast<char *>(dst) + off, slot.buf, len, cudaMemcpyHostToDevice, stream),
               "copy to cuda");
    check_cuda(cudaEventRecord(slot.done, stream), "copy to cuda");
  }
}

}  // namespace rx::cuda
