// Image references: HOST[:PORT]/REPO[/...](:TAG|@DIGEST), following the distribution grammar.
#include <cctype>
#include <charconv>

#include "registry/registry.h"

namespace prewarm::registry {
namespace {

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// One path component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
bool valid_component(std::string_view c) {
  if (c.empty() || !is_lower_alnum(c.front()) || !is_lower_alnum(c.back())) return false;
  for (size_t i = 0; i < c.size();) {
    if (is_lower_alnum(c[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < c.size() && !is_lower_alnum(c[j])) ++j;
    std::string_view sep = c.substr(i, j - i);
    bool dashes = sep.find_first_not_of('-') == std::string_view::npos;
    if (!(sep == "." || sep == "_" || sep == "__" || dashes)) return false;
    i = j;
  }
  return true;
}

bool valid_tag(std::string_view t) {
  if (t.empty() || t.size() > 128) return false;
  auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  if (!word(t.front())) return false;
  for (char c : t)
    if (!word(c) && c != '.' && c != '-') return false;
  return true;
}

bool valid_port(std::string_view p) {
  unsigned v = 0;
  auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
  return ec == std::errc() && end == p.data() + p.size() && v >= 1 && v <= 65535;
}

// host[:port] where host is a DNS name, an IPv4 address or a bracketed IPv6 address.
bool valid_host(std::string_view h) {
  std::string_view name = h, port;
  if (h.starts_with('[')) {
    size_t close = h.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    for (char c : h.substr(1, close - 1))
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') return false;
    std::string_view rest = h.substr(close + 1);
    if (rest.empty()) return true;
    return rest.front() == ':' && valid_port(rest.substr(1));
  }
  if (size_t colon = h.rfind(':'); colon != std::string_view::npos) {
    name = h.substr(0, colon);
    port = h.substr(colon + 1);
    if (!valid_port(port)) return false;
  }
  if (name.empty() || name.front() == '.' || name.back() == '.' || name.front() == '-') return false;
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') return false;
  return true;
}

bool looks_like_host(std::string_view c) {
  return c == "localhost" || c.find('.') != std::string_view::npos ||
         c.find(':') != std::string_view::npos || c.starts_with('[');
}

}  // namespace

bool is_valid_digest(std::string_view d) {
  if (d.size() != 71 || !d.starts_with("sha256:")) return false;
  for (char c : d.substr(7))
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::string Reference::host() const {
  if (registry.starts_with('[')) return registry.substr(0, registry.find(']') + 1);
  return registry.substr(0, registry.rfind(':'));
}

std::string Reference::to_string() const {
  std::string s = registry + "/" + repository;
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest;
  return s;
}

Result<Reference> parse_reference(std::string_view text) {
  auto fail = [&](std::string why) {
    return Error("invalid image reference '" + std::string(text) + "': " + why, EINVAL);
  };
  if (text.empty()) return fail("empty");
  if (text.size() > 512) return fail("longer than 512 characters");
  Reference ref;
  std::string_view name = text;
  if (size_t at = text.find('@'); at != std::string_view::npos) {
    ref.digest = std::string(text.substr(at + 1));
    name = text.substr(0, at);
    if (!ref.digest.starts_with("sha256:"))
      return fail("digest '" + ref.digest + "' is not sha256 (only sha256:<64 hex> is supported)");
    if (!is_valid_digest(ref.digest))
      return fail("digest '" + ref.digest + "' is not sha256: followed by 64 lowercase hex digits");
  }
  size_t slash = name.find('/');
  std::string_view first = name.substr(0, slash);
  if (slash == std::string_view::npos)
    return fail("no registry host (there is no default registry); write it first, e.g. "
                "registry.example.com/" + std::string(name));
  if (!looks_like_host(first))
    return fail("no registry host: '" + std::string(first) +
                "' is not read as one (a host has a '.' or a ':PORT', or is localhost) and "
                "there is no default registry; write e.g. registry.example.com/" +
                std::string(name));
  if (!valid_host(first)) return fail("'" + std::string(first) + "' is not a valid host[:port]");
  ref.registry = std::string(first);

  std::string_view rest = name.substr(slash + 1);
  size_t last_slash = rest.rfind('/');
  size_t colon = rest.find(':', last_slash == std::string_view::npos ? 0 : last_slash);
  std::string_view repo = rest.substr(0, colon);
  if (colon != std::string_view::npos) {
    ref.tag = std::string(rest.substr(colon + 1));
    if (!valid_tag(ref.tag))
      return fail("tag '" + ref.tag + "' must be 1-128 of [A-Za-z0-9_.-], not starting with . or -");
  }
  if (repo.empty()) return fail("no repository after the registry host");
  if (repo.size() > 255) return fail("repository name longer than 255 characters");
  for (size_t start = 0; start <= repo.size();) {
    size_t end = repo.find('/', start);
    if (end == std::string_view::npos) end = repo.size();
    std::string_view comp = repo.substr(start, end - start);
    if (!valid_component(comp)) {
      bool upper = false;
      for (char c : comp) upper = upper || std::isupper(static_cast<unsigned char>(c));
      return fail("repository component '" + std::string(comp) + "' " +
                  (upper ? "must be lowercase"
                         : "must be lowercase letters and digits separated by '.', '_', '__' or "
                           "'-'"));
    }
    start = end + 1;
  }
  ref.repository = std::string(repo);
  if (ref.tag.empty() && ref.digest.empty())
    return fail("no tag or digest; add ':TAG' or '@sha256:...'");
  return ref;
}

}  // namespace prewarm::registry
