// Tensor: a shape, a dtype, a device and shared storage. Tensors are always dense and
// row-major over their logical shape (NCHW for activations on the CPU); a reshape is a new
// Tensor over the same Storage. Live storage bytes and tensor counts are tracked for memory().
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "dtype.h"
#include "error.h"

namespace rx {

using Shape = std::vector<int64_t>;

struct MemoryStats {
  int64_t tensors = 0;   // live Tensor objects (handles and views)
  int64_t storages = 0;  // live allocations
  int64_t bytes = 0;     // bytes in live allocations
  int64_t peak_bytes = 0;
  int64_t reserved_bytes = 0;  // held by a caching allocator (CUDA), >= bytes
};
// Live tensors, storages and bytes on one device type (all devices of that type).
MemoryStats memory_stats(Device d);

// State a backend keeps from a forward kernel for the backward kernel that is handed the same
// storage again (the CUDA batch norm's cuDNN reserve space). Freed with the storage.
struct BackendSaved {
  virtual ~BackendSaved() = default;
};

// One allocation on one device, obtained from (and returned to) that device's backend.
class Storage {
 public:
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage &) = delete;
  Storage &operator=(const Storage &) = delete;
  void *data() { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  const std::shared_ptr<BackendSaved> &saved() const { return saved_; }
  void set_saved(std::shared_ptr<BackendSaved> s) { saved_ = std::move(s); }

 private:
  std::shared_ptr<BackendSaved> saved_;
  void *data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
};

class Tensor {
 public:
  Tensor(Shape shape, DType dtype, Device device = {});  // uninitialised storage
  Tensor(Shape shape, DType dtype, std::shared_ptr<Storage> storage);
  Tensor(const Tensor &o);
  Tensor &operator=(const Tensor &) = delete;
  ~Tensor();

  const Shape &shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int ndim() const { return (int)shape_.size(); }
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_->device(); }
  size_t nbytes() const { return numel_ * dtype_size(dtype_); }
  const std::shared_ptr<Storage> &storage() const { return storage_; }
  Layout layout() const { return layout_; }
  void set_layout(Layout l) { layout_ = l; }  // by the backend that writes the data
  // The backend state attached to this tensor's storage (see BackendSaved); views share it.
  BackendSaved *saved() const { return storage_->saved().get(); }
  void set_saved(std::shared_ptr<BackendSaved> s) { storage_->set_saved(std::move(s)); }

  template <typename T>
  T *data() { return static_cast<T *>(storage_->data()); }
  template <typename T>
  const T *data() const { return static_cast<const T *>(storage_->data()); }
  void *raw() { return storage_->data(); }
  const void *raw() const { return storage_->data(); }

 private:
  Shape shape_;
  DType dtype_;
  int64_t numel_;
  std::shared_ptr<Storage> storage_;
  Layout layout_ = Layout::Contiguous;
};

using TensorPtr = std::shared_ptr<Tensor>;

inline int64_t shape_numel(const Shape &s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

// The largest tensor the core makes: 2^50 bytes (1 PiB), far above any real device, far below
// where element, byte and stride arithmetic in int64 could overflow.
constexpr int64_t kMaxTensorBytes = int64_t(1) << 50;

// The element count of shape, or -1 when a size is negative or the product does not fit (or
// its bytes at elem_size exceed kMaxTensorBytes). A zero size anywhere gives 0, never -1.
inline int64_t checked_numel(const Shape &s, size_t elem_size) {
  for (auto d : s)
    if (d < 0) return -1;
  for (auto d : s)
    if (d == 0) return 0;
  int64_t n = 1;
  for (auto d : s)
    if (__builtin_mul_overflow(n, d, &n)) return -1;
  int64_t bytes;
  if (__builtin_mul_overflow(n, (int64_t)elem_size, &bytes) || bytes > kMaxTensorBytes) return -1;
  return n;
}
TensorPtr empty(const Shape &shape, DType dtype, Device device = {});

}  // namespace rx
