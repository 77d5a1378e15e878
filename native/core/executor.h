// The CPU backend's execution queue. Ops are validated and their outputs allocated on the
// calling (JS) thread, then the kernels are queued here and run in order on one executor
// thread (which fans out to the thread pool). The JS thread only waits when it reads data
// (to_host) or calls synchronize(), so a long CPU training step does not block the event loop;
// this is the same asynchronous model as a CUDA stream.
// An error raised by a queued kernel is kept for the thread that queued it (its owner: a JS
// environment, the main thread or a worker) and rethrown by that owner's next synchronize();
// another thread's synchronisation never sees it.
// RESNEXT_SYNC=1 runs every kernel inline instead (for debugging).
#pragma once

#include <functional>

#include "tensor.h"

namespace rx {

// Who queued a kernel: by default the calling thread. A thread that waits on behalf of another
// (the libuv worker behind data()) adopts the caller's owner with OwnerScope.
using Owner = uint64_t;
Owner current_owner();
class OwnerScope {
 public:
  explicit OwnerScope(Owner o);
  ~OwnerScope();
  OwnerScope(const OwnerScope &) = delete;
  OwnerScope &operator=(const OwnerScope &) = delete;

 private:
  Owner prev_;
};

class Executor {
 public:
  virtual ~Executor() = default;
  // bytes: what the kernel's output holds while it waits in the queue (for backpressure).
  virtual void submit(std::function<void()> fn, int64_t bytes = 0) = 0;
  // Waits for every queued kernel; rethrows the first error one of the current owner's raised.
  virtual void synchronize() = 0;
};

Executor &cpu_executor();

// Device-aware scheduling, so the op layer never branches on the device type.
// enqueue: a kernel for tensors on d. CPU kernels go to the queue above; a device backend
// orders its work on its own stream, so its kernels are called at once.
// bytes: the size of the output the kernel writes (the CPU queue bounds what waiting kernels hold).
void enqueue(Device d, std::function<void()> fn, int64_t bytes = 0);
// src -> dst (same shape and dtype, either on any device): queued when both are on the CPU;
// otherwise the CPU queue is drained first and the device backend owns the transfer.
void enqueue_copy(const Tensor &src, Tensor &dst);
// Waits for the CPU queue and then for d's backend; rethrows a queued kernel's error.
void synchronize(Device d);

}  // namespace rx
