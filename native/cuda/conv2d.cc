// Convolutions through cuDNN's graph API (cudnn-frontend, header-only).
//
// Layout: x, y and their gradients NHWC; weights [K, C/g, R, S] stored channels-last, i.e. KRSC.
// Groups are implied by the shapes: the filter's channel dimension is C/g, so one graph covers
// plain, grouped (ResNeXt's 32 groups) and depthwise convolutions.
// Why the graph API: the legacy cudnnConvolution* calls with a group count only reach the classic
// algorithms and are 2.4-4.8x slower than PyTorch (which uses the graph API) on every grouped
// ResNeXt-50 shape on an H200 (../../shared/anchors/grouped-conv-h200.md).
// Engine choice: per (direction, dtype, shape, stride, padding) the graph is built once. The
// candidates are heuristics A plus the fallback list, minus engines that convert fp32 inputs
// down or reduce in reduced precision (and tensor cores in strict fp32), in heuristic order.
// Building a plan can compile a kernel at run time (0.5-3 s), so autotuning builds at most 8 of
// them and stops after a per-graph time budget (policy::autotune, RESNEXT_CUDA_AUTOTUNE_MAX,
// RESNEXT_CUDA_AUTOTUNE_BUDGET_MS); each built plan runs once as a warm-up and is timed on the
// call's own buffers. RESNEXT_CUDA_AUTOTUNE=0 takes the first plan that builds and runs, and so
// does every graph once the process has spent RESNEXT_CUDA_AUTOTUNE_TOTAL_MS on tuning.
// The choice is kept for the process and appended to an on-disk cache keyed by GPU, cuDNN and
// frontend versions, direction, dtype, layout and shape (policy::plan_cache_key), so a later
// process builds only the chosen engine. RESNEXT_CUDA_AUTOTUNE_LOG=<file> appends one JSON line
// per graph (candidates, plans built and timed, time spent, chosen engine). Workspace comes from
// the backend's allocator. fp32 may use TF32 tensor cores unless RESNEXT_CUDA_STRICT_FP32=1;
// accumulation is always float.
#include <cudnn_frontend.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <sstream>

#include "cuda_backend.h"
#include "policy.h"

