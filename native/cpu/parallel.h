// A small persistent thread pool for the CPU backend. parallel_for splits [begin, end) into
// contiguous chunks of at least `grain` items, one task per worker at most, and runs them on
// the pool plus the calling thread. Nested calls run inline (no oversubscription).
// Threads: RESNEXT_NUM_THREADS, else std::thread::hardware_concurrency().
#pragma once

#include <cstdint>
#include <functional>

namespace rx::cpu {

int num_threads();
void set_num_threads(int n);

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)> &fn);

}  // namespace rx::cpu
