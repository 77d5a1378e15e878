#include "tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace rx {

namespace {
// Counters per device type; CUDA storage is accounted by its backend's allocator.
std::atomic<int64_t> g_tensors{0}, g_storages{0}, g_bytes{0}, g_peak{0};

void add_bytes(int64_t b) {
  int64_t now = g_bytes.fetch_add(b) + b;
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}
}  // namespace

MemoryStats memory_stats(Device) { return {g_tensors.load(), g_storages.load(), g_bytes.load(), g_peak.load()}; }

int64_t shape_numel(const Shape &s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  if (device.type != DeviceType::CPU)
    fail(ErrorCode::Device, "alloc", "device", "cpu storage from the core allocator", device.str());
  // 64-byte alignment for AVX-512 loads; at least one line so a zero-size tensor has a pointer.
  size_t rounded = ((bytes + 63) / 64) * 64;
  if (rounded == 0) rounded = 64;
  data_ = std::aligned_alloc(64, rounded);
  if (!data_)
    throw Error(ErrorCode::OOM, "alloc: out of host memory allocating " + std::to_string(bytes) + " bytes");
  g_storages++;
  add_bytes((int64_t)bytes);
}

Storage::~Storage() {
  std::free(data_);
  g_storages--;
  g_bytes -= (int64_t)bytes_;
}

Tensor::Tensor(Shape shape, DType dtype, Device device)
    : shape_(std::move(shape)), dtype_(dtype), numel_(shape_numel(shape_)) {
  storage_ = std::make_shared<Storage>(numel_ * dtype_size(dtype_), device);
  g_tensors++;
}

Tensor::Tensor(Shape shape, DType dtype, std::shared_ptr<Storage> storage)
    : shape_(std::move(shape)), dtype_(dtype), numel_(shape_numel(shape_)), storage_(std::move(storage)) {
  if ((size_t)numel_ * dtype_size(dtype_) > storage_->bytes())
    throw Error(ErrorCode::Internal, "tensor view larger than its storage");
  g_tensors++;
}

Tensor::Tensor(const Tensor &o) : shape_(o.shape_), dtype_(o.dtype_), numel_(o.numel_), storage_(o.storage_) {
  g_tensors++;
}

Tensor::~Tensor() { g_tensors--; }

TensorPtr empty(const Shape &shape, DType dtype, Device device) {
  return std::make_shared<Tensor>(shape, dtype, device);
}

}  // namespace rx
