// See collective.h. The store protocol (shared with lib/train/distributed/store.ts), all integers
// little-endian u32: request = op (1 byte: 1 SET, 2 GET), key length, key, value length, value;
// SET is answered with one 0 byte, GET with the value's length and bytes once the key exists.
#include "collective.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <gloo/allreduce.h>
#include <gloo/broadcast.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>

namespace resnext_dist {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

static std::runtime_error sysError(const std::string& what) { return std::runtime_error(what + ": " + std::strerror(errno)); }

TcpStore::TcpStore(const std::string& host, int port, milliseconds timeout) : timeout_(timeout) {
  where_ = host + ":" + std::to_string(port);
  const auto deadline = Clock::now() + timeout;
  std::string last = "no attempt";
  // Rank 0's server may not be listening yet: retry until the timeout, as torchrun's clients do.
  while (true) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (rc != 0) throw std::runtime_error("store " + where_ + ": cannot resolve host (" + gai_strerror(rc) + ")");
    for (addrinfo* a = res; a && fd_ < 0; a = a->ai_next) {
      int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
      if (fd < 0) continue;
      if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
        fd_ = fd;
      } else {
        last = std::strerror(errno);
        ::close(fd);
      }
    }
    freeaddrinfo(res);
    if (fd_ >= 0) break;
    if (Clock::now() > deadline)
      throw std::runtime_error("store " + where_ + ": could not connect within " + std::to_string(timeout.count()) +
                               " ms (" + last + "); is rank 0 running and MASTER_ADDR/MASTER_PORT right?");
    std::this_thread::sleep_for(milliseconds(50));
  }
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

TcpStore::~TcpStore() {
  if (fd_ >= 0) ::close(fd_);
}

void TcpStore::sendAll(const void* p, size_t n) {
  auto* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t k = ::send(fd_, c, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) throw sysError("store " + where_ + ": send failed");
    c += k;
    n -= static_cast<size_t>(k);
  }
}

void TcpStore::recvAll(void* p, size_t n, milliseconds timeout) {
  auto* c = static_cast<char*>(p);
  const auto deadline = Clock::now() + timeout;
  while (n > 0) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) throw std::runtime_error("store " + where_ + ": no answer within " + std::to_string(timeout.count()) + " ms");
    pollfd pfd{fd_, POLLIN, 0};
    int rc = ::poll(&pfd, 1, static_cast<int>(left));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) throw sysError("store " + where_ + ": poll failed");
    if (rc == 0) continue;
    ssize_t k = ::recv(fd_, c, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k == 0) throw std::runtime_error("store " + where_ + ": connection closed by the server (rank 0 exited?)");
    if (k < 0) throw sysError("store " + where_ + ": recv failed");
    c += k;
    n -= static_cast<size_t>(k);
  }
}

static void putU32(std::vector<char>& b, uint32_t v) {
  for (int i = 0; i < 4; i++) b.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void TcpStore::request(uint8_t op, const std::string& key, const std::vector<char>& value) {
  std::vector<char> b;
  b.push_back(static_cast<char>(op));
  putU32(b, static_cast<uint32_t>(key.size()));
  b.insert(b.end(), key.begin(), key.end());
  putU32(b, static_cast<uint32_t>(value.size()));
  b.insert(b.end(), value.begin(), value.end());
  sendAll(b.data(), b.size());
}

void TcpStore::set(const std::string& key, const std::vector<char>& data) {
  request(1, key, data);
  char ack;
  recvAll(&ack, 1, timeout_);
}

std::vector<char> TcpStore::get(const std::string& key) {
  request(2, key, {});
  unsigned char len[4];
  recvAll(len, 4, timeout_);
  uint32_t n = len[0] | (len[1] << 8) | (len[2] << 16) | (static_cast<uint32_t>(len[3]) << 24);
  std::vector<char> out(n);
  if (n) recvAll(out.data(), n, timeout_);
  return out;
}

void TcpStore::wait(const std::vector<std::string>& keys) { wait(keys, timeout_); }

void TcpStore::wait(const std::vector<std::string>& keys, const milliseconds& timeout) {
  const auto saved = timeout_;
  timeout_ = timeout;
  try {
    for (const auto& k : keys) get(k);  // GET answers once the key exists
  } catch (...) {
    timeout_ = saved;
    throw;
  }
  timeout_ = saved;
}

Group::Group(int rank, int size, const std::string& storeHost, int storePort, const std::string& hostname, milliseconds timeout)
    : rank_(rank), size_(size), timeout_(timeout) {
  TcpStore store(storeHost, storePort, timeout);
  gloo::transport::tcp::attr attr;
  attr.hostname = hostname;
  auto dev = gloo::transport::tcp::CreateDevice(attr);
  auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, size);
  ctx->setTimeout(timeout);
  ctx->connectFullMesh(store, dev);
  context_ = ctx;
  thread_ = std::thread([this] { loop(); });
}

Group::~Group() { close(); }

std::string Group::describe(const char* op, size_t n, const std::exception& e) const {
  return std::string(op) + " of " + std::to_string(n) + " floats failed on rank " + std::to_string(rank_) + " of " +
         std::to_string(size_) + " (timeout " + std::to_string(timeout_.count()) + " ms): " + e.what();
}

void Group::allreduce(float* data, size_t n, bool average) {
  if (size_ == 1 || n == 0) return;
  try {
    gloo::AllreduceOptions opts(context_);
    opts.setOutput(data, n);
    opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
    opts.setTag(tag_++);
    opts.setTimeout(timeout_);
    gloo::allreduce(opts);
  } catch (const std::exception& e) {
    throw std::runtime_error(describe("allreduce", n, e));
  }
  // Every rank holds the same sum (ring: each chunk is reduced once, then copied), so the same
  // division keeps the ranks bit-identical.
  if (average) {
    const float inv = 1.0f / static_cast<float>(size_);
    for (size_t i = 0; i < n; i++) data[i] *= inv;
  }
}

void Group::broadcast(float* data, size_t n, int root) {
  if (size_ == 1 || n == 0) return;
  try {
    gloo::BroadcastOptions opts(context_);
    if (rank_ == root) opts.setInput(data, n);
    opts.setOutput(data, n);
    opts.setRoot(root);
    opts.setTag(tag_++);
    opts.setTimeout(timeout_);
    gloo::broadcast(opts);
  } catch (const std::exception& e) {
    throw std::runtime_error(describe("broadcast", n, e));
  }
}

void Group::barrier() {
  if (size_ == 1) return;
  // An allreduce of one float: every rank has arrived once it completes (the same timeout and
  // error path as the other collectives).
  float one = 1.0f;
  try {
    gloo::AllreduceOptions opts(context_);
    opts.setOutput(&one, 1);
    opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
    opts.setTag(tag_++);
    opts.setTimeout(timeout_);
    gloo::allreduce(opts);
  } catch (const std::exception& e) {
    throw std::runtime_error(describe("barrier", 0, e));
  }
}

void Group::submit(Job job) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!closing_) {
      jobs_.push_back(std::move(job));
      cv_.notify_one();
      return;
    }
  }
  job.done("the process group is closed");
}

void Group::loop() {
  while (true) {
    Job job;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [this] { return closing_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    std::string err;
    try {
      job.run();
    } catch (const std::exception& e) {
      err = e.what();
    }
    job.done(err);
  }
}

void Group::close() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (closing_ && !thread_.joinable()) return;
    closing_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable() && std::this_thread::get_id() != thread_.get_id()) thread_.join();
  context_.reset();
}

}  // namespace resnext_dist
