// Collectives over gloo (Debian's libgloo-dev) for the data-parallel trainer (issue 15).
//
// Plain C++ (no napi.h): a process group is a gloo context connected in a full mesh over gloo's
// TCP transport, plus one worker thread that runs the group's collectives one at a time, in the
// order they were submitted. Every rank submits the same collectives in the same order (the
// trainer's bucket order is fixed), so serialising them on one thread keeps the ranks matched
// without per-op tags, and lets the JS thread submit work while earlier collectives still run.
// Every collective carries the context's timeout: a dead or stuck peer ends it with an error
// within that time instead of a hang.
//
// Rendezvous uses TcpStore, a client of the small key-value server that rank 0 runs in
// TypeScript (lib/train/distributed/store.ts), like torchrun's TCPStore: one protocol for one
// machine and for several.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gloo/context.h>
#include <gloo/rendezvous/store.h>

namespace resnext_dist {

/** gloo::rendezvous::Store over TCP: SET, GET (the server answers once the key exists). */
class TcpStore : public gloo::rendezvous::Store {
 public:
  TcpStore(const std::string& host, int port, std::chrono::milliseconds timeout);
  ~TcpStore() override;
  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override;

 private:
  void sendAll(const void* p, size_t n);
  void recvAll(void* p, size_t n, std::chrono::milliseconds timeout);
  void request(uint8_t op, const std::string& key, const std::vector<char>& value);
  int fd_ = -1;
  std::string where_;
  std::chrono::milliseconds timeout_;
};

/** One collective job: runs on the group's thread; `done` gets "" or the error message. */
struct Job {
  std::function<void()> run;
  std::function<void(const std::string& error)> done;
};

class Group {
 public:
  /** Connects rank `rank` of `size` (blocking): rendezvous through the store at host:port. */
  Group(int rank, int size, const std::string& storeHost, int storePort, const std::string& hostname,
        std::chrono::milliseconds timeout);
  ~Group();

  int rank() const { return rank_; }
  int size() const { return size_; }

  /** In-place allreduce of n floats (sum, or the mean with `average`). */
  void allreduce(float* data, size_t n, bool average);
  /** In-place broadcast of n floats from `root`. */
  void broadcast(float* data, size_t n, int root);
  void barrier();

  /** Queues a job for the group's thread (FIFO). */
  void submit(Job job);
  /** Stops the thread after the queued jobs (each gets an error if the group is closing). */
  void close();

 private:
  void loop();
  std::string describe(const char* op, size_t n, const std::exception& e) const;
  int rank_, size_;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<gloo::Context> context_;
  uint32_t tag_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool closing_ = false;
  std::thread thread_;
};

}  // namespace resnext_dist
