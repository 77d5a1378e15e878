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
  void submit(std::function<void()> fn) override { fn(); }
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

  void submit(std::function<void()> fn) override {
    Owner o = current_owner();
    {
      std::lock_guard<std::mutex> g(m_);
      queue_.push_back({o, std::move(fn)});
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
      auto [owner, fn] = std::move(queue_.front());
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
      busy_ = false;
      if (queue_.empty()) idle_cv_.notify_all();
    }
  }

  std::mutex m_;
  std::condition_variable cv_, idle_cv_;
  std::deque<std::pair<Owner, std::function<void()>>> queue_;
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

void enqueue(Device d, std::function<void()> fn) {
  if (d.type == DeviceType::CPU) cpu_executor().submit(std::move(fn));
  else fn();
}

void enqueue_copy(const Tensor &src, Tensor &dst) {
  if (dst.numel() == 0) return;  // nothing to move (kernels may divide by an extent)
  if (src.device().type == DeviceType::CPU && dst.device().type == DeviceType::CPU) {
    Tensor d = dst;  // copies share storage: the queued kernel keeps both alive
    cpu_executor().submit([=]() mutable { cpu_backend().kernels().copy(src, d); });
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
