// CPU data movement, random numbers, elementwise ops and reductions. Layout: dense row-major.
// Broadcasting works on coalesced shapes: adjacent axes that are contiguous for every operand
// are merged first, so the innermost loop is as long as possible.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#if !defined(_WIN32)
#include <sys/mman.h>
#endif

#include <list>
#include <mutex>
#include <unordered_map>

#include <sys/sysinfo.h>
#include <unistd.h>

#include "cpu_backend.h"
#include "parallel.h"

namespace rx::cpu {

namespace {

constexpr int64_t kGrain = 1 << 14;  // elements per task for memory-bound loops

// Row-major strides of `shape`, with 0 where `src` (right-aligned) broadcasts.
std::vector<int64_t> broadcast_strides(const Shape &src, const Shape &out) {
  std::vector<int64_t> st(out.size(), 0);
  int64_t s = 1;
  size_t off = out.size() - src.size();
  for (int i = (int)src.size() - 1; i >= 0; i--) {
    st[i + off] = src[i] == 1 ? 0 : s;
    s *= src[i];
  }
  return st;
}

// Shape + per-operand strides after merging axes that are contiguous for all operands.
struct Iter {
  Shape shape;
  std::vector<std::vector<int64_t>> strides;
};

Iter coalesce(const Shape &out, std::vector<std::vector<int64_t>> strides) {
  Iter it;
  for (size_t i = 0; i < out.size(); i++) {
    if (out[i] == 1) continue;
    bool merge = !it.shape.empty();
    if (merge) {
      for (size_t o = 0; o < strides.size(); o++)
        if (it.strides[o].back() != strides[o][i] * out[i]) merge = false;
    }
    if (merge) {
      it.shape.back() *= out[i];
      for (size_t o = 0; o < strides.size(); o++) it.strides[o].back() = strides[o][i];
    } else {
      it.shape.push_back(out[i]);
      if (it.strides.empty()) it.strides.resize(strides.size());
      for (size_t o = 0; o < strides.size(); o++) it.strides[o].push_back(strides[o][i]);
    }
  }
  if (it.shape.empty()) {
    it.shape.push_back(1);
    it.strides.assign(strides.size(), std::vector<int64_t>{0});
  }
  return it;
}

// Calls fn(out_offset_row_start, a_off, b_off, inner_len, sa, sb) for each innermost row.
template <typename F>
void for_each_row(const Iter &it, F fn) {
  int nd = (int)it.shape.size();
  int64_t inner = it.shape[nd - 1];
  int64_t rows = shape_numel(it.shape) / inner;
  int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, inner));
  parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    std::vector<int64_t> offs(it.strides.size());
    for (int64_t r = r0; r < r1; r++) {
      int64_t rem = r;
      for (auto &o : offs) o = 0;
      for (int d = nd - 2; d >= 0; d--) {
        int64_t i = rem % it.shape[d];
        rem /= it.shape[d];
        for (size_t o = 0; o < offs.size(); o++) offs[o] += i * it.strides[o][d];
      }
      fn(r * inner, offs, inner);
    }
  });
}

inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
// Uniform in (0, 1]: 53 random bits from (seed, counter, stream).
inline double uniform01(uint64_t seed, uint64_t counter, uint64_t stream) {
  uint64_t z = mix64(mix64(seed * 0x9E3779B97F4A7C15ULL + stream) ^ (counter * 0xD1B54A32D192ED03ULL));
  return ((z >> 11) + 1) * (1.0 / 9007199254740992.0);
}

template <typename T, typename F>
void map1(const Tensor &x, Tensor &out, F f) {
  const T *px = x.data<T>();
  T *po = out.data<T>();
  parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) po[i] = f(px[i]);
  });
}