namespace rx::cuda {

namespace fe = cudnn_frontend;

namespace {

enum class ConvDir { Forward = 0, BackwardData = 1, BackwardFilter = 2 };

const char *dir_name(ConvDir d) {
  return d == ConvDir::Forward ? "conv2d" : d == ConvDir::BackwardData ? "conv2d_backward_data" : "conv2d_backward_filter";
}

struct ConvShape {
  int64_t N, C, H, W, K, Cg, R, S, P, Q;
  int64_t sh, sw, ph, pw;
};

struct ConvPlan {
  std::shared_ptr<fe::graph::Graph> graph;
  std::shared_ptr<fe::graph::Tensor_attributes> in0, in1, out;  // fwd: x, w -> y; dgrad: dy, w -> dx; wgrad: dy, x -> dw
  int64_t index = 0;  // the chosen plan
  int64_t workspace = 0;
  std::string engine;
};

void check_fe(fe::error_t e, ConvDir d, const char *step) {
  if (e.is_bad())
    throw Error(ErrorCode::Cudnn, std::string(dir_name(d)) + ": cuDNN graph " + step + " failed: " + e.get_message());
}

std::vector<int64_t> nhwc_strides(int64_t, int64_t c, int64_t h, int64_t w) { return {h * w * c, 1, w * c, c}; }

// Caps the workspace a candidate engine may ask for (RESNEXT_CUDA_CONV_WORKSPACE_MB, default 1024).
int64_t workspace_cap() {
  const char *s = std::getenv("RESNEXT_CUDA_CONV_WORKSPACE_MB");
  long long mb = s ? std::atoll(s) : 1024;
  if (mb <= 0) mb = 1024;
  return (int64_t)mb << 20;
}

}  // namespace

struct ConvCache {
  std::unordered_map<std::string, std::shared_ptr<ConvPlan>> plans;
};

std::shared_ptr<ConvCache> make_conv_cache() { return std::make_shared<ConvCache>(); }

std::string conv_plan_cache_path() {
  return policy::plan_cache_path(std::getenv("RESNEXT_CUDA_PLAN_CACHE"), std::getenv("XDG_CACHE_HOME"),
                                 std::getenv("HOME"));
}

namespace {

std::string plan_key(ConvDir d, DType dt, const ConvShape &s, bool strict) {
  std::ostringstream k;
  k << (int)d << ':' << (int)dt << ':' << s.N << ',' << s.C << ',' << s.H << ',' << s.W << ':' << s.K << ',' << s.Cg
    << ',' << s.R << ',' << s.S << ':' << s.sh << ',' << s.sw << ',' << s.ph << ',' << s.pw << ':' << strict;
  return k.str();
}

fe::NumericalNote_t fe_note(policy::Note n) {
  switch (n) {
    case policy::Note::DownConvertInputs: return fe::NumericalNote_t::DOWN_CONVERT_INPUTS;
    case policy::Note::ReducedPrecisionReduction: return fe::NumericalNote_t::REDUCED_PRECISION_REDUCTION;
    case policy::Note::TensorCore: return fe::NumericalNote_t::TENSOR_CORE;
  }
  return fe::NumericalNote_t::NOT_SET;
}

// The GPU part of the on-disk cache key: name, compute capability and SM count.
const std::string &gpu_identity(CudaBackend &be) {
  static std::string id;
  if (id.empty()) {
    cudaDeviceProp prop{};
    check_cuda(cudaGetDeviceProperties(&prop, be.device_), "cudaGetDeviceProperties");
    id = std::string(prop.name) + "|sm" + std::to_string(prop.major) + std::to_string(prop.minor) + "|" +
         std::to_string(prop.multiProcessorCount);
  }
  return id;
}

struct DiskCache {
  bool loaded = false;
  std::string path;
  std::map<std::string, policy::PlanRecord> records;
};
DiskCache &disk_cache() {
  static DiskCache d;
  if (!d.loaded) {
    d.loaded = true;
    d.path = conv_plan_cache_path();
    d.records = policy::load_plan_cache(d.path);
  }
  return d;
}

std::string json_str(const std::string &v) {
  std::string o = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') o += '\\';
    if ((unsigned char)c >= 0x20) o += c;
  }
  return o + "\"";
}

void log_autotune(ConvDir d, DType dt, const std::string &key, int64_t count, int rtc, const policy::TuneResult &r,
                  int64_t workspace) {
  const char *path = std::getenv("RESNEXT_CUDA_AUTOTUNE_LOG");
  if (!path || !*path) return;
  std::ostringstream o;
  o << "{\"op\":" << json_str(dir_name(d)) << ",\"dtype\":" << json_str(dtype_name(dt)) << ",\"key\":" << json_str(key)
    << ",\"candidates\":" << count << ",\"runtimeCompiled\":" << rtc << ",\"considered\":" << r.considered
    << ",\"built\":" << r.built << ",\"timed\":" << r.timed << ",\"tuneMs\":" << r.tune_ms
    << ",\"chosen\":" << json_str(r.chosen_name) << ",\"chosenMs\":" << r.chosen_ms
    << ",\"workspace\":" << workspace << ",\"fromCache\":" << (r.from_cache ? "true" : "false")
    << ",\"stop\":" << json_str(r.stop_reason) << "}\n";
  std::string line = o.str();
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  ssize_t w = write(fd, line.data(), line.size());
  (void)w;
  close(fd);
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::shared_ptr<ConvPlan> build_plan(CudaBackend &be, ConvDir d, DType dt, const ConvShape &s, const void *in0,
                                     const void *in1, void *out) {
  auto plan = std::make_shared<ConvPlan>();
  auto g = std::make_shared<fe::graph::Graph>();
  fe::DataType_t io = dt == DType::BF16 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::FLOAT;
  g->set_io_data_type(io).set_intermediate_data_type(fe::DataType_t::FLOAT).set_compute_data_type(fe::DataType_t::FLOAT);

  auto x_attr = [&](const char *name) {
    return fe::graph::Tensor_attributes().set_name(name).set_dim({s.N, s.C, s.H, s.W}).set_stride(nhwc_strides(s.N, s.C, s.H, s.W)).set_data_type(io);
  };
  auto y_attr = [&](const char *name) {
    return fe::graph::Tensor_attributes().set_name(name).set_dim({s.N, s.K, s.P, s.Q}).set_stride(nhwc_strides(s.N, s.K, s.P, s.Q)).set_data_type(io);
  };
  auto w_attr = [&](const char *name) {
    return fe::graph::Tensor_attributes().set_name(name).set_dim({s.K, s.Cg, s.R, s.S}).set_stride(nhwc_strides(s.K, s.Cg, s.R, s.S)).set_data_type(io);
  };
  std::vector<int64_t> pad{s.ph, s.pw}, stride{s.sh, s.sw}, dil{1, 1};
  if (d == ConvDir::Forward) {
    plan->in0 = g->tensor(x_attr("x"));
    plan->in1 = g->tensor(w_attr("w"));
    plan->out = g->conv_fprop(plan->in0, plan->in1,
                              fe::graph::Conv_fprop_attributes().set_padding(pad).set_stride(stride).set_dilation(dil));
    plan->out->set_output(true).set_dim({s.N, s.K, s.P, s.Q}).set_stride(nhwc_strides(s.N, s.K, s.P, s.Q)).set_data_type(io);
  } else if (d == ConvDir::BackwardData) {
    plan->in0 = g->tensor(y_attr("dy"));
    plan->in1 = g->tensor(w_attr("w"));
    plan->out = g->conv_dgrad(plan->in0, plan->in1,
                              fe::graph::Conv_dgrad_attributes().set_padding(pad).set_stride(stride).set_dilation(dil));
    plan->out->set_output(true).set_dim({s.N, s.C, s.H, s.W}).set_stride(nhwc_strides(s.N, s.C, s.H, s.W)).set_data_type(io);
  } else {
    plan->in0 = g->tensor(y_attr("dy"));
    plan->in1 = g->tensor(x_attr("x"));
    plan->out = g->conv_wgrad(plan->in0, plan->in1,
                              fe::graph::Conv_wgrad_attributes().set_padding(pad).set_stride(stride).set_dilation(dil));
    plan->out->set_output(true).set_dim({s.K, s.Cg, s.R, s.S}).set_stride(nhwc_strides(s.K, s.Cg, s.R, s.S)).set_data_type(io);
  }
  cudnnHandle_t h = be.cudnn();
  check_fe(g->validate(), d, "validation");
  check_fe(g->build_operation_graph(h), d, "build");
  check_fe(g->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK}), d, "heuristics");
  // Deselection only marks configurations; nothing is built yet (cuDNN >= 9.2 checks support
  // and workspace per configuration without building it).
  std::vector<fe::NumericalNote_t> notes;
  for (policy::Note n : policy::deselected_notes(dt == DType::F32, be.strict_fp32())) notes.push_back(fe_note(n));
  g->deselect_numeric_notes(notes);
  g->deselect_workspace_greater_than(workspace_cap());

