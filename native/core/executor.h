// The CPU backend's execution queue. Ops are validated and their outputs allocated on the
// calling (JS) thread, then the kernels are queued here and run in order on one executor
// thread (which fans out to the thread pool). The JS thread only waits when it reads data
// (to_host) or calls synchronize(), so a long CPU training step does not block the event loop;
// this is the same asynchronous model as a CUDA stream.
// An error raised by a queued kernel is kept and rethrown by the next synchronize().
// RESNEXT_SYNC=1 runs every kernel inline instead (for debugging).
#pragma once

#include <functional>

#include "tensor.h"

namespace rx {

class Executor {
 public:
  virtual ~Executor() = default;
  virtual void submit(std::function<void()> fn) = 0;
  // Waits for every queued kernel; rethrows the first error one of them raised.
  virtual void synchronize() = 0;
};

Executor &cpu_executor();

// Device-aware scheduling, so the op layer never branches on the device type.
// enqueue: a kernel for tensors on d. CPU kernels go to the queue above; a device backend
// orders its work on its own stream, so its kernels are called at once.
void enqueue(Device d, std::function<void()> fn);
// src -> dst (same shape and dtype, either on any device): queued when both are on the CPU;
// otherwise the CPU queue is drained first and the device backend owns the transfer.
void enqueue_copy(const Tensor &src, Tensor &dst);
// Waits for the CPU queue and then for d's backend; rethrows a queued kernel's error.
void synchronize(Device d);

}  // namespace rx