// bfloat16 <-> float: the top 16 bits of an IEEE float, rounded to nearest even.
inline float bf16_to_float(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN stays NaN
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace

// Host allocations. A training step frees and re-allocates the same sizes every step, so large
// blocks (activations, gradients) are recycled through a cache keyed by size: no page faults in
// the steady state. The cache is bounded and evicts its oldest blocks first, so a process that
// trains models of changing shapes one after another keeps only recent sizes. The bound follows
// the workload: the peak of bytes held in cacheable blocks so far (at least 1 GiB, at most half
// of physical memory), so everything a step freed can be reused by the next step while cache plus
// live blocks stay within about that peak (a fixed 1 GiB was too small for resnext50_32x4d
// training at batch 8: 15% of its time went to page faults and clearing pages, issue 12).
// RESNEXT_CPU_CACHE_MB sets a fixed bound instead (0 disables the cache). Blocks of 1 MiB and
// more come straight from mmap and go back with munmap, so they never fragment malloc's heap
// (measured before: ~3 GB RSS for ~0.3 GB of live tensors on a small ResNeXt, growing further
// across models).
namespace {
constexpr size_t kCacheMin = 64 << 10;  // smaller blocks go straight to malloc
constexpr size_t kMmapMin = 1 << 20;

struct BlockCache {
  std::mutex m;
  std::list<std::pair<size_t, void *>> order;  // oldest first
  std::unordered_multimap<size_t, std::list<std::pair<size_t, void *>>::iterator> by_size;
  size_t cached = 0;
  size_t in_use = 0, peak = 0;  // bytes of cacheable blocks handed out (now, highest so far)
  const char *env = std::getenv("RESNEXT_CPU_CACHE_MB");
  const bool fixed = env != nullptr;
  const size_t fixed_limit = fixed ? (size_t)std::strtoull(env, nullptr, 10) << 20 : 0;
  const size_t max_limit = [] {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? std::max<size_t>((size_t)pages * (size_t)page / 2, size_t(1) << 30) : SIZE_MAX;
  }();
  size_t limit() const { return fixed ? fixed_limit : std::min(max_limit, std::max(peak, size_t(1) << 30)); }
  void took(size_t r) {
    in_use += r;
    peak = std::max(peak, in_use);
  }
};
BlockCache &block_cache() {
  static BlockCache *c = new BlockCache();  // never destroyed: storages may outlive static teardown
  return *c;
}
size_t rounded_size(size_t bytes) {
  // 64-byte alignment for AVX-512 loads, at least one line so an empty tensor has a pointer;
  // cached sizes round to 4 KiB (a page) so nearby sizes share blocks.
  size_t r = std::max<size_t>(64, (bytes + 63) / 64 * 64);
  return r >= kCacheMin ? (r + 4095) / 4096 * 4096 : r;
}
void *system_alloc(size_t r) {
#if !defined(_WIN32)
  if (r >= kMmapMin) {
    void *p = mmap(nullptr, r, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
  }
#endif
  return std::aligned_alloc(64, r);
}
void system_free(void *p, size_t r) {
#if !defined(_WIN32)
  if (r >= kMmapMin) return (void)munmap(p, r);
#endif
  std::free(p);
}
}  // namespace

int CpuBackend::num_threads() { return cpu::num_threads(); }
void CpuBackend::set_num_threads(int n) { cpu::set_num_threads(n); }

namespace {
// Physical memory plus swap: a request beyond it cannot succeed, but with overcommit malloc may
// say yes and the process then dies filling it; refuse it at once instead.
size_t host_memory_limit() {
  static const size_t limit = [] {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    struct sysinfo si;
    size_t swap = sysinfo(&si) == 0 ? (size_t)si.totalswap * si.mem_unit : 0;
    return pages > 0 && page > 0 ? (size_t)pages * (size_t)page + swap : SIZE_MAX;
  }();
  return limit;
}
}  // namespace

namespace {
void evict_oldest(BlockCache &c) {  // c.m held, c.order not empty
  auto [sz, q] = c.order.front();
  for (auto [a, b] = c.by_size.equal_range(sz); a != b; ++a)
    if (a->second == c.order.begin()) {
      c.by_size.erase(a);
      break;
    }
  c.order.pop_front();
  c.cached -= sz;
  system_free(q, sz);
}
}  // namespace

void *CpuBackend::allocate(size_t bytes) {
  if (bytes > host_memory_limit())
    throw Error(ErrorCode::OOM, "alloc: " + std::to_string(bytes) + " bytes requested, more than this machine's " +
                                    std::to_string(host_memory_limit()) + " bytes of memory and swap");
  size_t r = rounded_size(bytes);
  if (r >= kCacheMin) {
    BlockCache &c = block_cache();
    std::lock_guard<std::mutex> g(c.m);
    auto it = c.by_size.find(r);
    if (it != c.by_size.end()) {
      void *p = it->second->second;
      c.order.erase(it->second);
      c.by_size.erase(it);
      c.cached -= r;
      c.took(r);
      return p;
    }
    // A miss: give back the oldest cached blocks while cache plus live blocks plus this one would
    // exceed the highest live total so far (or 1 GiB), so cached blocks never push the process
    // above its peak of live tensors; an unmatched size costs the faults it would cost without a
    // cache. (resnext50 b8 training: peak RSS 2.44 GiB against 2.12 GiB with the old fixed 1 GiB
    // bound, with or without this rule, for the same 2.35 GiB peak of live tensors: fresh mmap
    // blocks count in RSS only once written, recycled blocks are resident already.)
    if (!c.fixed) {
      const size_t bound = std::max({c.peak, c.in_use + r, size_t(1) << 30});
      while (!c.order.empty() && c.in_use + c.cached + r > bound) evict_oldest(c);
    }
  }
  void *p = system_alloc(r);
  if (!p && r >= kCacheMin) {
    release_cached();  // out of memory: give the cache back and try once more
    p = system_alloc(r);
  }
  if (!p) throw Error(ErrorCode::OOM, "alloc: out of host memory allocating " + std::to_string(bytes) + " bytes");
  if (r >= kCacheMin) {
    BlockCache &c = block_cache();
    std::lock_guard<std::mutex> g(c.m);
    c.took(r);
  }
  return p;
}

void CpuBackend::deallocate(void *p, size_t bytes) {
  size_t r = rounded_size(bytes);
  if (r >= kCacheMin) {
    BlockCache &c = block_cache();
    std::lock_guard<std::mutex> g(c.m);
    c.in_use -= std::min(c.in_use, r);
    const size_t limit = c.limit();
    if (r <= limit) {
      while (c.cached + r > limit && !c.order.empty()) evict_oldest(c);
      c.order.emplace_back(r, p);
      c.by_size.emplace(r, std::prev(c.order.end()));
      c.cached += r;
      return;
    }
  }
  system_free(p, r);
}

int64_t CpuBackend::reserved_bytes() {
  BlockCache &c = block_cache();
  std::lock_guard<std::mutex> g(c.m);
  return (int64_t)c.cached;
}

void CpuBackend::release_cached() {
  BlockCache &c = block_cache();
  std::lock_guard<std::mutex> g(c.m);
  for (auto &[sz, q] : c.order) system_free(q, sz);
  c.order.clear();
  c.by_size.clear();
  c.cached = 0;
}

void fill(Tensor &t, double value) {
  int64_t n = t.numel();
  auto run = [&](auto *p, auto v) {
    parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) p[i] = v;
    });
  };
  if (t.dtype() == DType::F32) run(t.data<float>(), (float)value);
  else if (t.dtype() == DType::F64) run(t.data<double>(), value);
  else if (t.dtype() == DType::BF16) run(t.data<uint16_t>(), float_to_bf16((float)value));
  else run(t.data<int32_t>(), (int32_t)value);
}
const bool fill_set = set_kernel(cpu_kernels().fill, &fill);

