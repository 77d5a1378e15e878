// CUDA backend: construction (and the checks that say what is missing), the caching allocator,
// device information, data movement and the host side of the elementwise, reduction, pooling,
// loss, top-k, optimiser and matmul ops. Kernels live in tensor_ops.cu and nn_ops.cu,
// convolutions in conv2d.cc (cuDNN graph API), batch norm in batch_norm.cc (cuDNN fused calls).
#include "cuda_backend.h"

#include <cublasLt.h>
#include <cudnn_frontend_version.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "policy.h"

namespace rx::cuda {

#define RX_LOCK std::lock_guard<std::recursive_mutex> lock_(mu_)

// ---------------------------------------------------------------- errors

// throw_cuda and the caching allocator live in memory.cc (tested without a GPU).

void check_cudnn(cudnnStatus_t s, const char *what) {
  if (s == CUDNN_STATUS_SUCCESS) return;
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof detail);
  throw Error(policy::code_for(s), std::string(what) + ": cuDNN error " + cudnnGetErrorString(s) +
                                       (detail[0] ? std::string(" (") + detail + ")" : ""));
}

bool policy_is_alloc_failure(cudnnStatus_t s) { return policy::is_alloc_failure(s); }
bool policy_is_alloc_failure(cublasStatus_t s) { return policy::is_alloc_failure(s); }

void check_cublas(cublasStatus_t s, const char *what) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  throw Error(policy::code_for(s), std::string(what) + ": cuBLAS error " + cublasGetStatusName(s) + " (" +
                                       cublasGetStatusString(s) + ")");
}

// ---------------------------------------------------------------- device buffers

DeviceBuffer::DeviceBuffer(CudaBackend &b, size_t bytes) : be_(&b), bytes_(bytes) { p_ = b.raw_allocate(bytes); }
DeviceBuffer::~DeviceBuffer() {
  if (p_) be_->raw_deallocate(p_);
}
DeviceBuffer &DeviceBuffer::operator=(DeviceBuffer &&o) noexcept {
  if (this != &o) {
    if (p_) be_->raw_deallocate(p_);
    be_ = o.be_;
    p_ = o.p_;
    bytes_ = o.bytes_;
    o.p_ = nullptr;
  }
  return *this;
}

// ---------------------------------------------------------------- construction

namespace {

std::string version_str(int v, int major_div, int minor_div, int minor_mod) {
  return std::to_string(v / major_div) + "." + std::to_string((v / minor_div) % minor_mod);
}

std::string json_escape(const std::string &s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if ((unsigned char)c >= 0x20) o += c;
  }
  return o;
}

}  // namespace

CudaBackend::CudaBackend() {
  // The driver library first: without it the runtime only says "insufficient driver".
  void *libcuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!libcuda) {
    const char *e = dlerror();
    throw Error(ErrorCode::Device,
                std::string("the NVIDIA driver library libcuda.so.1 could not be loaded (") + (e ? e : "not found") +
                    "): install the NVIDIA driver (R580 or newer for CUDA 13) on a machine with an NVIDIA GPU, or use "
                    "device 'cpu'");
  }
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  // CUDA minor-version compatibility: a 13.x runtime runs on any 13.y driver.
  if (driver / 1000 < runtime / 1000)
    throw Error(ErrorCode::Device, "the NVIDIA driver supports CUDA " + version_str(driver, 1000, 10, 100) +
                                       " but this library was built with CUDA " + version_str(runtime, 1000, 10, 100) +
                                       ": update the NVIDIA driver (R580 or newer for CUDA 13)");
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    std::string why = e != cudaSuccess ? std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e) : "0 devices";
    cudaGetLastError();
    throw Error(ErrorCode::Device, "no usable CUDA GPU was found (" + why +
                                       "): check that `nvidia-smi` lists a GPU and that CUDA_VISIBLE_DEVICES does not "
                                       "hide it");
  }
  // Exactly the cuDNN minor version whose headers we were compiled with (finding 8): the graph
  // API's engines and the frontend's expectations change between minor versions.
  std::string cudnn_problem = policy::cudnn_version_problem(cudnnGetVersion(), CUDNN_VERSION);
  if (!cudnn_problem.empty()) throw Error(ErrorCode::Device, cudnn_problem);
  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
  if (prop.major < 8)
    throw Error(ErrorCode::Device, std::string("GPU ") + prop.name + " has compute capability " + std::to_string(prop.major) +
                                       "." + std::to_string(prop.minor) +
                                       "; this build of resnext has code for sm_80 and sm_90 (Ampere or newer)");
  check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  check_cudnn(cudnnCreate(&cudnn_), "cudnnCreate");
  check_cudnn(cudnnSetStream(cudnn_, stream_), "cudnnSetStream");
  check_cublas(cublasCreate(&cublas_), "cublasCreate");
  check_cublas(cublasSetStream(cublas_, stream_), "cublasSetStream");
  const char *strict = std::getenv("RESNEXT_CUDA_STRICT_FP32");
  strict_fp32_ = strict && strict[0] && std::strcmp(strict, "0") != 0;
  check_cublas(cublasSetMathMode(cublas_, strict_fp32_ ? CUBLAS_DEFAULT_MATH : CUBLAS_TF32_TENSOR_OP_MATH),
               "cublasSetMathMode");
  check_cuda(cudaMallocHost(&host_flag_, sizeof(int32_t)), "cudaMallocHost");
  conv_ = make_conv_cache();
}

