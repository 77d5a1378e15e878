// See policy.h. Plain C++: no CUDA function is called here.
#include "policy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace rx::cuda::policy {

// ---------------------------------------------------------------- errors

bool is_sticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorECCUncorrectable:
    case cudaErrorNvlinkUncorrectable:
    case cudaErrorExternalDevice:
    case cudaErrorContextIsDestroyed:
      return true;
    default:
      return false;
  }
}

ErrorCode code_for(cudaError_t e) { return is_out_of_memory(e) ? ErrorCode::OOM : ErrorCode::Cuda; }
ErrorCode code_for(cudnnStatus_t s) { return is_alloc_failure(s) ? ErrorCode::OOM : ErrorCode::Cudnn; }
ErrorCode code_for(cublasStatus_t s) { return is_alloc_failure(s) ? ErrorCode::OOM : ErrorCode::Cuda; }

bool frontend_message_is_alloc_failure(const std::string &msg) {
  for (const char *k : {"ALLOCATION_FAILED", "ALLOC_FAILED", "cudaErrorMemoryAllocation", "out of memory"})
    if (msg.find(k) != std::string::npos) return true;
  return false;
}

std::string cuda_error_message(const std::string &what, cudaError_t e, const char *name, const char *desc) {
  std::string m = what + ": CUDA error " + (name ? name : "?") + " (" + (desc ? desc : "?") + ")";
  if (is_sticky(e))
    m += "; the CUDA context is unusable after this error (a kernel faulted or the GPU reported an uncorrectable "
         "error): every later CUDA call fails the same way, restart the process";
  return m;
}

std::string context_lost_message(const std::string &what, const std::string &first_failure) {
  return what + ": the CUDA context is unusable since an earlier failure, restart the process (first failure: " +
         first_failure + ")";
}

std::string alloc_failure_message(size_t bytes, int64_t live, int64_t reserved, bool mem_info_ok, size_t free_b,
                                  size_t total_b) {
  std::ostringstream m;
  m << "alloc: out of GPU memory allocating " << bytes << " bytes on cuda:0 (" << live << " bytes in live tensors, "
    << reserved << " reserved by resnext, ";
  if (mem_info_ok) m << free_b << " of " << total_b << " free on the device";
  else m << "free memory unknown: cudaMemGetInfo failed too";
  m << "); free tensors (dispose/tidy) or use a smaller batch";
  return m.str();
}

// ---------------------------------------------------------------- versions

std::string cudnn_version_str(size_t v) {
  return std::to_string(v / 10000) + "." + std::to_string((v / 100) % 100) + "." + std::to_string(v % 100);
}

std::string cudnn_version_problem(size_t loaded, size_t built) {
  if (loaded / 100 == built / 100) return "";
  std::string b = cudnn_version_str(built), l = cudnn_version_str(loaded);
  std::string bmm = std::to_string(built / 10000) + "." + std::to_string((built / 100) % 100);
  return "cuDNN " + l + " was loaded (libcudnn.so.9) but this resnext CUDA library was built against cuDNN " + b +
         " headers and expects cuDNN " + bmm +
         ".x: install cuDNN " + bmm + " (apt cudnn9-cuda-13 of that version, or pip nvidia-cudnn-cu13==" + bmm +
         ".*), put it first on LD_LIBRARY_PATH, or rebuild the library against the cuDNN you have (npm run build:cuda)";
}

// ---------------------------------------------------------------- engines

std::vector<Note> deselected_notes(bool fp32, bool strict_fp32) {
  std::vector<Note> n{Note::ReducedPrecisionReduction};
  if (fp32) n.push_back(Note::DownConvertInputs);
  if (fp32 && strict_fp32) n.push_back(Note::TensorCore);
  return n;
}

TuneLimits tune_limits(const char *autotune, const char *max_candidates, const char *budget_ms, const char *total_ms) {
  TuneLimits l;
  if (autotune && std::strcmp(autotune, "0") == 0) l.heuristics_only = true;
  if (max_candidates && *max_candidates) {
    long v = std::strtol(max_candidates, nullptr, 10);
    l.max_candidates = (int)std::min(8L, std::max(1L, v));
  }
  if (budget_ms && *budget_ms) {
    double v = std::strtod(budget_ms, nullptr);
    if (v > 0) l.budget_ms = v;
  }
  if (total_ms && *total_ms) {
    double v = std::strtod(total_ms, nullptr);
    if (v > 0) l.total_budget_ms = v;
  }
  return l;
}