void copy(const Tensor &src, Tensor &dst) {
  if (src.device().type != DeviceType::CPU || dst.device().type != DeviceType::CPU)
    throw Error(ErrorCode::Device, "copy: the CPU backend expected CPU tensors, received " + src.device().str() + " -> " +
                                       dst.device().str());
  if (src.raw() != dst.raw() && src.nbytes()) std::memcpy(dst.raw(), src.raw(), src.nbytes());
}
const bool copy_set = set_kernel(cpu_kernels().copy, &copy);

void cast(const Tensor &src, Tensor &dst) {
  int64_t n = src.numel();
  // Everything goes through double except bf16, which goes through float.
  auto load = [&](int64_t i) -> double {
    switch (src.dtype()) {
      case DType::F32: return src.data<float>()[i];
      case DType::F64: return src.data<double>()[i];
      case DType::I32: return src.data<int32_t>()[i];
      case DType::BF16: return bf16_to_float(src.data<uint16_t>()[i]);
    }
    return 0;
  };
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    switch (dst.dtype()) {
      case DType::F32: for (int64_t i = b; i < e; i++) dst.data<float>()[i] = (float)load(i); break;
      case DType::F64: for (int64_t i = b; i < e; i++) dst.data<double>()[i] = load(i); break;
      case DType::I32: for (int64_t i = b; i < e; i++) dst.data<int32_t>()[i] = (int32_t)load(i); break;
      case DType::BF16: for (int64_t i = b; i < e; i++) dst.data<uint16_t>()[i] = float_to_bf16((float)load(i)); break;
    }
  });
}
const bool cast_set = set_kernel(cpu_kernels().cast, &cast);

