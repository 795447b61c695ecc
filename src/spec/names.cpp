// The naming rule shared by specs, images, instance ids and hostnames.
#include "spec/names.h"

namespace prewarm::spec {
namespace {

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

}  // namespace

Status check_name(std::string_view name, std::string_view what) {
  const std::string label(what);
  if (name.empty()) return Error(ErrorKind::kInvalidInput, label + " must not be empty");
  if (name.size() > kMaxNameLength)
    return Error(ErrorKind::kInvalidInput,
                 label + " must be at most " + std::to_string(kMaxNameLength) +
                     " characters (instance ids add " + std::to_string(kInstanceSuffixLength) +
                     " and become 63-character hostnames), got " + std::to_string(name.size()) +
                     ": '" + std::string(name) + "'");
  bool ok = is_lower_alnum(name.front()) && is_lower_alnum(name.back());
  for (char c : name) ok = ok && (is_lower_alnum(c) || c == '-');
  if (!ok)
    return Error(ErrorKind::kInvalidInput,
                 label + " must be lowercase letters, digits and '-', starting and ending with a "
                         "letter or digit (it becomes a hostname), got '" +
                     std::string(name) + "'");
  return {};
}

std::string to_name(std::string_view raw) {
  std::string out;
  for (char c : raw) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    out += is_lower_alnum(c) ? c : '-';
  }
  if (out.size() > kMaxNameLength) out.resize(kMaxNameLength);
  while (!out.empty() && out.front() == '-') out.erase(out.begin());
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out;
}

}  // namespace prewarm::spec
