// Challenge parsing and the per-operation Authorizer (Basic, Bearer tokens cached per scope).
#include "registry/auth.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "base/base64.h"

namespace prewarm::registry::auth {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_space(char c) { return c == ' ' || c == '\t'; }

std::string join(const std::vector<std::string>& v, char sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : std::string(1, sep)) + s;
  return out;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  for (size_t start = 0; start <= s.size();) {
    size_t end = s.find(sep, start);
    if (end == std::string_view::npos) end = s.size();
    if (end > start) out.emplace_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

}  // namespace

std::vector<Challenge> parse_www_authenticate(std::string_view h) {
  std::vector<Challenge> out;
  size_t i = 0;
  auto skip = [&](bool commas) {
    while (i < h.size() && (is_space(h[i]) || (commas && h[i] == ','))) ++i;
  };
  while (true) {
    skip(true);
    if (i >= h.size()) break;
    size_t start = i;
    while (i < h.size() && !is_space(h[i]) && h[i] != '=' && h[i] != ',') ++i;
    std::string token(h.substr(start, i - start));
    skip(false);
    if (i < h.size() && h[i] == '=') {
      ++i;
      if (i < h.size() && h[i] == '=') {  // token68 ("Negotiate abc=="): not a parameter
        while (i < h.size() && h[i] == '=') ++i;
        continue;
      }
      skip(false);
      std::string value;
      if (i < h.size() && h[i] == '"') {
        for (++i; i < h.size() && h[i] != '"'; ++i) {
          if (h[i] == '\\' && i + 1 < h.size()) ++i;
          value += h[i];
        }
        ++i;  // closing quote
      } else {
        while (i < h.size() && h[i] != ',' && !is_space(h[i])) value += h[i++];
      }
      if (!out.empty()) out.back().params[lower(token)] = value;
    } else if (!token.empty()) {
      out.push_back({lower(token), {}});
    } else {
      ++i;  // stray character
    }
  }
  return out;
}

std::optional<TokenAnswer> parse_token_answer(std::string_view body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  TokenAnswer a;
  for (const char* k : {"token", "access_token"})
    if (a.token.empty() && j.contains(k) && j[k].is_string()) a.token = j[k].get<std::string>();
  if (a.token.empty()) return std::nullopt;
  int64_t expires_in = 60;  // the distribution spec's default
  // At most a day: a token server's number must not overflow the clock arithmetic (it did).
  constexpr int64_t kMaxExpiresIn = 24 * 60 * 60;
  if (j.contains("expires_in") && j["expires_in"].is_number_integer())
    expires_in = j["expires_in"].is_number_unsigned()  // how json holds any number >= 0
                     ? static_cast<int64_t>(std::clamp<uint64_t>(
                           j["expires_in"].get<uint64_t>(), 1, kMaxExpiresIn))
                     : 1;
  a.refresh_after = std::chrono::seconds(expires_in) * 9 / 10;
  return a;
}

std::string token_scope(const std::string& challenge_scope, const std::string& repository,
                        const std::vector<std::string>& actions) {
  if (challenge_scope.empty()) return "repository:" + repository + ":" + join(actions, ',');
  size_t first = challenge_scope.find(':');
  size_t last = challenge_scope.rfind(':');
  if (first == std::string::npos || first == last || challenge_scope.find(' ') != std::string::npos)
    return challenge_scope;
  if (challenge_scope.substr(0, first) != "repository" ||
      challenge_scope.substr(first + 1, last - first - 1) != repository)
    return challenge_scope;
  std::vector<std::string> merged = split(std::string_view(challenge_scope).substr(last + 1), ',');
  for (const auto& a : actions)
    if (std::find(merged.begin(), merged.end(), a) == merged.end()) merged.push_back(a);
  return "repository:" + repository + ":" + join(merged, ',');
}

Credentials resolve_credentials(const Options& opts) {
  // The caller's configuration (the CLI's: PREWARM_REGISTRY_USER / _PASSWORD, read once).
  return {opts.username, opts.password};
}

Authorizer::Authorizer(std::string registry, std::string repository,
                       std::vector<std::string> actions, Credentials creds, Stats* stats)
    : registry_(std::move(registry)),
      repository_(std::move(repository)),
      actions_(std::move(actions)),
      creds_(std::move(creds)),
      stats_(stats) {}

std::string Authorizer::header() const {
  std::lock_guard lock(mu_);
  return current_;
}

Error Authorizer::required(const std::string& why) const {
  return Error("authentication required by " + registry_ + " (" + why +
                   "; set PREWARM_REGISTRY_USER/PREWARM_REGISTRY_PASSWORD)",
               EACCES);
}

Error Authorizer::denied(const http::Response& resp) const {
  if (creds_.empty()) return required(http::describe(resp));
  return Error(registry_ + " refused user '" + creds_.username + "' for " + repository_ + ": " +
                   http::describe(resp) +
                   " (check PREWARM_REGISTRY_USER/PREWARM_REGISTRY_PASSWORD and the user's access)",
               EACCES);
}

Status Authorizer::on_unauthorized(http::Client& client, const http::Response& resp,
                                   const std::string& sent) {
  std::lock_guard lock(mu_);
  if (!current_.empty() && current_ != sent) return ok_status();  // another thread got newer
  std::vector<Challenge> challenges;
  for (const auto& value : resp.headers_named("www-authenticate"))
    for (auto& c : parse_www_authenticate(value)) challenges.push_back(std::move(c));
  auto find = [&](std::string_view scheme) -> const Challenge* {
    for (const auto& c : challenges)
      if (c.scheme == scheme) return &c;
    return nullptr;
  };
  if (const Challenge* bearer = find("bearer")) return fetch_token(client, *bearer, sent);
  if (find("basic")) {
    if (creds_.empty()) return required("it asks for Basic credentials");
    std::string basic =
        "Authorization: Basic " + base64_encode(creds_.username + ":" + creds_.password);
    if (sent == basic) return denied(resp);
    current_ = basic;
    return ok_status();
  }
  if (challenges.empty()) return required("HTTP 401 without a WWW-Authenticate challenge");
  return Error(registry_ + " asks for unsupported authentication '" + challenges[0].scheme +
                   "' (prewarm supports Basic and Bearer)",
               EACCES);
}

Status Authorizer::fetch_token(http::Client& client, const Challenge& c, const std::string& sent) {
  auto param = [&](const char* k) {
    auto it = c.params.find(k);
    return it == c.params.end() ? std::string() : it->second;
  };
  std::string realm = param("realm");
  if (!realm.starts_with("https://") && !realm.starts_with("http://"))
    return Error(registry_ + " sent a Bearer challenge without a usable realm ('" + realm + "')",
                 EPROTO);
  std::string service = param("service");
  std::string scope = token_scope(param("scope"), repository_, actions_);
  std::string key = realm + "\n" + service + "\n" + scope;
  auto now = std::chrono::steady_clock::now();
  if (auto it = tokens_.find(key); it != tokens_.end()) {
    if (it->second.header != sent && it->second.expires > now) {
      current_ = it->second.header;
      return ok_status();
    }
    tokens_.erase(it);
  }

  std::string url = realm + (realm.find('?') == std::string::npos ? "?" : "&");
  if (!service.empty()) url += "service=" + http::url_encode(service) + "&";
  url += "scope=" + http::url_encode(scope);
  if (!creds_.username.empty()) url += "&account=" + http::url_encode(creds_.username);
  http::Request req;
  req.url = url;
  if (!creds_.empty())
    req.headers.push_back("Authorization: Basic " +
                          base64_encode(creds_.username + ":" + creds_.password));
  if (stats_) {
    ++stats_->token_requests;
    ++stats_->requests;
  }
  auto r = client.perform(req);
  if (!r.ok()) return std::move(r).error().with_context("token server for " + registry_);
  if (r->status == 401 || r->status == 403) {
    std::string why = "token server " + realm + " answered " + http::describe(*r);
    if (creds_.empty()) return required(why);
    return Error(why + " for user '" + creds_.username +
                     "' (check PREWARM_REGISTRY_USER/PREWARM_REGISTRY_PASSWORD)",
                 EACCES);
  }
  if (r->status != 200)
    return Error("token server " + realm + " for " + registry_ + ": " + http::describe(*r), EPROTO);
  auto answer = parse_token_answer(r->body);
  if (!answer) return Error("token server " + realm + " answered without a token", EPROTO);
  std::string header = "Authorization: Bearer " + answer->token;
  if (header == sent) {
    http::Response refused;
    refused.status = 401;
    refused.reason = "Unauthorized (the token for scope '" + scope + "' is not enough)";
    return denied(refused);
  }
  tokens_[key] = {header, now + answer->refresh_after};
  current_ = header;
  return ok_status();
}

}  // namespace prewarm::registry::auth