CudaBackend::~CudaBackend() {
  // Only reached if construction half-failed or a host deletes us; the loaded backend lives
  // for the whole process (tensors may be freed during static destruction).
  conv_.reset();
  for (auto &slot : staging_) {
    if (slot.done) cudaEventDestroy(slot.done);
    if (slot.buf) cudaFreeHost(slot.buf);
  }
  if (host_flag_) cudaFreeHost(host_flag_);
  if (cublas_) cublasDestroy(cublas_);
  if (cudnn_) cudnnDestroy(cudnn_);
  if (stream_) cudaStreamDestroy(stream_);
}

void *CudaBackend::raw_allocate(size_t bytes) {
  RX_LOCK;
  return alloc_.allocate(bytes);
}

void CudaBackend::raw_deallocate(void *p) {
  RX_LOCK;
  alloc_.deallocate(p);
}

void *CudaBackend::allocate(size_t bytes) { return raw_allocate(bytes); }

void CudaBackend::deallocate(void *p, size_t) {
  RX_LOCK;
  alloc_.deallocate(p);
}

int64_t CudaBackend::reserved_bytes() {
  RX_LOCK;
  return alloc_.reserved_bytes();
}

void CudaBackend::synchronize() {
  RX_LOCK;
  check_cuda(cudaStreamSynchronize(stream_), "synchronize");
  check_bn_runtime("synchronize");
}

void CudaBackend::check_bn_runtime(const char *what) {
  if (!bn_persistent_pending_) return;
  bn_persistent_pending_ = false;
  // cuDNN's persistent batch norm can overflow silently; the only report is this flag, read
  // once the stream is idle (the callers synchronise first, so NONBLOCKING is up to date).
  // The query is deprecated in cuDNN 9 (still declared in cudnn_graph.h): if it fails itself,
  // that is no reason to fail the caller's download, so only a reported overflow throws.
  cudnnStatus_t rs = CUDNN_STATUS_SUCCESS;
  if (cudnnQueryRuntimeError(cudnn_, &rs, CUDNN_ERRQUERY_NONBLOCKING, nullptr) != CUDNN_STATUS_SUCCESS) return;
  if (rs == CUDNN_STATUS_RUNTIME_FP_OVERFLOW)
    throw Error(ErrorCode::Cudnn, std::string(what) + ": cuDNN reported " + cudnnGetErrorString(rs) +
                                      " from a batch norm in CUDNN_BATCHNORM_SPATIAL_PERSISTENT mode since the last "
                                      "synchronisation (its results are not reliable); set RESNEXT_CUDA_BN_PERSISTENT=0 "
                                      "to use the non-persistent kernels");
}

void CudaBackend::upload(void *dst, const void *src, size_t n) {
  staged_upload(staging_, 2, staging_next_, kStagingBytes, dst, src, n, stream_);
}