void permute(const Tensor &src, Tensor &dst, const std::vector<int> &perm) {
  // Output axis i walks input axis perm[i].
  auto in_st = broadcast_strides(src.shape(), src.shape());
  std::vector<int64_t> st(perm.size());
  for (size_t i = 0; i < perm.size(); i++) st[i] = in_st[perm[i]];
  Iter it = coalesce(dst.shape(), {broadcast_strides(dst.shape(), dst.shape()), st});
  size_t es = dtype_size(src.dtype());
  const char *ps = (const char *)src.raw();
  char *pd = (char *)dst.raw();
  for_each_row(it, [&](int64_t o, const std::vector<int64_t> &offs, int64_t n) {
    int64_t s = it.strides[1].back();
    if (es == 2) {
      const uint16_t *a = (const uint16_t *)ps + offs[1];
      uint16_t *d = (uint16_t *)pd + o;
      for (int64_t i = 0; i < n; i++) d[i] = a[i * s];
    } else if (es == 4) {
      const int32_t *a = (const int32_t *)ps + offs[1];
      int32_t *d = (int32_t *)pd + o;
      for (int64_t i = 0; i < n; i++) d[i] = a[i * s];
    } else {
      const int64_t *a = (const int64_t *)ps + offs[1];
      int64_t *d = (int64_t *)pd + o;
      for (int64_t i = 0; i < n; i++) d[i] = a[i * s];
    }
  });
}
const bool permute_set = set_kernel(cpu_kernels().permute, &permute);

void expand(const Tensor &src, Tensor &dst) {
  Iter it = coalesce(dst.shape(), {broadcast_strides(dst.shape(), dst.shape()), broadcast_strides(src.shape(), dst.shape())});
  size_t es = dtype_size(src.dtype());
  for_each_row(it, [&](int64_t o, const std::vector<int64_t> &offs, int64_t n) {
    int64_t s = it.strides[1].back();
    if (es == 2) {
      const uint16_t *a = src.data<uint16_t>() + offs[1];
      uint16_t *d = dst.data<uint16_t>() + o;
      for (int64_t i = 0; i < n; i++) d[i] = a[i * s];
    } else if (es == 4) {
      const int32_t *a = src.data<int32_t>() + offs[1];
      int32_t *d = dst.data<int32_t>() + o;
      for (int64_t i = 0; i < n; i++) d[i] = a[i * s];
    } else {
      const int64_t *a = (const int64_t *)src.raw() + offs[1];
      int64_t *d = (int64_t *)dst.raw() + o;
      for (int64_t i = 0; i < n; i++) d[i] = a[i * s];
    }
  });
}
const bool expand_set = set_kernel(cpu_kernels().expand, &expand);

void random_uniform(Tensor &t, double lo, double hi, uint64_t seed, uint64_t offset) {
  RX_DISPATCH_FLOAT(t.dtype(), "rand", [&] {
    T *p = t.data<T>();
    parallel_for(0, t.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) p[i] = (T)(lo + (hi - lo) * (1.0 - uniform01(seed, offset + i, 0)));
    });
  });
}
const bool random_uniform_set = set_kernel(cpu_kernels().random_uniform, &random_uniform);

void random_normal(Tensor &t, double mean, double std, uint64_t seed, uint64_t offset) {
  RX_DISPATCH_FLOAT(t.dtype(), "randn", [&] {
    T *p = t.data<T>();
    parallel_for(0, t.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) {
        // Box-Muller on two independent streams of the same counter.
        double u1 = uniform01(seed, offset + i, 1), u2 = uniform01(seed, offset + i, 2);
        p[i] = (T)(mean + std * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
      }
    });
  });
}
const bool random_normal_set = set_kernel(cpu_kernels().random_normal, &random_normal);

