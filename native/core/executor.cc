#include "executor.h"

#include "backend.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace rx {

namespace {
std::atomic<Owner> g_next_owner{1};
thread_local Owner t_owner = 0;  // 0: not yet assigned on this thread
}  // namespace

Owner current_owner() {
  if (t_owner == 0) t_owner = g_next_owner++;
  return t_owner;
}

OwnerScope::OwnerScope(Owner o) : prev_(current_owner()) { t_owner = o; }
OwnerScope::~OwnerScope() { t_owner = prev_; }

namespace {

class InlineExecutor final : public Executor {
 public:
  void submit(std::function<void()> fn, int64_t) override { fn(); }
  void synchronize() override {}
};

class QueueExecutor final : public Executor {
 public:
  QueueExecutor() : worker_([this] { loop(); }) {}
  ~QueueExecutor() override {
    {
      std::lock_guard<std::mutex> g(m_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }

  // Backpressure: a submitter waits while the queued kernels' outputs hold more than
  // max_pending_bytes_ (and while max_queued_ kernels wait). Each queued kernel holds its output,
  // allocated when the op was called, so an unbounded queue let a forward pass allocate every
  // activation before the first kernel ran: resnext50 inference at batch 16 peaked at the whole
  // network's activations (1,888 MiB) even though each intermediate was freed once read. Small
  // tensors never wait, so the JS thread still runs far ahead for small models.
  void submit(std::function<void()> fn, int64_t bytes) override {
    Owner o = current_owner();
    {
      std::unique_lock<std::mutex> g(m_);
      space_cv_.wait(g, [this] {
        return stop_ || queue_.empty() || (queue_.size() < max_queued_ && pending_bytes_ < max_pending_bytes_);
      });
      pending_bytes_ += bytes;
      queue_.push_back({o, std::move(fn), bytes});
    }
    cv_.notify_all();
  }

  void synchronize() override {
    Owner o = current_owner();
    std::unique_lock<std::mutex> g(m_);
    idle_cv_.wait(g, [this] { return queue_.empty() && !busy_; });
    auto it = errors_.find(o);
    if (it != errors_.end()) {
      std::exception_ptr e = it->second;
      errors_.erase(it);
      std::rethrow_exception(e);
    }
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> g(m_);
    for (;;) {
      cv_.wait(g, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty() && stop_) return;
      auto [owner, fn, bytes] = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      g.unlock();
      std::exception_ptr err;
      try {
        fn();
      } catch (...) {
        err = std::current_exception();
      }
      fn = nullptr;  // release the tensors the kernel held before reporting idle
      g.lock();
      if (err) errors_.emplace(owner, err);  // keeps the owner's first error
      pending_bytes_ -= bytes;  // the output is written: no longer only waiting memory
      space_cv_.notify_all();
      busy_ = false;
      if (queue_.empty()) idle_cv_.notify_all();
    }
  }

  std::mutex m_;
  std::condition_variable cv_, idle_cv_, space_cv_;
  struct Item {
    Owner owner;
    std::function<void()> fn;
    int64_t bytes;
  };
  std::deque<Item> queue_;
  int64_t pending_bytes_ = 0;
  // RESNEXT_CPU_QUEUE_MB / RESNEXT_CPU_QUEUE_DEPTH override (for measurements). Measured on 2
  // cores (AVX-512, load ~6): resnext50 inference at batch 16, native peak 1,888 MiB unbounded,
  // 828 MiB with at most 16 queued kernels, 423 MiB with 4; a ResNeXt-29 training step at batch
  // 128 was no slower bounded (fastest steps: unbounded 540-812 ms, 16 kernels 482-550, 4: 416).
  static int64_t env_or(const char *name, int64_t dflt) {
    const char *s = std::getenv(name);
    long long v = s ? std::atoll(s) : 0;
    return v > 0 ? (int64_t)v : dflt;
  }
  int64_t max_pending_bytes_ = env_or("RESNEXT_CPU_QUEUE_MB", 128) << 20;
  size_t max_queued_ = (size_t)env_or("RESNEXT_CPU_QUEUE_DEPTH", 1024);
  bool busy_ = false, stop_ = false;
  // First error per owner. An owner that never synchronises again (a terminated worker) leaves
  // one entry behind: bounded by the number of threads that ever queued a failing kernel.
  std::unordered_map<Owner, std::exception_ptr> errors_;
  std::thread worker_;
};

}  // namespace

Executor &cpu_executor() {
  // Never destroyed: kernels may still be queued when the process exits.
  static Executor *e = [] {
    const char *s = std::getenv("RESNEXT_SYNC");
    return (s && s[0] == '1') ? static_cast<Executor *>(new InlineExecutor()) : new QueueExecutor();
  }();
  return *e;
}

void enqueue(Device d, std::function<void()> fn, int64_t bytes) {
  if (d.type == DeviceType::CPU) cpu_executor().submit(std::move(fn), bytes);
  else fn();
}

void enqueue_copy(const Tensor &src, Tensor &dst) {
  if (dst.numel() == 0) return;  // nothing to move (kernels may divide by an extent)
  if (src.device().type == DeviceType::CPU && dst.device().type == DeviceType::CPU) {
    Tensor d = dst;  // copies share storage: the queued kernel keeps both alive
    cpu_executor().submit([=]() mutable { cpu_backend().kernels().copy(src, d); }, dst.nbytes());
    return;
  }
  cpu_executor().synchronize();  // the CPU side must be ready; the device side owns the transfer
  backend_for(dst.device().type != DeviceType::CPU ? dst.device() : src.device()).kernels().copy(src, dst);
}

void synchronize(Device d) {
  cpu_executor().synchronize();
  if (d.type != DeviceType::CPU) backend_for(d).synchronize();
}

}  // namespace rx
