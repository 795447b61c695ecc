// Picks the lines of a CRIU log that explain a failure. CRIU logs errors it recovers from
// and cascades one failure into several "FAILED" lines, so neither "every Error" nor "the
// last line" tells the user why.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <optional>

#include "base/unique_fd.h"
#include "criu/criu.h"

namespace prewarm::criu {
namespace {

// Lines after the chosen error that are kept (CRIU's own follow-ups: which task, which fd).
constexpr size_t kLinesAfter = 3;
// Only the end of a huge -v4 log is read: the failure is near its end.
constexpr off_t kMaxTailBytes = 8 << 20;

// Errors CRIU prints on every call on this kind of host (no CAP_SYS_RESOURCE).
constexpr std::array<std::string_view, 1> kBenign = {
    "Can't setup RLIMIT_NOFILE for self",
};

enum class Kind { kOther, kError, kWarn };

// CRIU prefixes: "(00.012345) Error (file.c:1): ...", "(00.1)  1234: Error (...)", and
// compel's "Warn  (...)".
Kind classify(std::string_view line) {
  if (line.find("Error (") != std::string_view::npos) return Kind::kError;
  auto w = line.find("Warn");
  if (w != std::string_view::npos) {
    auto rest = line.substr(w + 4);
    auto p = rest.find_first_not_of(' ');
    if (p != std::string_view::npos && p > 0 && rest[p] == '(') return Kind::kWarn;
  }
  return Kind::kOther;
}

// Lines CRIU adds after the real error when a whole operation gives up; they only say
// that it failed, so an earlier error is a better anchor when there is one.
bool is_summary(std::string_view line) {
  while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
  if (line.ends_with("FAILED.")) return true;  // "Dumping FAILED.", "Restoring FAILED."
  return line.find("Dump files (pid: ") != std::string_view::npos &&
         line.find(") failed with ") != std::string_view::npos;
}

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view l = text.substr(start, nl - start);
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    lines.push_back(l);
    start = nl + 1;
  }
  while (!lines.empty() && lines.back().find_first_not_of(" \t") == std::string_view::npos)
    lines.pop_back();
  return lines;
}

std::optional<size_t> last_index(const std::vector<std::string_view>& lines, auto pred) {
  for (size_t i = lines.size(); i-- > 0;) {
    if (pred(lines[i])) return i;
  }
  return std::nullopt;
}

}  // namespace

bool is_benign_error(std::string_view message) {
  return std::any_of(kBenign.begin(), kBenign.end(),
                     [&](std::string_view b) { return message.find(b) != std::string_view::npos; });
}

std::vector<std::string> relevant_log_lines(std::string_view log_text, size_t max_lines) {
  std::vector<std::string_view> lines = split_lines(log_text);
  std::vector<std::string> out;
  if (lines.empty() || max_lines == 0) return out;

  auto real_error = [](std::string_view l) {
    return classify(l) == Kind::kError && !is_benign_error(l);
  };
  std::optional<size_t> anchor =
      last_index(lines, [&](std::string_view l) { return real_error(l) && !is_summary(l); });
  if (!anchor) anchor = last_index(lines, real_error);

  if (anchor) {
    // Mostly lines before the error: they say what CRIU was working on when it failed.
    size_t after = std::min({kLinesAfter, lines.size() - *anchor - 1, max_lines - 1});
    size_t before = std::min(*anchor, max_lines - 1 - after);
    for (size_t i = *anchor - before; i <= *anchor + after; ++i) out.emplace_back(lines[i]);
    return out;
  }

  // No error: show where the log stopped, and the last warning if it is further up.
  size_t first = lines.size() > max_lines ? lines.size() - max_lines : 0;
  std::optional<size_t> warn =
      last_index(lines, [](std::string_view l) { return classify(l) == Kind::kWarn; });
  if (warn && *warn < first) {
    out.emplace_back(lines[*warn]);
    ++first;
  }
  for (size_t i = first; i < lines.size(); ++i) out.emplace_back(lines[i]);
  return out;
}

std::string criu_log_heading(const std::filesystem::path& log_file, int log_level) {
  if (log_level < 4)
    return "CRIU's " + log_file.filename().string() + " (log level " + std::to_string(log_level) +
           ": errors and warnings only; PREWARM_CRIU_LOG_LEVEL=4 logs everything):\n";
  return "CRIU's " + log_file.filename().string() + ":\n";
}

std::string relevant_log_tail(const std::filesystem::path& log_file, size_t max_lines) {
  UniqueFd fd(::open(log_file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return {};
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return {};
  off_t offset = st.st_size > kMaxTailBytes ? st.st_size - kMaxTailBytes : 0;
  std::string text(static_cast<size_t>(st.st_size - offset), '\0');
  size_t got = 0;
  while (got < text.size()) {
    ssize_t n =
        ::pread(fd.get(), text.data() + got, text.size() - got, offset + static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  text.resize(got);
  // A tail read starts mid-line; drop the fragment.
  if (offset > 0) {
    size_t nl = text.find('\n');
    text.erase(0, nl == std::string::npos ? text.size() : nl + 1);
  }
  std::string joined;
  for (const auto& l : relevant_log_lines(text, max_lines)) {
    if (!joined.empty()) joined += '\n';
    joined += l;
  }
  return joined;
}

}  // namespace prewarm::criu