void relu_forward(const Tensor &x, Tensor &y) {
  RX_DISPATCH_FLOAT(x.dtype(), "relu", [&] { map1<T>(x, y, [](T v) { return v > T(0) ? v : T(0); }); });
}
const bool relu_forward_set = set_kernel(cpu_kernels().relu_forward, &relu_forward);

void relu_backward(const Tensor &gy, const Tensor &y, Tensor &gx) {
  RX_DISPATCH_FLOAT(gy.dtype(), "relu_backward", [&] {
    const T *g = gy.data<T>(), *py = y.data<T>();
    T *o = gx.data<T>();
    parallel_for(0, gy.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) o[i] = py[i] > T(0) ? g[i] : T(0);
    });
  });
}
const bool relu_backward_set = set_kernel(cpu_kernels().relu_backward, &relu_backward);

void binary(BinaryOp op, const Tensor &a, const Tensor &b, Tensor &out) {
  if (a.shape() == out.shape() && b.shape() == out.shape() && op == BinaryOp::Add) {
    // The common case (gradient accumulation): split the flat range across threads.
    RX_DISPATCH_FLOAT(a.dtype(), "add", [&] {
      const T *pa = a.data<T>(), *pb = b.data<T>();
      T *po = out.data<T>();
      parallel_for(0, out.numel(), kGrain, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; i++) po[i] = pa[i] + pb[i];
      });
    });
    return;
  }
  Iter it = coalesce(out.shape(), {broadcast_strides(out.shape(), out.shape()), broadcast_strides(a.shape(), out.shape()),
                                   broadcast_strides(b.shape(), out.shape())});
  RX_DISPATCH_FLOAT(a.dtype(), "binary", [&] {
    const T *pa = a.data<T>(), *pb = b.data<T>();
    T *po = out.data<T>();
    int64_t sa = it.strides[1].back(), sb = it.strides[2].back();
    for_each_row(it, [&](int64_t o, const std::vector<int64_t> &offs, int64_t n) {
      const T *x = pa + offs[1], *y = pb + offs[2];
      T *d = po + o;
      auto loop = [&](auto f) {
        if (sa == 1 && sb == 1)
          for (int64_t i = 0; i < n; i++) d[i] = f(x[i], y[i]);
        else if (sa == 1 && sb == 0)
          for (int64_t i = 0; i < n; i++) d[i] = f(x[i], y[0]);
        else if (sa == 0 && sb == 1)
          for (int64_t i = 0; i < n; i++) d[i] = f(x[0], y[i]);
        else
          for (int64_t i = 0; i < n; i++) d[i] = f(x[i * sa], y[i * sb]);
      };
      switch (op) {
        case BinaryOp::Add: loop([](T u, T v) { return u + v; }); break;
        case BinaryOp::Sub: loop([](T u, T v) { return u - v; }); break;
        case BinaryOp::Mul: loop([](T u, T v) { return u * v; }); break;
        case BinaryOp::Div: loop([](T u, T v) { return u / v; }); break;
        case BinaryOp::Max: loop([](T u, T v) { return u > v ? u : v; }); break;
        case BinaryOp::Gt: loop([](T u, T v) { return u > v ? T(1) : T(0); }); break;
      }
    });
  });
}
const bool binary_set = set_kernel(cpu_kernels().binary, &binary);

void scalar(ScalarOp op, const Tensor &x, double s, Tensor &out) {
  RX_DISPATCH_FLOAT(x.dtype(), "scalar", [&] {
    T c = (T)s;
    switch (op) {
      case ScalarOp::Add: map1<T>(x, out, [c](T v) { return v + c; }); break;
      case ScalarOp::Mul: map1<T>(x, out, [c](T v) { return v * c; }); break;
      case ScalarOp::Pow: map1<T>(x, out, [c](T v) { return (T)std::pow(v, c); }); break;
      case ScalarOp::RSub: map1<T>(x, out, [c](T v) { return c - v; }); break;
      case ScalarOp::RDiv: map1<T>(x, out, [c](T v) { return c / v; }); break;
    }
  });
}
const bool scalar_set = set_kernel(cpu_kernels().scalar, &scalar);