TuneResult autotune(const std::vector<Candidate> &cands, const TuneLimits &limits, const std::string &cached_name,
                    const TuneOps &ops, double spent_ms) {
  TuneResult r;
  TuneLimits lim = limits;
  bool process_budget_spent = lim.total_budget_ms > 0 && spent_ms >= lim.total_budget_ms;
  if (process_budget_spent) lim.heuristics_only = true;
  double t0 = ops.now_ms();
  auto done = [&](const char *why) {
    r.stop_reason = why;
    r.tune_ms = ops.now_ms() - t0;
    if (r.chosen >= 0) r.chosen_name = cands[(size_t)r.chosen].name;
    return r;
  };
  // A cached choice first: one build, one run to prove it works, no timing of the others.
  if (!cached_name.empty()) {
    for (size_t i = 0; i < cands.size(); i++) {
      if (cands[i].name != cached_name) continue;
      r.considered++;
      if (ops.build((int64_t)i)) {
        r.built++;
        float ms = 0;
        if (ops.time((int64_t)i, lim.heuristics_only ? 0 : 1, ms)) {
          r.chosen = (int64_t)i;
          r.chosen_ms = ms;
          r.from_cache = true;
          return done("cached engine");
        }
      }
      break;  // the cached engine no longer works here: tune as if there were no cache
    }
  }
  float best_ms = 0;
  for (size_t i = 0; i < cands.size(); i++) {
    if (r.built >= lim.max_candidates) return done("candidate cap reached");
    if (r.chosen >= 0 && ops.now_ms() - t0 >= lim.budget_ms) return done("time budget spent");
    r.considered++;
    if (!ops.build((int64_t)i)) continue;
    r.built++;
    float ms = 0;
    if (!ops.time((int64_t)i, lim.heuristics_only ? 0 : lim.timing_runs, ms)) continue;
    if (lim.heuristics_only) {
      r.chosen = (int64_t)i;
      return done(process_budget_spent ? "process tuning budget spent: heuristics only" : "heuristics only");
    }
    r.timed++;
    if (r.chosen < 0 || ms < best_ms) {
      r.chosen = (int64_t)i;
      best_ms = ms;
      r.chosen_ms = ms;
    }
  }
  return done(r.chosen >= 0 ? "all candidates tried" : "no candidate built and ran");
}

// ---------------------------------------------------------------- plan cache

std::string plan_cache_key(const PlanKeyParts &k) {
  std::ostringstream o;
  auto clean = [](std::string s) {
    for (char &c : s)
      if (c == '\t' || c == '\n' || c == '\r') c = ' ';
    return s;
  };
  o << clean(k.gpu) << "|cudnn" << k.cudnn_version << "|fe" << k.frontend_version << "|dir" << k.dir << "|"
    << clean(k.dtype) << "|" << clean(k.layout) << "|x" << k.N << "x" << k.C << "x" << k.H << "x" << k.W << "|w" << k.K
    << "x" << k.Cg << "x" << k.R << "x" << k.S << "|y" << k.P << "x" << k.Q << "|s" << k.sh << "," << k.sw << "|p"
    << k.ph << "," << k.pw << "|" << (k.strict_fp32 ? "strict" : "tf32");
  return o.str();
}

std::string format_plan_line(const PlanRecord &r) {
  std::ostringstream o;
  o << r.key << '\t' << r.engine << '\t' << r.ms << '\t' << r.workspace << '\n';
  return o.str();
}

bool parse_plan_line(const std::string &line, PlanRecord &r) {
  std::vector<std::string> f;
  size_t start = 0;
  std::string l = line;
  while (!l.empty() && (l.back() == '\n' || l.back() == '\r')) l.pop_back();
  for (;;) {
    size_t t = l.find('\t', start);
    f.push_back(l.substr(start, t == std::string::npos ? std::string::npos : t - start));
    if (t == std::string::npos) break;
    start = t + 1;
  }
  if (f.size() != 4 || f[0].empty() || f[1].empty()) return false;
  char *end = nullptr;
  float ms = std::strtof(f[2].c_str(), &end);
  if (end == f[2].c_str() || *end) return false;
  long long ws = std::strtoll(f[3].c_str(), &end, 10);
  if (end == f[3].c_str() || *end || ws < 0) return false;
  r.key = f[0];
  r.engine = f[1];
  r.ms = ms;
  r.workspace = ws;
  return true;
}

std::map<std::string, PlanRecord> load_plan_cache(const std::string &path) {
  std::map<std::string, PlanRecord> m;
  if (path.empty()) return m;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    PlanRecord r;
    if (parse_plan_line(line, r)) m[r.key] = r;
  }
  return m;
}

bool append_plan_record(const std::string &path, const PlanRecord &r) {
  if (path.empty()) return false;
  // Create the parent folder (one level is what the defaults need; deeper ones must exist).
  size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    std::string dir = path.substr(0, slash);
    size_t prev = dir.rfind('/');
    if (prev != std::string::npos && prev > 0) (void)mkdir(dir.substr(0, prev).c_str(), 0755);
    (void)mkdir(dir.c_str(), 0755);
  }
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  std::string line = format_plan_line(r);
  bool ok = write(fd, line.data(), line.size()) == (ssize_t)line.size();
  close(fd);
  return ok;
}

std::string plan_cache_path(const char *env_path, const char *xdg, const char *home) {
  if (env_path) return (std::strcmp(env_path, "0") == 0) ? std::string() : std::string(env_path);
  if (xdg && *xdg) return std::string(xdg) + "/resnext/conv-plans.tsv";
  if (home && *home) return std::string(home) + "/.cache/resnext/conv-plans.tsv";
  return "";
}

// ---------------------------------------------------------------- uploads

std::vector<std::pair<size_t, size_t>> staging_chunks(size_t bytes, size_t chunk) {
  std::vector<std::pair<size_t, size_t>> v;
  if (chunk == 0) chunk = 1;
  for (size_t off = 0; off < bytes; off += chunk) v.emplace_back(off, std::min(chunk, bytes - off));
  return v;
}

// ---------------------------------------------------------------- batch norm

bool bn_falls_back(cudnnStatus_t s) {
  // The whole NOT_SUPPORTED category (3000-3999: shape, layout, data type, ...) and a plain
  // BAD_PARAM, which the legacy batch-norm calls return for combinations they do not cover.
  return CUDNN_STATUS_CATEGORY((int)s) == CUDNN_STATUS_NOT_SUPPORTED || s == CUDNN_STATUS_BAD_PARAM;
}

bool bn_persistent_enabled(const char *env) { return !(env && std::strcmp(env, "0") == 0); }

}  // namespace rx::cuda::policy