std::string CudaBackend::device_info_json() {
  RX_LOCK;
  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, device_), "deviceInfo");
  size_t free_b = 0, total_b = 0;
  check_cuda(cudaMemGetInfo(&free_b, &total_b), "deviceInfo");
  int driver = 0, runtime = 0, cublas_v = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  cublasGetVersion(cublas_, &cublas_v);
  size_t cudnn_v = cudnnGetVersion();
  std::ostringstream o;
  o << "{\"device\":\"cuda:" << device_ << "\",\"name\":\"" << json_escape(prop.name) << "\""
    << ",\"computeCapability\":\"" << prop.major << "." << prop.minor << "\""
    << ",\"multiProcessors\":" << prop.multiProcessorCount << ",\"memoryTotal\":" << total_b
    << ",\"memoryFree\":" << free_b << ",\"driverCudaVersion\":\"" << version_str(driver, 1000, 10, 100) << "\""
    << ",\"cudaRuntimeVersion\":\"" << version_str(runtime, 1000, 10, 100) << "\""
    << ",\"cudnnVersion\":\"" << cudnn_v / 10000 << "." << (cudnn_v / 100) % 100 << "." << cudnn_v % 100 << "\""
    << ",\"cublasVersion\":\"" << cublas_v / 10000 << "." << (cublas_v / 100) % 100 << "." << cublas_v % 100 << "\""
    << ",\"cublasLtVersion\":" << cublasLtGetVersion() << ",\"reservedBytes\":" << alloc_.reserved_bytes()
    << ",\"allocatedBytes\":" << alloc_.allocated_bytes() << ",\"peakReservedBytes\":" << alloc_.peak_reserved_bytes()
    << ",\"tf32\":" << (strict_fp32_ ? "false" : "true") << ",\"cudnnBuiltVersion\":\""
    << policy::cudnn_version_str(CUDNN_VERSION) << "\",\"cudnnFrontendVersion\":" << CUDNN_FRONTEND_VERSION
    << ",\"backendAbi\":\"0x" << std::hex << kBackendAbiVersion << std::dec << "\",\"planCache\":\""
    << json_escape(conv_plan_cache_path()) << "\"}";
  return o.str();
}

// ---------------------------------------------------------------- layout helpers

std::vector<int64_t> physical_strides(const Shape &shape, bool nhwc) {
  std::vector<int64_t> st(shape.size());
  if (nhwc && shape.size() == 4) {
    int64_t C = shape[1], H = shape[2], W = shape[3];
    st[0] = H * W * C;
    st[1] = 1;
    st[2] = W * C;
    st[3] = C;
    return st;
  }
  int64_t s = 1;
  for (int i = (int)shape.size() - 1; i >= 0; i--) {
    st[i] = s;
    s *= shape[i];
  }
  return st;
}

std::vector<int64_t> physical_strides(const Tensor &t) { return physical_strides(t.shape(), is_nhwc(t)); }

namespace {

// Logical strides of `t` aligned to `out` (right-aligned, 0 where t broadcasts).
std::vector<int64_t> aligned_strides(const Tensor &t, const Shape &out) {
  std::vector<int64_t> ps = physical_strides(t), st(out.size(), 0);
  size_t off = out.size() - t.shape().size();
  for (size_t i = 0; i < t.shape().size(); i++) st[i + off] = t.shape()[i] == 1 ? 0 : ps[i];
  return st;
}

// Walk over `out` (shape, physical order) with per-operand logical strides; merges axes that are
// contiguous for every operand and drops size-1 axes so the index arithmetic stays short.
Walk make_walk(const Shape &out, bool out_nhwc, const std::vector<std::vector<int64_t>> &ins) {
  if (out.size() > (size_t)kMaxDims)
    throw Error(ErrorCode::Shape, "cuda: tensors of rank " + std::to_string(out.size()) + " expected at most " +
                                      std::to_string(kMaxDims) + " dimensions");
  std::vector<int> order;
  if (out_nhwc && out.size() == 4) order = {0, 2, 3, 1};
  else
    for (size_t i = 0; i < out.size(); i++) order.push_back((int)i);
  std::vector<int64_t> ost = physical_strides(out, out_nhwc);
  Walk w;
  int nops = 1 + (int)ins.size();
  for (int d : order) {
    if (out[d] == 1) continue;
    int64_t st[3] = {ost[d], ins.size() > 0 ? ins[0][d] : 0, ins.size() > 1 ? ins[1][d] : 0};
    if (w.nd > 0) {
      bool merge = true;
      for (int o = 0; o < nops; o++)
        if (w.stride[o][w.nd - 1] != st[o] * out[d]) merge = false;
      if (merge) {
        w.size[w.nd - 1] *= out[d];
        for (int o = 0; o < 3; o++) w.stride[o][w.nd - 1] = st[o];
        continue;
      }
    }
    w.size[w.nd] = out[d];
    for (int o = 0; o < 3; o++) w.stride[o][w.nd] = st[o];
    w.nd++;
  }
  if (w.nd == 0) {
    w.nd = 1;
    w.size[0] = 1;
    for (int o = 0; o < 3; o++) w.stride[o][0] = 0;
  }
  return w;
}

}  // namespace

