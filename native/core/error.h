// Errors raised by the kernel core. The binding turns each into a JS error whose `code` is the
// stable string below (design.md section 3). The core never calls exit/abort: every bad input
// becomes one of these.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace rx {

enum class ErrorCode { Shape, DType, Device, Disposed, OOM, Arg, Cuda, Cudnn, IO, Internal };

inline const char *error_code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::Shape: return "ERR_SHAPE";
    case ErrorCode::DType: return "ERR_DTYPE";
    case ErrorCode::Device: return "ERR_DEVICE";
    case ErrorCode::Disposed: return "ERR_DISPOSED";
    case ErrorCode::OOM: return "ERR_OOM";
    case ErrorCode::Arg: return "ERR_ARG";
    case ErrorCode::Cuda: return "ERR_CUDA";
    case ErrorCode::Cudnn: return "ERR_CUDNN";
    case ErrorCode::IO: return "ERR_IO";
    case ErrorCode::Internal: return "ERR_INTERNAL";
  }
  return "ERR_INTERNAL";
}

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string &msg) : std::runtime_error(msg), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

inline std::string shape_str(const std::vector<int64_t> &s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); i++) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

// "<op>: <arg> expected <expected>, received <received>"
[[noreturn]] inline void fail(ErrorCode code, const std::string &op, const std::string &arg,
                              const std::string &expected, const std::string &received) {
  throw Error(code, op + ": " + arg + " expected " + expected + ", received " + received);
}

}  // namespace rx
