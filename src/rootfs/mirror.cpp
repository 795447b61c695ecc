// Finding the Debian mirror the host's apt already uses, so debootstrap builds need no
// configuration and never name a mirror of their own.
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "base/fs.h"
#include "base/log.h"
#include "rootfs/rootfs.h"

namespace prewarm::rootfs {
namespace {

constexpr size_t kMaxSourceFile = 1 << 20;

std::vector<std::string> words(std::string_view s) {
  std::vector<std::string> out;
  std::istringstream in{std::string(s)};
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_security(std::string_view s) { return s.find("security") != std::string_view::npos; }

// debootstrap fetches over http(s), ftp or from a local path; apt-only schemes won't do.
bool usable_scheme(std::string_view uri) {
  for (std::string_view scheme : {"http://", "https://", "ftp://", "file:/"}) {
    if (uri.starts_with(scheme)) return true;
  }
  return false;
}

// Debian and Ubuntu archives sit under a /debian or /ubuntu path segment; third-party
// repositories that happen to be listed first usually don't.
bool looks_like_distro_archive(std::string_view uri) {
  size_t scheme = uri.find("://");
  size_t path = uri.find('/', scheme == std::string_view::npos ? 0 : scheme + 3);
  while (path != std::string_view::npos) {
    size_t next = uri.find('/', path + 1);
    std::string_view seg =
        uri.substr(path + 1, next == std::string_view::npos ? uri.npos : next - path - 1);
    if (seg == "debian" || seg == "ubuntu") return true;
    path = next;
  }
  return false;
}

// deb822: paragraphs of "Field: value" lines separated by blank lines; indented lines continue
// the previous field; '#' lines are comments.
void scan_deb822(std::string_view text, std::vector<std::string>& out) {
  std::vector<std::pair<std::string, std::string>> fields;
  auto finish = [&] {
    std::optional<std::string> types, uris, suites, enabled;
    for (auto& [k, v] : fields) {
      std::string key = lower(k);
      if (key == "types") types = v;
      if (key == "uris") uris = v;
      if (key == "suites") suites = v;
      if (key == "enabled") enabled = v;
    }
    fields.clear();
    if (!types || !uris || !suites) return;
    if (enabled) {
      auto e = words(*enabled);
      if (!e.empty() && lower(e[0]) == "no") return;
    }
    auto t = words(*types);
    if (std::find(t.begin(), t.end(), "deb") == t.end()) return;
    auto s = words(*suites);
    if (std::none_of(s.begin(), s.end(), [](const std::string& x) { return !is_security(x); }))
      return;
    for (const auto& uri : words(*uris)) {
      if (!is_security(uri) && usable_scheme(uri)) {
        out.push_back(uri);
        return;
      }
    }
  };
  size_t start = 0;
  while (start <= text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(start, nl - start);
    start = nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.starts_with('#')) continue;
    if (line.find_first_not_of(" \t") == std::string_view::npos) {
      finish();
      continue;
    }
    if (line[0] == ' ' || line[0] == '\t') {
      if (!fields.empty()) fields.back().second += " " + std::string(line);
      continue;
    }
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    fields.emplace_back(std::string(line.substr(0, colon)), std::string(line.substr(colon + 1)));
  }
  finish();
}

// One-line format: "deb [options] URI SUITE [COMPONENT...]".
void scan_one_line(std::string_view text, std::vector<std::string>& out) {
  std::istringstream in{std::string(text)};
  for (std::string line; std::getline(in, line);) {
    if (size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    auto w = words(line);
    if (w.empty() || w[0] != "deb") continue;
    size_t i = 1;
    if (i < w.size() && w[i].starts_with('[')) {
      while (i < w.size() && !w[i].ends_with(']')) ++i;
      ++i;
    }
    if (i + 1 >= w.size()) continue;
    const std::string& uri = w[i];
    const std::string& suite = w[i + 1];
    if (is_security(uri) || is_security(suite) || !usable_scheme(uri)) continue;
    out.push_back(uri);
  }
}

}  // namespace

Result<std::string> parse_debian_mirror(const std::vector<AptSourceFile>& files) {
  std::vector<std::string> found;
  std::string names;
  for (const auto& f : files) {
    if (f.name.ends_with(".sources")) {
      scan_deb822(f.text, found);
    } else {
      scan_one_line(f.text, found);
    }
    names += (names.empty() ? "" : ", ") + f.name;
  }
  for (const auto& uri : found) {
    if (looks_like_distro_archive(uri)) return uri;
  }
  if (!found.empty()) return found.front();
  if (files.empty())
    return Error(
        "no apt sources found to take a Debian mirror from; set PREWARM_DEBIAN_MIRROR "
        "to the mirror's URL",
        ENOENT);
  return Error("no Debian mirror in " + names +
                   " (looked for a \"deb\" entry of a non-security suite); set "
                   "PREWARM_DEBIAN_MIRROR to the mirror's URL",
               ENOENT);
}

Result<std::string> host_debian_mirror() {
  if (const char* env = std::getenv("PREWARM_DEBIAN_MIRROR"); env && *env) return std::string(env);

  const std::filesystem::path apt = "/etc/apt";
  std::vector<std::filesystem::path> deb822, one_line;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(apt / "sources.list.d", ec)) {
    std::string name = e.path().filename().string();
    if (name.ends_with(".sources")) deb822.push_back(e.path());
    if (name.ends_with(".list")) one_line.push_back(e.path());
  }
  std::sort(deb822.begin(), deb822.end());
  std::sort(one_line.begin(), one_line.end());
  std::vector<std::filesystem::path> paths = deb822;
  if (std::filesystem::exists(apt / "sources.list", ec)) paths.push_back(apt / "sources.list");
  paths.insert(paths.end(), one_line.begin(), one_line.end());

  std::vector<AptSourceFile> files;
  for (const auto& p : paths) {
    auto text = fs::read_file(p, kMaxSourceFile);
    if (!text.ok()) {
      log::warn("skipping apt source " + p.string() + ": " + text.error().message());
      continue;
    }
    files.push_back({p.string(), std::move(*text)});
  }
  return parse_debian_mirror(files);
}

}  // namespace prewarm::rootfs