void CudaBackend::convert_layout(const void *src, bool src_nhwc, void *dst, bool dst_nhwc, const Shape &shape,
                                 size_t elem_size) {
  int64_t n = shape_numel(shape);
  if (n == 0) return;
  if (src_nhwc == dst_nhwc || shape.size() != 4) {
    if (src != dst) check_cuda(cudaMemcpyAsync(dst, src, n * elem_size, cudaMemcpyDeviceToDevice, stream_), "copy");
    return;
  }
  Walk w = make_walk(shape, dst_nhwc, {physical_strides(shape, src_nhwc)});
  launch_strided_copy(src, dst, w, elem_size, stream_);
}

const void *CudaBackend::nhwc_data(const Tensor &t, DeviceBuffer &tmp) {
  if (is_nhwc(t) || t.ndim() != 4) return t.raw();
  // Channels-last and contiguous coincide when there is one channel or a single pixel.
  if (t.dim(1) == 1 || t.dim(2) * t.dim(3) == 1) return t.raw();
  tmp = DeviceBuffer(*this, t.nbytes());
  convert_layout(t.raw(), false, tmp.get(), true, t.shape(), dtype_size(t.dtype()));
  return tmp.get();
}

const void *CudaBackend::contiguous_data(const Tensor &t, DeviceBuffer &tmp) {
  if (!is_nhwc(t) || t.dim(1) == 1 || t.dim(2) * t.dim(3) == 1) return t.raw();
  tmp = DeviceBuffer(*this, t.nbytes());
  convert_layout(t.raw(), true, tmp.get(), false, t.shape(), dtype_size(t.dtype()));
  return tmp.get();
}

const float *CudaBackend::f32_data(const Tensor &t, DeviceBuffer &tmp) {
  if (t.dtype() == DType::F32) return t.data<float>();
  tmp = DeviceBuffer(*this, t.numel() * sizeof(float));
  launch_cast(t.raw(), t.dtype(), tmp.get(), DType::F32, t.numel(), stream_);
  return tmp.as<float>();
}

void CudaBackend::store_f32(const float *src, Tensor &dst) {
  if (dst.dtype() == DType::F32) {
    if (src != dst.data<float>())
      check_cuda(cudaMemcpyAsync(dst.raw(), src, dst.numel() * 4, cudaMemcpyDeviceToDevice, stream_), "copy");
    return;
  }
  launch_cast(src, DType::F32, dst.raw(), dst.dtype(), dst.numel(), stream_);
}

// ---------------------------------------------------------------- data movement

void fill(Tensor &t, double value) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  launch_fill(t.raw(), t.numel(), t.dtype(), value, be.stream_);
}
const bool fill_set = set_kernel(cuda_kernels().fill, &fill);

void copy(const Tensor &src, Tensor &dst) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  bool s_dev = src.device().type == DeviceType::CUDA, d_dev = dst.device().type == DeviceType::CUDA;
  size_t n = src.nbytes(), es = dtype_size(src.dtype());
  if (s_dev && d_dev) {
    // Device to device keeps the destination's layout: a fresh destination is Contiguous, which
    // ops::reshape relies on to turn channels-last data into a plain view.
    be.convert_layout(src.raw(), is_nhwc(src), dst.raw(), is_nhwc(dst), src.shape(), es);
    return;
  }
  if (!s_dev && d_dev) {
    // Uploads of 4-D float tensors (activations, conv weights) go channels-last: NHWC for
    // cuDNN's fused batch norm, KRSC for the convolution engines.
    bool to_nhwc = dst.ndim() == 4 && dtype_is_float(dst.dtype()) && dst.dim(1) > 1 && dst.dim(2) * dst.dim(3) > 1;
    if (n == 0) {
      dst.set_layout(dst.ndim() == 4 && dtype_is_float(dst.dtype()) ? Layout::ChannelsLast : Layout::Contiguous);
      return;
    }
    if (!to_nhwc) {
      be.upload(dst.raw(), src.raw(), n);
      if (dst.ndim() == 4 && dtype_is_float(dst.dtype())) dst.set_layout(Layout::ChannelsLast);  // same bytes
      else dst.set_layout(Layout::Contiguous);
      return;
    }
    DeviceBuffer tmp(be, n);
    be.upload(tmp.get(), src.raw(), n);
    be.convert_layout(tmp.get(), false, dst.raw(), true, dst.shape(), es);
    dst.set_layout(Layout::ChannelsLast);
    return;
  }
  if (s_dev && !d_dev) {
    if (n == 0) return;
    DeviceBuffer tmp;
    const void *p = be.contiguous_data(src, tmp);
    check_cuda(cudaMemcpyAsync(dst.raw(), p, n, cudaMemcpyDeviceToHost, be.stream_), "copy to cpu");
    check_cuda(cudaStreamSynchronize(be.stream_), "copy to cpu");
    be.check_bn_runtime("copy to cpu");
    return;
  }
  throw Error(ErrorCode::Device, "copy: the CUDA backend expected a cuda tensor on one side, received " +
                                     src.device().str() + " -> " + dst.device().str());
}
const bool copy_set = set_kernel(cuda_kernels().copy, &copy);

