// CPU-side checks of the CUDA backend's decisions (native/cuda/policy.{h,cc}): error mapping,
// the cuDNN version rule, engine deselection, the autotuner against a fake GPU, the plan cache
// file, upload chunking and the batch-norm fallback rule. Built with g++ against the CUDA/cuDNN
// headers only (no CUDA library is linked or needed) by test/gpu-check-policy.test.ts.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>

#include "../../native/cuda/policy.h"

using namespace rx::cuda::policy;
using rx::ErrorCode;

static int failures = 0, checks = 0;
#define CHECK(cond)                                                        \
  do {                                                                     \
    checks++;                                                              \
    if (!(cond)) {                                                         \
      failures++;                                                          \
      std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);          \
    }                                                                      \
  } while (0)
static bool has(const std::string &s, const std::string &sub) { return s.find(sub) != std::string::npos; }

// A fake GPU for the autotuner: per candidate whether it builds, whether it runs, its time.
struct Fake {
  std::vector<bool> builds, runs;
  std::vector<float> ms;
  std::vector<double> build_cost_ms;
  double clock = 0;
  std::vector<int64_t> built, timed;
  TuneOps ops() {
    TuneOps o;
    o.build = [this](int64_t i) {
      built.push_back(i);
      clock += build_cost_ms.empty() ? 1 : build_cost_ms[(size_t)i];
      return (bool)builds[(size_t)i];
    };
    o.time = [this](int64_t i, int runs_n, float &out) {
      timed.push_back(i);
      clock += ms[(size_t)i] * (runs_n + 1);
      if (!runs[(size_t)i]) return false;
      out = ms[(size_t)i];
      return true;
    };
    o.now_ms = [this] { return clock; };
    return o;
  }
};
static std::vector<Candidate> names(size_t n) {
  std::vector<Candidate> c;
  for (size_t i = 0; i < n; i++) c.push_back({"eng" + std::to_string(i), i % 3 == 0});
  return c;
}