  int64_t count = g->get_execution_plan_count();
  std::vector<policy::Candidate> cands;
  int rtc = 0;
  for (int64_t i = 0; i < count; i++) {
    std::string name;
    if (g->get_plan_name_at_index(i, name).is_bad()) name = "plan" + std::to_string(i);
    std::vector<fe::BehaviorNote_t> bn;
    bool compiled = g->get_behavior_notes_for_plan_at_index(i, bn).is_good() &&
                    std::find(bn.begin(), bn.end(), fe::BehaviorNote_t::RUNTIME_COMPILATION) != bn.end();
    rtc += compiled;
    cands.push_back({name, compiled});
  }

  policy::PlanKeyParts kp{gpu_identity(be), cudnnGetVersion(), CUDNN_FRONTEND_VERSION, (int)d, dtype_name(dt), "NHWC",
                          s.N, s.C, s.H, s.W, s.K, s.Cg, s.R, s.S, s.P, s.Q, s.sh, s.sw, s.ph, s.pw, be.strict_fp32()};
  std::string key = policy::plan_cache_key(kp);
  DiskCache &dc = disk_cache();
  auto cached = dc.records.find(key);

  std::unordered_map<std::shared_ptr<fe::graph::Tensor_attributes>, void *> pack{
      {plan->in0, const_cast<void *>(in0)}, {plan->in1, const_cast<void *>(in1)}, {plan->out, out}};
  cudaStream_t st = be.stream();
  cudaEvent_t t0, t1;
  check_cuda(cudaEventCreate(&t0), "cudaEventCreate");
  check_cuda(cudaEventCreate(&t1), "cudaEventCreate");
  std::string last_error;
  DeviceBuffer ws_buf;
  policy::TuneOps ops;
  ops.now_ms = now_ms;
  ops.build = [&](int64_t i) {
    auto e = g->build_plan_at_index(h, i);
    if (e.is_bad()) last_error = e.get_message();
    return e.is_good();
  };
  ops.time = [&](int64_t i, int runs, float &ms) {
    int64_t ws = 0;
    if (g->get_workspace_size_plan_at_index(i, ws).is_bad()) return false;
    if ((size_t)ws > ws_buf.bytes() || (ws > 0 && !ws_buf.get())) {
      ws_buf = DeviceBuffer();
      try {
        ws_buf = DeviceBuffer(be, (size_t)ws);
      } catch (const Error &err) {
        if (err.code() != ErrorCode::OOM) throw;  // a lost context is not a reason to try another plan
        last_error = err.what();
        return false;
      }
    }
    auto e = g->execute_plan_at_index(h, pack, ws_buf.get(), i);
    if (e.is_bad()) {
      last_error = e.get_message();
      return false;
    }
    ms = 0;
    if (runs <= 0) return true;
    ms = 1e30f;
    for (int rep = 0; rep < runs; rep++) {
      check_cuda(cudaEventRecord(t0, st), dir_name(d));
      (void)g->execute_plan_at_index(h, pack, ws_buf.get(), i);  // ran fine in the warm-up
      check_cuda(cudaEventRecord(t1, st), dir_name(d));
      check_cuda(cudaEventSynchronize(t1), dir_name(d));
      float m = 0;
      check_cuda(cudaEventElapsedTime(&m, t0, t1), dir_name(d));
      ms = std::min(ms, m);
    }
    return true;
  };
  policy::TuneLimits lim =
      policy::tune_limits(std::getenv("RESNEXT_CUDA_AUTOTUNE"), std::getenv("RESNEXT_CUDA_AUTOTUNE_MAX"),
                          std::getenv("RESNEXT_CUDA_AUTOTUNE_BUDGET_MS"), std::getenv("RESNEXT_CUDA_AUTOTUNE_TOTAL_MS"));
  static double tuned_total_ms = 0;  // this process's tuning time so far (under the backend's lock)
  policy::TuneResult r;
  try {
    r = policy::autotune(cands, lim, cached == dc.records.end() ? std::string() : cached->second.engine, ops,
                         tuned_total_ms);
    tuned_total_ms += r.tune_ms;
  } catch (...) {
    cudaEventDestroy(t0);
    cudaEventDestroy(t1);
    throw;
  }
  cudaEventDestroy(t0);
  cudaEventDestroy(t1);
  cudaGetLastError();  // a failing candidate must not leave an error behind for the next launch
  if (r.chosen < 0)
    throw Error(ErrorCode::Cudnn, std::string(dir_name(d)) + ": none of the " + std::to_string(count) +
                                      " cuDNN engine configurations could run this convolution (" +
                                      std::to_string(r.built) + " built)" +
                                      (last_error.empty() ? "" : " (last error: " + last_error + ")"));
  int64_t ws = 0;
  check_fe(g->get_workspace_size_plan_at_index(r.chosen, ws), d, "workspace query");
  plan->index = r.chosen;
  plan->workspace = ws;
  plan->engine = r.chosen_name;
  plan->graph = g;
  log_autotune(d, dt, key, count, rtc, r, ws);
  if (!r.from_cache && r.timed > 0) {  // only timed choices are worth keeping
    policy::PlanRecord rec{key, r.chosen_name, r.chosen_ms, ws};
    dc.records[key] = rec;
    policy::append_plan_record(dc.path, rec);
  }
  return plan;
}