void cast(const Tensor &src, Tensor &dst) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  launch_cast(src.raw(), src.dtype(), dst.raw(), dst.dtype(), src.numel(), be.stream_);
  dst.set_layout(src.layout());
}
const bool cast_set = set_kernel(cuda_kernels().cast, &cast);

void permute(const Tensor &src, Tensor &dst, const std::vector<int> &perm) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  std::vector<int64_t> ps = physical_strides(src), st(perm.size());
  for (size_t i = 0; i < perm.size(); i++) st[i] = ps[perm[i]];
  dst.set_layout(Layout::Contiguous);
  if (dst.numel() == 0) return;
  launch_strided_copy(src.raw(), dst.raw(), make_walk(dst.shape(), false, {st}), dtype_size(src.dtype()), be.stream_);
}
const bool permute_set = set_kernel(cuda_kernels().permute, &permute);

void expand(const Tensor &src, Tensor &dst) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  dst.set_layout(Layout::Contiguous);
  if (dst.numel() == 0) return;
  launch_strided_copy(src.raw(), dst.raw(), make_walk(dst.shape(), false, {aligned_strides(src, dst.shape())}),
                      dtype_size(src.dtype()), be.stream_);
}
const bool expand_set = set_kernel(cuda_kernels().expand, &expand);

void random_uniform(Tensor &t, double lo, double hi, uint64_t seed, uint64_t offset) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  // Element i (logical row-major order) draws counter offset + i, exactly as on the CPU.
  t.set_layout(Layout::Contiguous);
  launch_random(t.raw(), t.dtype(), t.numel(), false, lo, hi, seed, offset, be.stream_);
}
const bool random_uniform_set = set_kernel(cuda_kernels().random_uniform, &random_uniform);

void random_normal(Tensor &t, double mean, double std, uint64_t seed, uint64_t offset) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  t.set_layout(Layout::Contiguous);
  launch_random(t.raw(), t.dtype(), t.numel(), true, mean, std, seed, offset, be.stream_);
}
const bool random_normal_set = set_kernel(cuda_kernels().random_normal, &random_normal);

// ---------------------------------------------------------------- elementwise

void binary(BinaryOp op, const Tensor &a, const Tensor &b, Tensor &out) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  bool same = a.shape() == out.shape() && b.shape() == out.shape();
  if (same && is_nhwc(a) == is_nhwc(b)) {
    out.set_layout(a.layout());
    Walk flat;
    flat.nd = 1;
    flat.size[0] = out.numel();
    if (out.numel()) launch_binary(op, a.dtype(), a.raw(), b.raw(), out.raw(), flat, true, be.stream_);
    return;
  }
  // Keep channels-last when a full-size operand has it (the usual case: x + bias-like tensor).
  bool out_nhwc = out.ndim() == 4 && ((is_nhwc(a) && a.shape() == out.shape()) || (is_nhwc(b) && b.shape() == out.shape()));
  out.set_layout(out_nhwc ? Layout::ChannelsLast : Layout::Contiguous);
  if (out.numel() == 0) return;
  Walk w = make_walk(out.shape(), out_nhwc, {aligned_strides(a, out.shape()), aligned_strides(b, out.shape())});
  launch_binary(op, a.dtype(), a.raw(), b.raw(), out.raw(), w, false, be.stream_);
}
const bool binary_set = set_kernel(cuda_kernels().binary, &binary);

