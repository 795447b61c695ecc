// Error formatting.
#include "base/result.h"

#include <cerrno>
#include <cstring>

namespace prewarm {

Error Error::sys(std::string_view op, int err, std::string_view path) {
  std::string m(op);
  if (!path.empty()) {
    m += " ";
    m += path;
  }
  m += ": ";
  m += std::strerror(err);
  return Error(std::move(m), err);
}

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInternal: return "internal";
    case ErrorKind::kNotFound: return "not found";
    case ErrorKind::kInvalidInput: return "invalid input";
    case ErrorKind::kConflict: return "conflict";
    case ErrorKind::kIncompatibleHost: return "incompatible host";
    case ErrorKind::kRuntime: return "runtime failure";
    case ErrorKind::kIo: return "I/O";
    case ErrorKind::kUnavailable: return "unavailable";
    case ErrorKind::kPermissionDenied: return "permission denied";
  }
  return "internal";
}

ErrorKind Error::kind() const {
  if (kind_) return *kind_;
  switch (errno_) {
    case 0: return ErrorKind::kInternal;
    case ENOENT: return ErrorKind::kNotFound;
    case ETIMEDOUT:
    case EAGAIN: return ErrorKind::kUnavailable;
    case EEXIST:
    case EBUSY: return ErrorKind::kConflict;
    case EINVAL: return ErrorKind::kInvalidInput;
    case EACCES:
    case EPERM: return ErrorKind::kPermissionDenied;
    default: return ErrorKind::kIo;
  }
}

Error& Error::with_context(std::string_view context) & {
  message_ = std::string(context) + ": " + message_;
  return *this;
}

Error&& Error::with_context(std::string_view context) && {
  message_ = std::string(context) + ": " + message_;
  return std::move(*this);
}

Error&& Error::with_detail(std::string detail) && {
  if (!detail_.empty()) detail_ += "\n";
  detail_ += std::move(detail);
  return std::move(*this);
}

std::string Error::to_string() const {
  std::string out = message_;
  if (!detail_.empty()) {
    out += "\n";
    size_t start = 0;
    while (start <= detail_.size()) {
      size_t nl = detail_.find('\n', start);
      if (nl == std::string::npos) nl = detail_.size();
      if (nl > start) out += "    " + detail_.substr(start, nl - start) + "\n";
      start = nl + 1;
    }
    if (out.back() == '\n') out.pop_back();
  }
  return out;
}

}  // namespace prewarm
