// Decisions of the CUDA backend that need no GPU to make, kept apart so that a plain C++ test
// (test/native/cuda_policy_test.cc, run by test/gpu-check-policy.test.ts) checks them on any
// machine: which CUDA/cuDNN/cuBLAS failures are out-of-memory and which leave the context
// unusable, whether the loaded cuDNN is the one we were built for, which convolution engines
// are deselected, how many candidates autotuning builds and times (and when it stops), the
// on-disk plan cache's keys and lines, and how a pageable upload is split into pinned chunks.
//
// Only type definitions from the CUDA headers are used here (cudaError_t, cudnnStatus_t,
// cublasStatus_t): this file calls no CUDA function, so the test links without any CUDA library.
#pragma once

#include <cublas_api.h>
#include <cuda_runtime_api.h>
#include <cudnn_graph.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "../core/error.h"

namespace rx::cuda::policy {

// ---------------------------------------------------------------- error mapping (finding 4)

// Errors after which CUDA documents that "any further CUDA work will return the same error" and
// the process must be restarted: a kernel fault (illegal address, misaligned access, assert,
// illegal instruction, launch failure, timeout) or an uncorrectable ECC/NVLink error.
bool is_sticky(cudaError_t e);
// cudaMalloc's out-of-memory (the only CUDA error that is ERR_OOM).
inline bool is_out_of_memory(cudaError_t e) { return e == cudaErrorMemoryAllocation; }
ErrorCode code_for(cudaError_t e);
ErrorCode code_for(cudnnStatus_t s);
ErrorCode code_for(cublasStatus_t s);
// Library-internal allocation failures, which are worth one retry after releasing our cache (finding 7).
// (cuDNN 9: CUDNN_STATUS_ALLOC_FAILED is a deprecated alias of the host-allocation code; the
// device-allocation code is the one a full GPU gives.)
inline bool is_alloc_failure(cudnnStatus_t s) {
  return s == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED || s == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED;
}
inline bool is_alloc_failure(cublasStatus_t s) { return s == CUBLAS_STATUS_ALLOC_FAILED; }
// cudnn-frontend reports backend failures as text; an allocation failure names the status.
bool frontend_message_is_alloc_failure(const std::string &msg);
// "<what>: CUDA error <name> (<description>)", plus, for a sticky error, that the context is lost.
std::string cuda_error_message(const std::string &what, cudaError_t e, const char *name, const char *desc);
// The text every later call reports once the context is lost (first_failure: the message above).
std::string context_lost_message(const std::string &what, const std::string &first_failure);
// What cudaMalloc's failure says, given what cudaMemGetInfo could tell (mem_info_ok false: it failed too).
std::string alloc_failure_message(size_t bytes, int64_t live, int64_t reserved, bool mem_info_ok, size_t free_b,
                                  size_t total_b);

// ---------------------------------------------------------------- versions (finding 8)

// Empty when the cuDNN found at run time (cudnnGetVersion(), e.g. 91400) has the major and
// minor version of the headers we were compiled with (CUDNN_VERSION); else the ERR_DEVICE text.
std::string cudnn_version_problem(size_t loaded, size_t built);
std::string cudnn_version_str(size_t v);  // 91400 -> "9.14.0"

// ---------------------------------------------------------------- convolution engines (2, 3)

// Numerical notes whose engines are removed before any plan is built. DOWN_CONVERT_INPUTS
// (fp32 inputs converted to fp16: range loss, small gradients underflow) and
// REDUCED_PRECISION_REDUCTION (accumulation below fp32) always; TENSOR_CORE too in strict fp32.
enum class Note { DownConvertInputs, ReducedPrecisionReduction, TensorCore };
std::vector<Note> deselected_notes(bool fp32, bool strict_fp32);

struct TuneLimits {
  int max_candidates = 8;      // plans built and timed at most (RESNEXT_CUDA_AUTOTUNE_MAX, 1..8)
  double budget_ms = 1500;     // stop building more once this much time went into one graph
  bool heuristics_only = false;  // RESNEXT_CUDA_AUTOTUNE=0: the first plan that builds and runs
  int timing_runs = 2;         // timed runs per candidate after one warm-up (best is kept)
  // Tuning time for the whole process (0: no limit); once spent, later graphs take the first
  // plan that builds and runs. A plan build can overshoot a per-graph budget by one runtime
  // compilation (up to ~3 s), so only this bounds a run with ~140 graphs.
  double total_budget_ms = 0;
};
// From the environment values (null when unset): RESNEXT_CUDA_AUTOTUNE ("0" = heuristics only),
// RESNEXT_CUDA_AUTOTUNE_MAX (clamped to 1..8), RESNEXT_CUDA_AUTOTUNE_BUDGET_MS,
// RESNEXT_CUDA_AUTOTUNE_TOTAL_MS.
TuneLimits tune_limits(const char *autotune, const char *max_candidates, const char *budget_ms,
                       const char *total_ms = nullptr);

// One candidate as the autotuner sees it (by heuristic rank).
struct Candidate {
  std::string name;       // engine tag, e.g. "eng12_k2=3_k3=1"
  bool runtime_compiled;  // BehaviorNote RUNTIME_COMPILATION: its build costs 0.5-3 s
};
// What the GPU side does for the autotuner; each returns false when that step failed.
struct TuneOps {
  std::function<bool(int64_t)> build;                // builds the plan at this index
  std::function<bool(int64_t, int, float &)> time;   // runs it `runs` times (after one warm-up): best ms
  std::function<double()> now_ms;                    // a monotonic clock
};
struct TuneResult {
  int64_t chosen = -1;  // index into the candidates, -1: none built and ran
  std::string chosen_name;
  float chosen_ms = 0;  // 0 when not timed
  int considered = 0, built = 0, timed = 0;
  double tune_ms = 0;
  bool from_cache = false;
  std::string stop_reason;  // why no further candidate was tried
};
// Goes through the candidates in heuristic order. A cached engine name, when it is among them
// and builds and runs, is taken without timing. Otherwise builds up to max_candidates plans,
// stopping early when the budget is spent (after at least one plan ran), and keeps the fastest;
// heuristics-only keeps the first plan that builds and runs.
// spent_ms: tuning time this process already spent (against lim.total_budget_ms).
TuneResult autotune(const std::vector<Candidate> &cands, const TuneLimits &lim, const std::string &cached_name,
                    const TuneOps &ops, double spent_ms = 0);

// ---------------------------------------------------------------- plan cache on disk

// Identity of a convolution's engine choice: the GPU (name, compute capability, SM count),
// the cuDNN and cudnn-frontend versions, the direction, dtype, layout, shapes and geometry,
// and whether TF32 was allowed. Tab-free by construction.
struct PlanKeyParts {
  std::string gpu;  // e.g. "NVIDIA H200|sm90|132"
  size_t cudnn_version = 0;
  int frontend_version = 0;
  int dir = 0;                  // 0 fprop, 1 dgrad, 2 wgrad
  std::string dtype;            // "float32" / "bfloat16"
  std::string layout = "NHWC";  // x/y NHWC, w KRSC
  int64_t N, C, H, W, K, Cg, R, S, P, Q, sh, sw, ph, pw;
  bool strict_fp32 = false;
};
std::string plan_cache_key(const PlanKeyParts &k);
struct PlanRecord {
  std::string key, engine;
  float ms = 0;
  int64_t workspace = 0;
};
// One line per record: key \t engine \t ms \t workspace. parse returns false for anything else.
std::string format_plan_line(const PlanRecord &r);
bool parse_plan_line(const std::string &line, PlanRecord &r);
// The whole file (later lines win); a missing or unreadable file is an empty cache.
std::map<std::string, PlanRecord> load_plan_cache(const std::string &path);
// Appends one line with a single write (O_APPEND), so concurrent processes do not interleave.
bool append_plan_record(const std::string &path, const PlanRecord &r);
// RESNEXT_CUDA_PLAN_CACHE, else $XDG_CACHE_HOME/resnext/conv-plans.tsv, else
// $HOME/.cache/resnext/conv-plans.tsv; "0" or "" (set) disables it (empty result).
std::string plan_cache_path(const char *env_path, const char *xdg, const char *home);

// ---------------------------------------------------------------- uploads (finding 10)

// [offset, length) pieces of an upload of `bytes` through pinned staging buffers of `chunk`.
std::vector<std::pair<size_t, size_t>> staging_chunks(size_t bytes, size_t chunk);

// ---------------------------------------------------------------- batch norm (finding 6)

// Whether cuDNN's answer to a fused training batch norm means "use our own kernels instead":
// the shape/op is not supported (or a parameter is rejected) by the persistent NHWC path.
bool bn_falls_back(cudnnStatus_t s);
// RESNEXT_CUDA_BN_PERSISTENT ("0": never use cuDNN's persistent fused batch norm).
bool bn_persistent_enabled(const char *env);

}  // namespace rx::cuda::policy
