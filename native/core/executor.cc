#include "executor.h"

#include "backend.h"

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

namespace rx {

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
    {
      std::lock_guard<std::mutex> g(m_);
      queue_.push_back(std::move(fn));
    }
    cv_.notify_all();
  }

  void synchronize() override {
    std::unique_lock<std::mutex> g(m_);
    idle_cv_.wait(g, [this] { return queue_.empty() && !busy_; });
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> g(m_);
    for (;;) {
      cv_.wait(g, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty() && stop_) return;
      std::function<void()> fn = std::move(queue_.front());
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
      if (err && !error_) error_ = err;
      busy_ = false;
      if (queue_.empty()) idle_cv_.notify_all();
    }
  }

  std::mutex m_;
  std::condition_variable cv_, idle_cv_;
  std::deque<std::function<void()>> queue_;
  bool busy_ = false, stop_ = false;
  std::exception_ptr error_;
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