void run_conv(CudaBackend &be, ConvCache &cache, ConvDir d, DType dt, const ConvShape &s, const void *in0,
              const void *in1, void *out) {
  std::string key = plan_key(d, dt, s, be.strict_fp32());
  auto it = cache.plans.find(key);
  std::shared_ptr<ConvPlan> plan;
  if (it != cache.plans.end()) {
    plan = it->second;
  } else {
    plan = build_plan(be, d, dt, s, in0, in1, out);
    cache.plans[key] = plan;
  }
  std::unordered_map<std::shared_ptr<fe::graph::Tensor_attributes>, void *> pack{
      {plan->in0, const_cast<void *>(in0)}, {plan->in1, const_cast<void *>(in1)}, {plan->out, out}};
  DeviceBuffer ws;
  if (plan->workspace) ws = DeviceBuffer(be, (size_t)plan->workspace);
  auto e = plan->graph->execute_plan_at_index(be.cudnn(), pack, ws.get(), plan->index);
  if (e.is_bad() && policy::frontend_message_is_alloc_failure(e.get_message())) {
    be.alloc_.release_cached();  // cuDNN could not allocate: give it our cached blocks (finding 7)
    e = plan->graph->execute_plan_at_index(be.cudnn(), pack, ws.get(), plan->index);
  }
  check_fe(e, d, "execution");
}