int main() {
  // ---- finding 4: only cudaErrorMemoryAllocation is ERR_OOM; a kernel fault is ERR_CUDA and sticky
  CHECK(code_for(cudaErrorMemoryAllocation) == ErrorCode::OOM);
  for (cudaError_t e : {cudaErrorIllegalAddress, cudaErrorLaunchFailure, cudaErrorMisalignedAddress, cudaErrorAssert,
                        cudaErrorIllegalInstruction, cudaErrorHardwareStackError, cudaErrorECCUncorrectable}) {
    CHECK(code_for(e) == ErrorCode::Cuda);
    CHECK(is_sticky(e));
  }
  CHECK(!is_sticky(cudaErrorMemoryAllocation));
  CHECK(!is_sticky(cudaErrorInvalidValue));
  CHECK(!is_sticky(cudaErrorLaunchOutOfResources));
  CHECK(code_for(cudaErrorInvalidValue) == ErrorCode::Cuda);
  {
    std::string m = cuda_error_message("alloc", cudaErrorIllegalAddress, "cudaErrorIllegalAddress", "an illegal memory access");
    CHECK(has(m, "cudaErrorIllegalAddress") && has(m, "context is unusable") && has(m, "restart the process"));
    CHECK(!has(m, "out of GPU memory"));
    std::string o = cuda_error_message("alloc", cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory");
    CHECK(!has(o, "context is unusable"));
    std::string lost = context_lost_message("conv2d", m);
    CHECK(has(lost, "conv2d") && has(lost, "cudaErrorIllegalAddress"));
    std::string a = alloc_failure_message(1 << 20, 10, 20, false, 0, 0);
    CHECK(has(a, "free memory unknown") && !has(a, "0 of 0 free"));
    std::string b = alloc_failure_message(1 << 20, 10, 20, true, 5, 80);
    CHECK(has(b, "5 of 80 free"));
  }
  // ---- finding 7: which library statuses are allocation failures (worth a retry)
  CHECK(is_alloc_failure(CUBLAS_STATUS_ALLOC_FAILED));
  CHECK(!is_alloc_failure(CUBLAS_STATUS_EXECUTION_FAILED));
  CHECK(code_for(CUBLAS_STATUS_ALLOC_FAILED) == ErrorCode::OOM);
  CHECK(is_alloc_failure(CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED));
  CHECK(is_alloc_failure(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED));
  CHECK(!is_alloc_failure(CUDNN_STATUS_EXECUTION_FAILED));
  CHECK(code_for(CUDNN_STATUS_NOT_SUPPORTED) == ErrorCode::Cudnn);
  CHECK(frontend_message_is_alloc_failure("cudnnBackendExecute failed with CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED"));
  CHECK(!frontend_message_is_alloc_failure("CUDNN_STATUS_NOT_SUPPORTED"));

  // ---- finding 8: only the cuDNN major.minor we were built against
  CHECK(cudnn_version_problem(91400, 91400).empty());
  CHECK(cudnn_version_problem(91402, 91400).empty());
  {
    std::string p = cudnn_version_problem(91900, 91400);
    CHECK(has(p, "9.19.0") && has(p, "9.14.0") && has(p, "9.14"));
    CHECK(!cudnn_version_problem(90000, 91400).empty());
    CHECK(!cudnn_version_problem(91300, 91400).empty());
    CHECK(!cudnn_version_problem(101400, 91400).empty());
    CHECK(cudnn_version_str(91400) == "9.14.0");
  }

  // ---- finding 3: DOWN_CONVERT_INPUTS is removed for fp32 in TF32 mode too
  {
    auto n = deselected_notes(true, false);
    std::set<Note> s(n.begin(), n.end());
    CHECK(s.count(Note::DownConvertInputs) == 1);
    CHECK(s.count(Note::ReducedPrecisionReduction) == 1);
    CHECK(s.count(Note::TensorCore) == 0);  // TF32 allowed
    auto st = deselected_notes(true, true);
    std::set<Note> ss(st.begin(), st.end());
    CHECK(ss.count(Note::DownConvertInputs) && ss.count(Note::TensorCore));
    auto b = deselected_notes(false, false);
    std::set<Note> sb(b.begin(), b.end());
    CHECK(sb.count(Note::TensorCore) == 0 && sb.count(Note::ReducedPrecisionReduction));
  }

  // ---- finding 2: the autotuner's cap, budget, heuristics-only mode and cached choice
  {
    TuneLimits d = tune_limits(nullptr, nullptr, nullptr);
    CHECK(d.max_candidates == 8 && !d.heuristics_only && d.budget_ms > 0);
    CHECK(tune_limits("0", nullptr, nullptr).heuristics_only);
    CHECK(!tune_limits("1", nullptr, nullptr).heuristics_only);
    CHECK(tune_limits(nullptr, "50", nullptr).max_candidates == 8);
    CHECK(tune_limits(nullptr, "0", nullptr).max_candidates == 1);
    CHECK(tune_limits(nullptr, "3", nullptr).max_candidates == 3);
    CHECK(tune_limits(nullptr, nullptr, "250").budget_ms == 250);
  }
  {
    // 40 candidates, all build and run: never more than 8 built and timed; the fastest of those wins.
    Fake f;
    size_t n = 40;
    f.builds.assign(n, true);
    f.runs.assign(n, true);
    for (size_t i = 0; i < n; i++) f.ms.push_back(10.f - (float)i * 0.1f);  // later ones faster
    TuneLimits lim;
    lim.budget_ms = 1e9;
    TuneResult r = autotune(names(n), lim, "", f.ops());
    CHECK(f.built.size() == 8);
    CHECK(r.built == 8 && r.timed == 8);
    CHECK(r.chosen == 7 && r.chosen_name == "eng7");
    CHECK(r.stop_reason == "candidate cap reached");
  }
  {
    // Plans that fail to build or to run are skipped and do not count against... running ones.
    Fake f;
    f.builds = {false, true, true, true};
    f.runs = {true, false, true, true};
    f.ms = {1, 1, 5, 3};
    TuneLimits lim;
    lim.budget_ms = 1e9;
    TuneResult r = autotune(names(4), lim, "", f.ops());
    CHECK(r.chosen == 3);
    CHECK(r.built == 3 && r.timed == 2);
  }
  {
    // The time budget stops building more candidates once one ran (RTC builds cost seconds).
    Fake f;
    f.builds.assign(8, true);
    f.runs.assign(8, true);
    f.ms.assign(8, 1);
    f.build_cost_ms.assign(8, 1000);
    TuneLimits lim;
    lim.budget_ms = 1500;
    TuneResult r = autotune(names(8), lim, "", f.ops());
    CHECK(r.built == 2);
    CHECK(r.stop_reason == "time budget spent");
    CHECK(r.chosen == 0);
  }
  {
    // The budget never leaves a graph without a plan: it keeps going until one runs.
    Fake f;
    f.builds = {true, true, true};
    f.runs = {false, false, true};
    f.ms = {1, 1, 2};
    f.build_cost_ms = {5000, 5000, 5000};
    TuneLimits lim;
    lim.budget_ms = 100;
    TuneResult r = autotune(names(3), lim, "", f.ops());
    CHECK(r.chosen == 2);
  }
  {
    // Heuristics only: the first plan that builds and runs, with no timing runs.
    Fake f;
    f.builds = {false, true, true};
    f.runs = {true, true, true};
    f.ms = {1, 9, 1};
    TuneLimits lim = tune_limits("0", nullptr, nullptr);
    TuneResult r = autotune(names(3), lim, "", f.ops());
    CHECK(r.chosen == 1 && r.timed == 0);
    CHECK(f.built.size() == 2);
  }
  {
    // A cached engine name is built alone and taken; a stale one falls back to tuning.
    Fake f;
    f.builds.assign(10, true);
    f.runs.assign(10, true);
    f.ms.assign(10, 2);
    TuneLimits lim;
    TuneResult r = autotune(names(10), lim, "eng6", f.ops());
    CHECK(r.from_cache && r.chosen == 6 && f.built.size() == 1);
    Fake g = f;
    g.built.clear();
    g.builds[6] = false;
    TuneResult s = autotune(names(10), lim, "eng6", g.ops());
    CHECK(!s.from_cache && s.chosen >= 0 && s.chosen != 6);
    Fake h = f;
    h.built.clear();
    TuneResult t = autotune(names(10), lim, "eng99", h.ops());
    CHECK(!t.from_cache && t.built == 8);
  }
  {
    // Once the process's tuning budget is spent, later graphs take the first plan that runs.
    Fake f;
    f.builds.assign(10, true);
    f.runs.assign(10, true);
    f.ms.assign(10, 1);
    TuneLimits lim = tune_limits(nullptr, nullptr, nullptr, "60000");
    CHECK(lim.total_budget_ms == 60000);
    TuneResult r = autotune(names(10), lim, "", f.ops(), 59000);
    CHECK(r.built == 8 && r.timed == 8);
    Fake g = f;
    g.built.clear();
    TuneResult s = autotune(names(10), lim, "", g.ops(), 60000);
    CHECK(s.built == 1 && s.timed == 0 && s.chosen == 0);
    CHECK(s.stop_reason == "process tuning budget spent: heuristics only");
    CHECK(tune_limits(nullptr, nullptr, nullptr, nullptr).total_budget_ms == 0);
  }
  {
    Fake f;
    f.builds.assign(3, false);
    f.runs.assign(3, true);
    f.ms.assign(3, 1);
    TuneResult r = autotune(names(3), TuneLimits{}, "", f.ops());
    CHECK(r.chosen == -1 && r.stop_reason == "no candidate built and ran");
  }

  // ---- the plan cache: key, line format, file round trip
  {
    PlanKeyParts k{"NVIDIA H200|sm90|132", 91400, 11600, 1, "bfloat16", "NHWC", 64, 128, 56, 56, 128, 4, 3, 3, 56, 56, 1, 1, 1, 1, false};
    std::string key = plan_cache_key(k);
    CHECK(has(key, "NVIDIA H200") && has(key, "cudnn91400") && has(key, "bfloat16") && has(key, "NHWC"));
    CHECK(has(key, "x64x128x56x56") && has(key, "w128x4x3x3") && has(key, "tf32"));
    PlanKeyParts k2 = k;
    k2.dtype = "float32";
    CHECK(plan_cache_key(k2) != key);
    k2 = k;
    k2.cudnn_version = 91500;
    CHECK(plan_cache_key(k2) != key);
    k2 = k;
    k2.gpu = "NVIDIA H100|sm90|132";
    CHECK(plan_cache_key(k2) != key);
    k2 = k;
    k2.layout = "NCHW";
    CHECK(plan_cache_key(k2) != key);
    k2 = k;
    k2.gpu = "bad\tname";
    CHECK(plan_cache_key(k2).find('\t') == std::string::npos);

    PlanRecord r{key, "eng12_k2=3", 0.25f, 1048576}, back;
    CHECK(parse_plan_line(format_plan_line(r), back));
    CHECK(back.key == key && back.engine == "eng12_k2=3" && back.workspace == 1048576 && back.ms == 0.25f);
    CHECK(!parse_plan_line("garbage", back));
    CHECK(!parse_plan_line("a\tb\tnotanumber\t1", back));
    CHECK(!parse_plan_line("a\tb\t1\t-5", back));
    char dir[] = "/tmp/rx-plan-cache-XXXXXX";
    CHECK(mkdtemp(dir) != nullptr);
    std::string path = std::string(dir) + "/sub/conv-plans.tsv";
    CHECK(load_plan_cache(path).empty());
    CHECK(append_plan_record(path, r));
    PlanRecord r2 = r;
    r2.engine = "eng3";
    CHECK(append_plan_record(path, r2));
    {
      std::ofstream o(path, std::ios::app);
      o << "torn line without tabs\n";
    }
    auto m = load_plan_cache(path);
    CHECK(m.size() == 1 && m[key].engine == "eng3");  // later lines win, junk is ignored
    std::remove(path.c_str());
    rmdir((std::string(dir) + "/sub").c_str());
    rmdir(dir);
    CHECK(plan_cache_path("/x/y.tsv", "/xdg", "/home/u") == "/x/y.tsv");
    CHECK(plan_cache_path("0", "/xdg", "/home/u").empty());
    CHECK(plan_cache_path(nullptr, "/xdg", "/home/u") == "/xdg/resnext/conv-plans.tsv");
    CHECK(plan_cache_path(nullptr, nullptr, "/home/u") == "/home/u/.cache/resnext/conv-plans.tsv");
  }

  // ---- finding 10: uploads go through pinned chunks that cover the buffer exactly once
  {
    auto c = staging_chunks(10, 4);
    CHECK(c.size() == 3 && c[0].first == 0 && c[2].first == 8 && c[2].second == 2);
    CHECK(staging_chunks(0, 4).empty());
    size_t total = 0;
    for (auto &p : staging_chunks((size_t)5 << 30, (size_t)64 << 20)) total += p.second;
    CHECK(total == (size_t)5 << 30);
  }

  // ---- finding 6: which cuDNN answers send batch norm to our own kernels
  CHECK(bn_falls_back(CUDNN_STATUS_NOT_SUPPORTED));
  CHECK(bn_falls_back(CUDNN_STATUS_NOT_SUPPORTED_SHAPE));
  CHECK(bn_falls_back(CUDNN_STATUS_NOT_SUPPORTED_LAYOUT));
  CHECK(bn_falls_back(CUDNN_STATUS_BAD_PARAM));
  CHECK(!bn_falls_back(CUDNN_STATUS_EXECUTION_FAILED));
  CHECK(!bn_falls_back(CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED));
  CHECK(!bn_falls_back(CUDNN_STATUS_SUCCESS));
  CHECK(bn_persistent_enabled(nullptr) && bn_persistent_enabled("1") && !bn_persistent_enabled("0"));

  std::printf("cuda_policy_test: %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