void scalar(ScalarOp op, const Tensor &x, double s, Tensor &out) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  launch_scalar(op, x.dtype(), x.raw(), s, out.raw(), x.numel(), be.stream_);
  out.set_layout(x.layout());
}
const bool scalar_set = set_kernel(cuda_kernels().scalar, &scalar);

void unary(UnaryOp op, const Tensor &x, Tensor &out) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  launch_unary(op, x.dtype(), x.raw(), out.raw(), x.numel(), be.stream_);
  out.set_layout(x.layout());
}
const bool unary_set = set_kernel(cuda_kernels().unary, &unary);

void sum(const Tensor &x, const std::vector<bool> &reduce, Tensor &out) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  if (x.ndim() > kMaxDims) throw Error(ErrorCode::Shape, "sum: input expected at most 8 dimensions");
  out.set_layout(Layout::Contiguous);
  std::vector<int64_t> ps = physical_strides(x);
  ReduceSpec r;
  r.nout = out.numel();
  r.nred = 1;
  for (int i = 0; i < x.ndim(); i++) {
    if (reduce[i]) {
      r.red_size[r.nr] = x.dim(i);
      r.red_stride[r.nr++] = ps[i];
      r.nred *= x.dim(i);
    } else {
      r.kept_size[r.nk] = x.dim(i);
      r.kept_stride[r.nk++] = ps[i];
    }
  }
  if (r.nout == 0) return;
  launch_sum(x.dtype(), x.raw(), out.raw(), r, be.stream_);
}
const bool sum_set = set_kernel(cuda_kernels().sum, &sum);

// ---------------------------------------------------------------- pooling

void max_pool2d_forward(const Tensor &x, Tensor &y, Tensor &indices, const Pool2dArgs &a) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  DeviceBuffer tmp;
  const void *px = be.nhwc_data(x, tmp);
  y.set_layout(Layout::ChannelsLast);
  indices.set_layout(Layout::ChannelsLast);
  if (y.numel() == 0) return;
  launch_max_pool2d_forward(x.dtype(), px, y.raw(), indices.data<int32_t>(), x.dim(0), x.dim(1), x.dim(2), x.dim(3),
                            y.dim(2), y.dim(3), a, be.stream_);
}
const bool max_pool2d_forward_set = set_kernel(cuda_kernels().max_pool2d_forward, &max_pool2d_forward);

void max_pool2d_backward(const Tensor &gy, const Tensor &indices, Tensor &gx) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  DeviceBuffer tg, ti, acc;
  const void *pg = be.nhwc_data(gy, tg);
  const int32_t *pi = static_cast<const int32_t *>(be.nhwc_data(indices, ti));
  gx.set_layout(Layout::ChannelsLast);
  if (gx.numel() == 0) return;
  if (gx.dtype() == DType::BF16) acc = DeviceBuffer(be, gx.numel() * sizeof(float));
  launch_max_pool2d_backward(gy.dtype(), pg, pi, gx.raw(), acc.get(), gx.dim(0), gx.dim(1), gx.dim(2) * gx.dim(3),
                             gy.dim(2) * gy.dim(3), be.stream_);
}
const bool max_pool2d_backward_set = set_kernel(cuda_kernels().max_pool2d_backward, &max_pool2d_backward);

void global_avg_pool2d_forward(const Tensor &x, Tensor &y) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  DeviceBuffer tmp;
  const void *px = be.nhwc_data(x, tmp);
  y.set_layout(Layout::ChannelsLast);  // [N, C, 1, 1]: the same bytes in both layouts
  if (y.numel() == 0) return;
  launch_global_avg_pool2d_forward(x.dtype(), px, y.raw(), x.dim(0), x.dim(1), x.dim(2) * x.dim(3), be.stream_);
}
const bool global_avg_pool2d_forward_set = set_kernel(cuda_kernels().global_avg_pool2d_forward, &global_avg_pool2d_forward);