void unary(UnaryOp op, const Tensor &x, Tensor &out) {
  RX_DISPATCH_FLOAT(x.dtype(), "unary", [&] {
    switch (op) {
      case UnaryOp::Neg: map1<T>(x, out, [](T v) { return -v; }); break;
      case UnaryOp::Exp: map1<T>(x, out, [](T v) { return std::exp(v); }); break;
      case UnaryOp::Log: map1<T>(x, out, [](T v) { return std::log(v); }); break;
      case UnaryOp::Sqrt: map1<T>(x, out, [](T v) { return std::sqrt(v); }); break;
      case UnaryOp::Abs: map1<T>(x, out, [](T v) { return std::abs(v); }); break;
      case UnaryOp::Sign: map1<T>(x, out, [](T v) { return T((v > T(0)) - (v < T(0))); }); break;
    }
  });
}
const bool unary_set = set_kernel(cpu_kernels().unary, &unary);

void sum(const Tensor &x, const std::vector<bool> &reduce, Tensor &out) {
  // Each output element (parallel) sums its reduced sub-block in double precision.
  auto xs = broadcast_strides(x.shape(), x.shape());
  Shape kept_shape, red_shape;
  std::vector<int64_t> kept_st, red_st;
  for (int i = 0; i < x.ndim(); i++) {
    if (reduce[i]) {
      red_shape.push_back(x.dim(i));
      red_st.push_back(xs[i]);
    } else {
      kept_shape.push_back(x.dim(i));
      kept_st.push_back(xs[i]);
    }
  }
  Iter red = coalesce(red_shape, {red_st});
  int64_t nout = out.numel(), nred = shape_numel(red_shape);
  RX_DISPATCH_FLOAT(x.dtype(), "sum", [&] {
    const T *px = x.data<T>();
    T *po = out.data<T>();
    parallel_for(0, nout, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, nred)), [&](int64_t o0, int64_t o1) {
      int nr = (int)red.shape.size();
      for (int64_t o = o0; o < o1; o++) {
        int64_t base = 0, rem = o;
        for (int d = (int)kept_shape.size() - 1; d >= 0; d--) {
          base += (rem % kept_shape[d]) * kept_st[d];
          rem /= kept_shape[d];
        }
        double acc = 0;
        int64_t inner = red.shape[nr - 1], is = red.strides[0][nr - 1];
        int64_t rows = nred == 0 ? 0 : nred / inner;
        for (int64_t r = 0; r < rows; r++) {
          int64_t off = base, rr = r;
          for (int d = nr - 2; d >= 0; d--) {
            off += (rr % red.shape[d]) * red.strides[0][d];
            rr /= red.shape[d];
          }
          const T *p = px + off;
          if (is == 1) {
            T part = 0;
            for (int64_t i = 0; i < inner; i++) part += p[i];
            acc += part;
          } else {
            for (int64_t i = 0; i < inner; i++) acc += p[i * is];
          }
        }
        po[o] = (T)acc;
      }
    });
  });
}
const bool sum_set = set_kernel(cpu_kernels().sum, &sum);

void sgd_step(Tensor &param, const Tensor &grad, Tensor *buf, const SgdArgs &a) {
  RX_DISPATCH_FLOAT(param.dtype(), "sgdStep", [&] {
    T *p = param.data<T>();
    const T *g = grad.data<T>();
    T *m = buf ? buf->data<T>() : nullptr;
    const T lr = (T)a.lr, wd = (T)a.weight_decay, mom = (T)a.momentum, damp = (T)(1 - a.dampening);
    parallel_for(0, param.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) {
        T d = g[i] + wd * p[i];
        if (m) {
          m[i] = a.first_step ? d : mom * m[i] + damp * d;
          d = a.nesterov ? d + mom * m[i] : m[i];
        }
        p[i] -= lr * d;
      }
    });
  });
}
const bool sgd_step_set = set_kernel(cpu_kernels().sgd_step, &sgd_step);

}  // namespace rx::cpu

namespace rx {
namespace cpu {
Kernels &cpu_kernels() {
  static Kernels table;  // function-local: filled during static initialisation, in any file order
  return table;
}
}  // namespace cpu

// The CPU backend is always present (declared in core/backend.h).
Backend &cpu_backend() {
  static cpu::CpuBackend cpu;
  return cpu;
}
}  // namespace rx
