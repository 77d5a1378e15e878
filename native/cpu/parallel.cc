#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace rx::cpu {

namespace {

thread_local bool t_in_parallel = false;

// Each parallel region gets its own JobState, so a worker that wakes late can only see a
// finished region (next >= ntasks) and never steals a task index from the following one.
struct JobState {
  const std::function<void(int)> *job;
  int ntasks;
  std::atomic<int> next{0};
  int pending;
  std::exception_ptr error;
};

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return (int)workers_.size() + 1; }

  void resize(int n) {
    std::lock_guard<std::mutex> run_lock(run_mutex_);
    stop();
    stopping_ = false;
    stopping_flag_.store(false);
    for (int i = 0; i < n - 1; i++) workers_.emplace_back([this] { loop(); });
  }

  // Runs job(t) for t in [0, ntasks) across the workers and the caller; rethrows the first error.
  void run(int ntasks, const std::function<void(int)> &job) {
    std::lock_guard<std::mutex> run_lock(run_mutex_);  // one parallel region at a time
    auto st = std::make_shared<JobState>();
    st->job = &job;
    st->ntasks = ntasks;
    st->pending = ntasks;
    {
      std::lock_guard<std::mutex> g(m_);
      current_ = st;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    work(*st);
    std::unique_lock<std::mutex> g(m_);
    done_cv_.wait(g, [&] { return st->pending == 0; });
    current_.reset();
    if (st->error) std::rethrow_exception(st->error);
  }

 private:
  void work(JobState &st) {
    t_in_parallel = true;
    for (;;) {
      int t = st.next.fetch_add(1);
      if (t >= st.ntasks) break;
      std::exception_ptr err;
      try {
        (*st.job)(t);
      } catch (...) {
        err = std::current_exception();
      }
      std::lock_guard<std::mutex> g(m_);
      if (err && !st.error) st.error = err;
      if (--st.pending == 0) done_cv_.notify_all();
    }
    t_in_parallel = false;
  }

  // After each region a worker spins for a while (spin_ns_) before it sleeps on the condition
  // variable: a model's forward is hundreds of regions of 10 us - 2 ms, and waking a sleeping
  // worker took so long on a small VM that the caller had finished most regions alone (the
  // grouped 3x3 convs of a batch-1 inference ran at 50% of 2 threads, 1x1 convs at 72-87%).
  void loop() {
    uint64_t seen = 0;
    for (;;) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; generation_.load(std::memory_order_acquire) == seen && !stopping_flag_.load(); i++) {
        cpu_relax();
        if ((i & 63) == 63 && std::chrono::steady_clock::now() - t0 > std::chrono::nanoseconds(spin_ns_)) break;
      }
      std::shared_ptr<JobState> st;
      {
        std::unique_lock<std::mutex> g(m_);
        cv_.wait(g, [&] { return stopping_ || generation_.load() != seen; });
        if (stopping_) return;
        seen = generation_.load();
        st = current_;
      }
      if (st) work(*st);
    }
  }

  static void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }

  void stop() {
    {
      std::lock_guard<std::mutex> g(m_);
      stopping_ = true;
      stopping_flag_.store(true);
    }
    cv_.notify_all();
    for (auto &w : workers_) w.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex m_, run_mutex_;
  std::condition_variable cv_, done_cv_;
  std::shared_ptr<JobState> current_;
  std::atomic<uint64_t> generation_{0};
  bool stopping_ = false;
  std::atomic<bool> stopping_flag_{false};  // stopping_, readable without the lock while spinning
  // RESNEXT_CPU_SPIN_US (default 200; 0: sleep at once).
  const int64_t spin_ns_ = [] {
    const char *e = std::getenv("RESNEXT_CPU_SPIN_US");
    const long v = e ? std::atol(e) : 200;
    return (int64_t)std::clamp<long>(v, 0, 100000) * 1000;
  }();
};

int default_threads() {
  if (const char *e = std::getenv("RESNEXT_NUM_THREADS")) {
    int n = std::atoi(e);
    if (n > 0) return n;
  }
  unsigned h = std::thread::hardware_concurrency();
  return h ? (int)h : 1;
}

Pool &pool() {
  static Pool p(default_threads());
  return p;
}

}  // namespace

int num_threads() { return pool().size(); }
void set_num_threads(int n) { pool().resize(std::max(1, n)); }

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)> &fn) {
  if (end <= begin) return;
  int64_t n = end - begin;
  grain = std::max<int64_t>(1, grain);
  int nt = num_threads();
  int64_t chunks = std::min<int64_t>(nt, (n + grain - 1) / grain);
  if (chunks <= 1 || t_in_parallel) {
    fn(begin, end);
    return;
  }
  int64_t step = (n + chunks - 1) / chunks;
  pool().run((int)chunks, [&](int t) {
    int64_t b = begin + t * step, e = std::min(end, b + step);
    if (b < e) fn(b, e);
  });
}

}  // namespace rx::cpu