void global_avg_pool2d_backward(const Tensor &gy, Tensor &gx) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  gx.set_layout(Layout::ChannelsLast);
  if (gx.numel() == 0) return;
  launch_global_avg_pool2d_backward(gy.dtype(), gy.raw(), gx.raw(), gx.dim(0), gx.dim(1), gx.dim(2) * gx.dim(3),
                                    be.stream_);
}
const bool global_avg_pool2d_backward_set = set_kernel(cuda_kernels().global_avg_pool2d_backward, &global_avg_pool2d_backward);

// ---------------------------------------------------------------- dense

void matmul(const Tensor &a, const Tensor &b, bool ta, bool tb, const Tensor *bias, Tensor &out) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  int64_t M = out.dim(0), N = out.dim(1), K = ta ? a.dim(0) : a.dim(1);
  out.set_layout(Layout::Contiguous);
  if (M == 0 || N == 0) return;
  DType dt = a.dtype();
  if (bias) launch_fill_rows(dt, out.raw(), bias->raw(), M, N, be.stream_);
  else if (K == 0) launch_fill(out.raw(), out.numel(), dt, 0.0, be.stream_);
  if (K == 0) return;
  // Row-major out[M,N] = op(a) op(b) is column-major out^T[N,M] = op(b)^T op(a)^T: cuBLAS sees
  // each row-major matrix as its transpose, so the operands swap and keep their own op flags.
  cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  int lda = (int)a.dim(1), ldb = (int)b.dim(1), ldc = (int)N;
  if (dt == DType::F64) {
    double alpha = 1, beta = bias ? 1 : 0;
    check_cublas(be.retry_on_alloc_failure([&] {
      return cublasGemmEx(be.cublas_, opb, opa, (int)N, (int)M, (int)K, &alpha, b.raw(), CUDA_R_64F, ldb, a.raw(),
                          CUDA_R_64F, lda, &beta, out.raw(), CUDA_R_64F, ldc, CUBLAS_COMPUTE_64F, CUBLAS_GEMM_DEFAULT);
    }),
                 "matmul");
    return;
  }
  float alpha = 1, beta = bias ? 1.f : 0.f;
  cudaDataType_t t = dt == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
  cublasComputeType_t ct =
      dt == DType::BF16 ? CUBLAS_COMPUTE_32F : (be.strict_fp32_ ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32);
  check_cublas(be.retry_on_alloc_failure([&] {
    return cublasGemmEx(be.cublas_, opb, opa, (int)N, (int)M, (int)K, &alpha, b.raw(), t, ldb, a.raw(), t, lda, &beta,
                        out.raw(), t, ldc, ct, CUBLAS_GEMM_DEFAULT);
  }),
               "matmul");
}
const bool matmul_set = set_kernel(cuda_kernels().matmul, &matmul);

// ---------------------------------------------------------------- loss and metrics

void cross_entropy_forward(const Tensor &logits, const Tensor &targets, double smoothing, Tensor &loss,
                                        Tensor &probs) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  int64_t N = logits.dim(0), K = logits.dim(1);
  DeviceBuffer rows(be, N * sizeof(double)), flag(be, sizeof(int32_t));
  probs.set_layout(Layout::Contiguous);
  launch_cross_entropy_forward(logits.dtype(), logits.raw(), targets.data<int32_t>(), smoothing, loss.raw(),
                               probs.raw(), N, K, rows.get(), flag.as<int32_t>(), be.stream_);
  // Same contract as the CPU: a target outside [0, K) is an ERR_ARG, so this op waits for its
  // one-int check (a loss is read every step anyway).
  check_cuda(cudaMemcpyAsync(be.host_flag_, flag.get(), sizeof(int32_t), cudaMemcpyDeviceToHost, be.stream_), "crossEntropy");
  check_cuda(cudaStreamSynchronize(be.stream_), "crossEntropy");
  if (*be.host_flag_ != 0x7f7f7f7f) {  // the kernel's "all targets valid" marker
    int64_t row = *be.host_flag_ - 1;
    int32_t bad = 0;
    check_cuda(cudaMemcpy(&bad, targets.data<int32_t>() + row, sizeof bad, cudaMemcpyDeviceToHost), "crossEntropy");
    fail(ErrorCode::Arg, "crossEntropy", "targets[" + std::to_string(row) + "]",
         "a class index in [0, " + std::to_string(K - 1) + "]", std::to_string(bad));
  }
}
const bool cross_entropy_forward_set = set_kernel(cuda_kernels().cross_entropy_forward, &cross_entropy_forward);

