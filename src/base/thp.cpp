// Reading the host's transparent huge page settings.
#include "base/thp.h"

#include <string>

#include "base/fs.h"

namespace prewarm::thp {
namespace {

// The bracketed word of a sysfs choice ("always [madvise] never" -> "madvise"); "" if none.
std::string chosen(const std::filesystem::path& file) {
  auto text = fs::read_file(file, 256);
  if (!text.ok()) return "";
  auto l = text->find('['), r = text->find(']');
  if (l == std::string::npos || r == std::string::npos || r < l) return "";
  return text->substr(l + 1, r - l - 1);
}

bool allows_advised(const std::string& mode) { return mode == "always" || mode == "madvise"; }

}  // namespace

AdvisedSizes advised_sizes(const std::filesystem::path& dir) {
  AdvisedSizes out;
  const bool top = allows_advised(chosen(dir / "enabled"));
  if (auto pmd = fs::read_file(dir / "hpage_pmd_size", 64); pmd.ok())
    out.pmd_bytes = std::strtoull(pmd->c_str(), nullptr, 10);
  std::error_code ec;
  bool pmd_listed = false;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    // hugepages-<N>kB
    if (!name.starts_with("hugepages-") || !name.ends_with("kB")) continue;
    const std::string digits = name.substr(10, name.size() - 12);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const uint64_t bytes = std::strtoull(digits.c_str(), nullptr, 10) << 10;
    const std::string mode = chosen(e.path() / "enabled");
    const bool allowed = allows_advised(mode) || (mode == "inherit" && top);
    if (bytes == out.pmd_bytes) {
      pmd_listed = true;
      out.pmd = allowed;
    } else if (allowed && bytes < out.pmd_bytes) {
      out.smaller.push_back(bytes);
    }
  }
  // Kernels without per-size settings: the top-level setting is the PMD size's.
  if (!pmd_listed) out.pmd = top && out.pmd_bytes > 0;
  return out;
}

bool small_folios_only(const AdvisedSizes& s) { return !s.pmd && !s.smaller.empty(); }

}  // namespace prewarm::thp
