// Error formatting.
#include "base/result.h"

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