void cross_entropy_backward(const Tensor &probs, const Tensor &targets, double smoothing,
                                         const Tensor &gloss, Tensor &glogits) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  glogits.set_layout(Layout::Contiguous);
  launch_cross_entropy_backward(probs.dtype(), probs.raw(), targets.data<int32_t>(), smoothing, gloss.raw(),
                                glogits.raw(), probs.dim(0), probs.dim(1), be.stream_);
}
const bool cross_entropy_backward_set = set_kernel(cuda_kernels().cross_entropy_backward, &cross_entropy_backward);

void topk(const Tensor &x, int64_t k, Tensor &indices) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  indices.set_layout(Layout::Contiguous);
  if (x.dim(0) == 0) return;
  launch_topk(x.dtype(), x.raw(), indices.data<int32_t>(), x.dim(0), x.dim(1), k, be.stream_);
}
const bool topk_set = set_kernel(cuda_kernels().topk, &topk);

// ---------------------------------------------------------------- optimiser

void sgd_step(Tensor &param, const Tensor &grad, Tensor *buf, const SgdArgs &a) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  bool pn = is_nhwc(param);
  DeviceBuffer tg, tm;
  const void *g = grad.raw();
  if (is_nhwc(grad) != pn) g = pn ? be.nhwc_data(grad, tg) : be.contiguous_data(grad, tg);
  void *m = nullptr;
  if (buf) {
    m = buf->raw();
    // The momentum buffer follows the parameter's layout; on the first step it is overwritten.
    if (is_nhwc(*buf) != pn && !a.first_step) {
      tm = DeviceBuffer(be, buf->nbytes());
      be.convert_layout(buf->raw(), is_nhwc(*buf), tm.get(), pn, buf->shape(), dtype_size(buf->dtype()));
      check_cuda(cudaMemcpyAsync(buf->raw(), tm.get(), buf->nbytes(), cudaMemcpyDeviceToDevice, be.stream_), "sgdStep");
    }
    buf->set_layout(param.layout());
  }
  if (param.numel() == 0) return;
  launch_sgd_step(param.dtype(), param.raw(), g, m, param.numel(), a, be.stream_);
}
const bool sgd_step_set = set_kernel(cuda_kernels().sgd_step, &sgd_step);

}  // namespace rx::cuda

// ---------------------------------------------------------------- the instance and its table

namespace rx::cuda {

namespace {
CudaBackend *g_backend = nullptr;  // set once by create(); kernels run only after that
}  // namespace

Kernels &cuda_kernels() {
  static Kernels table;  // function-local: filled during static initialisation, in any file order
  return table;
}

CudaBackend &CudaBackend::create() {
  static CudaBackend *backend = new CudaBackend();  // lives for the process; a throw leaves it unset
  g_backend = backend;
  return *backend;
}

CudaBackend &CudaBackend::get() { return *g_backend; }

}  // namespace rx::cuda

// ---------------------------------------------------------------- entry point

extern "C" __attribute__((visibility("default"))) int resnext_cuda_backend_create(uint64_t abi_version,
                                                                                   rx::Backend **out, char *err,
                                                                                   size_t err_len) {
  auto say = [&](const std::string &m) {
    if (err && err_len) std::snprintf(err, err_len, "%s", m.c_str());
  };
  if (!out) {
    say("resnext_cuda_backend_create: out expected a pointer, received null");
    return 1;
  }
  *out = nullptr;
  // The version is a hash of the shared core headers (backend_abi.cmake); 0 means a build that
  // did not compute it, which never matches.
  if (abi_version != rx::kBackendAbiVersion || abi_version == 0 || rx::kBackendAbiVersion == 0) {
    auto hex = [](uint64_t v) {
      char b[32];
      std::snprintf(b, sizeof b, "0x%llx", (unsigned long long)v);
      return std::string(b);
    };
    say("the CUDA backend library was built for backend ABI " + hex(rx::kBackendAbiVersion) +
        " but the resnext addon uses ABI " + hex(abi_version) +
        " (they were compiled from different native/core headers): rebuild both from the same sources "
        "(`npm run build:native` and `npm run build:cuda`)");
    return 2;
  }
  try {
    *out = &rx::cuda::CudaBackend::create();

    return 0;
  } catch (const std::exception &e) {
    say(e.what());
    return 3;
  } catch (...) {
    say("the CUDA backend failed to initialise (unknown error)");
    return 3;
  }
}
