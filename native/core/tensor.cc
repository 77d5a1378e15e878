#include "tensor.h"

#include "backend.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace rx {

namespace {
// Counters per device type. Bytes are what tensors hold; a caching allocator reports what it
// reserves through its backend.
struct Counters {
  std::atomic<int64_t> tensors{0}, storages{0}, bytes{0}, peak{0};
};
Counters g_count[2];

Counters &counters(Device d) { return g_count[(int)d.type]; }

void add_bytes(Counters &c, int64_t b) {
  int64_t now = c.bytes.fetch_add(b) + b;
  int64_t peak = c.peak.load();
  while (now > peak && !c.peak.compare_exchange_weak(peak, now)) {
  }
}
}  // namespace

MemoryStats memory_stats(Device d) {
  Counters &c = counters(d);
  MemoryStats s;
  s.tensors = c.tensors.load();
  s.storages = c.storages.load();
  s.bytes = c.bytes.load();
  s.peak_bytes = c.peak.load();
  // Reserved: live bytes plus what the allocator keeps cached for reuse. The CPU backend reports
  // only its cache; a device backend reports everything it holds.
  if (d.type == DeviceType::CPU) s.reserved_bytes = s.bytes + cpu_backend().reserved_bytes();
  else s.reserved_bytes = backend_available(d.type) ? backend_for(d).reserved_bytes() : s.bytes;
  return s;
}

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  data_ = backend_for(device).allocate(bytes);  // throws ERR_OOM / ERR_DEVICE
  counters(device).storages++;
  add_bytes(counters(device), (int64_t)bytes);
}

Storage::~Storage() {
  backend_for(device_).deallocate(data_, bytes_);
  counters(device_).storages--;
  counters(device_).bytes -= (int64_t)bytes_;
}

namespace {
// Every tensor the core makes passes here: an element or byte count that overflows (or exceeds
// kMaxTensorBytes) is an error before anything is allocated. The op layer says it first, naming
// the op; this is the backstop for shapes an op computes.
int64_t numel_or_throw(const Shape &s, DType dt) {
  int64_t n = checked_numel(s, dtype_size(dt));
  if (n < 0)
    throw Error(ErrorCode::OOM, "tensor: shape " + shape_str(s) + " expected at most " +
                                    std::to_string(kMaxTensorBytes) + " bytes of " + dtype_name(dt) +
                                    " with non-negative sizes, received more (or a negative size)");
  return n;
}
}  // namespace

Tensor::Tensor(Shape shape, DType dtype, Device device)
    : shape_(std::move(shape)), dtype_(dtype), numel_(numel_or_throw(shape_, dtype)) {
  storage_ = std::make_shared<Storage>(numel_ * dtype_size(dtype_), device);
  counters(device).tensors++;
}

Tensor::Tensor(Shape shape, DType dtype, std::shared_ptr<Storage> storage)
    : shape_(std::move(shape)), dtype_(dtype), numel_(numel_or_throw(shape_, dtype)), storage_(std::move(storage)) {
  if ((size_t)numel_ * dtype_size(dtype_) > storage_->bytes())
    throw Error(ErrorCode::Internal, "tensor view larger than its storage");
  counters(storage_->device()).tensors++;
}

Tensor::Tensor(const Tensor &o)
    : shape_(o.shape_), dtype_(o.dtype_), numel_(o.numel_), storage_(o.storage_), layout_(o.layout_) {
  counters(storage_->device()).tensors++;
}

Tensor::~Tensor() { counters(storage_->device()).tensors--; }

TensorPtr empty(const Shape &shape, DType dtype, Device device) {
  return std::make_shared<Tensor>(shape, dtype, device);
}

}  // namespace rx