void check_conv_dtype(DType dt, const char *op) {
  if (dt != DType::F32 && dt != DType::BF16)
    fail(ErrorCode::DType, op, "input", "float32 or bfloat16 on cuda", dtype_name(dt));
}

ConvShape conv_shape(const Shape &x, const Shape &w, const Shape &y, const Conv2dArgs &a) {
  return {x[0], x[1], x[2], x[3], w[0], w[1], w[2], w[3], y[2], y[3], a.stride_h, a.stride_w, a.pad_h, a.pad_w};
}

}  // namespace

void conv2d_forward(const Tensor &x, const Tensor &w, const Tensor *b, Tensor &y, const Conv2dArgs &a) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  check_conv_dtype(x.dtype(), "conv2d");
  y.set_layout(Layout::ChannelsLast);
  if (y.numel() == 0) return;
  ConvShape s = conv_shape(x.shape(), w.shape(), y.shape(), a);
  DeviceBuffer tx, tw;
  const void *px = be.nhwc_data(x, tx), *pw = be.nhwc_data(w, tw);
  if (x.numel() == 0 || w.numel() == 0) {
    launch_fill(y.raw(), y.numel(), y.dtype(), 0.0, be.stream_);
  } else {
    run_conv(be, *be.conv_, ConvDir::Forward, x.dtype(), s, px, pw, y.raw());
  }
  // A separate epilogue: the networks here put batch norm after every convolution (no bias).
  if (b) launch_add_channel_bias(y.dtype(), y.raw(), b->raw(), s.N * s.P * s.Q, s.K, be.stream_);
}
const bool conv2d_forward_set = set_kernel(cuda_kernels().conv2d_forward, &conv2d_forward);

void conv2d_backward_data(const Tensor &gy, const Tensor &w, Tensor &gx, const Conv2dArgs &a) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  check_conv_dtype(gy.dtype(), "conv2d_backward_data");
  gx.set_layout(Layout::ChannelsLast);
  if (gx.numel() == 0) return;
  if (gy.numel() == 0 || w.numel() == 0) {
    launch_fill(gx.raw(), gx.numel(), gx.dtype(), 0.0, be.stream_);
    return;
  }
  ConvShape s = conv_shape(gx.shape(), w.shape(), gy.shape(), a);
  DeviceBuffer tg, tw;
  const void *pg = be.nhwc_data(gy, tg), *pw = be.nhwc_data(w, tw);
  run_conv(be, *be.conv_, ConvDir::BackwardData, gy.dtype(), s, pg, pw, gx.raw());
}
const bool conv2d_backward_data_set = set_kernel(cuda_kernels().conv2d_backward_data, &conv2d_backward_data);

void conv2d_backward_filter(const Tensor &gy, const Tensor &x, Tensor &gw, const Conv2dArgs &a) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  check_conv_dtype(gy.dtype(), "conv2d_backward_filter");
  gw.set_layout(Layout::ChannelsLast);  // KRSC, like the uploaded weights, so SGD runs flat
  if (gw.numel() == 0) return;
  if (gy.numel() == 0 || x.numel() == 0) {
    launch_fill(gw.raw(), gw.numel(), gw.dtype(), 0.0, be.stream_);
    return;
  }
  ConvShape s = conv_shape(x.shape(), gw.shape(), gy.shape(), a);
  DeviceBuffer tg, tx;
  const void *pg = be.nhwc_data(gy, tg), *px = be.nhwc_data(x, tx);
  run_conv(be, *be.conv_, ConvDir::BackwardFilter, gy.dtype(), s, pg, px, gw.raw());
}
const bool conv2d_backward_filter_set = set_kernel(cuda_kernels().conv2d_backward_filter, &conv2d_backward_filter);

}  // namespace rx::cuda
