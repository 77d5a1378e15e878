// The addon's per-environment state (worker_threads and jest workers each have their own): no
// static JS handles anywhere in the binding.
#pragma once

#include <napi.h>

#include <deque>
#include <string>
#include <vector>

namespace rxb {

// One export, as JS sees it (function data points here, so it lives as long as the environment).
struct Export {
  std::string name;
  std::vector<std::string> params;     // names, in order
  std::vector<std::string> params_ts;  // their TypeScript types
  std::string result_ts;
};

struct AddonData {
  Napi::FunctionReference tensor_ctor;
  Napi::FunctionReference error_class;
  std::deque<Export> exports;  // a deque: adding one never moves the others
  // While true (JS sets it inside tidy/disposeOnThrow scopes), new handles do not report their
  // bytes to V8 until JS calls account() on the ones that leave every scope (tensor_handle.h).
  bool defer_accounting = false;
};
AddonData &addon(Napi::Env env);

}  // namespace rxb
