// Registry authentication: WWW-Authenticate challenges, Basic credentials and Bearer tokens
// from the registry's token server, cached per scope.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "registry/http.h"
#include "registry/registry.h"

namespace prewarm::registry::auth {

struct Challenge {
  std::string scheme;                         // lowercase: "basic", "bearer"
  std::map<std::string, std::string> params;  // lowercase keys: realm, service, scope, error
};

// Parses one or more challenges ("Basic realm=x, Bearer realm="y",scope="a,b"").
std::vector<Challenge> parse_www_authenticate(std::string_view header);

// A token server's answer: the token, and how long to use it before fetching a new one (a
// little under its lifetime, so it does not expire between check and use).
struct TokenAnswer {
  std::string token;
  std::chrono::seconds refresh_after{};
};
// Parses a token server's JSON body ("token" or "access_token", "expires_in"); nullopt when it
// holds no token.
std::optional<TokenAnswer> parse_token_answer(std::string_view body);

// The scope to ask a token server for: the challenge's scope, widened to the actions this
// operation needs when it names the same repository ("pull" → "pull,push" for a push).
std::string token_scope(const std::string& challenge_scope, const std::string& repository,
                        const std::vector<std::string>& actions);

struct Credentials {
  std::string username;
  std::string password;
  bool empty() const { return username.empty() && password.empty(); }
};
// The options' credentials (the environment is read once, by the caller's context).
Credentials resolve_credentials(const Options& opts);

// The Authorization header one operation on one repository sends; shared by its threads.
class Authorizer {
 public:
  Authorizer(std::string registry, std::string repository, std::vector<std::string> actions,
             Credentials creds, Stats* stats);

  // "Authorization: ..." to send now, or "" before any challenge.
  std::string header() const;
  // After a 401 to a request that carried `sent`: obtains what the challenge asks for (or
  // notices another thread already did). An error says why no retry can succeed.
  Status on_unauthorized(http::Client& client, const http::Response& resp, const std::string& sent);
  // The error for a request still refused after authenticating.
  Error denied(const http::Response& resp) const;

 private:
  struct Token {
    std::string header;
    std::chrono::steady_clock::time_point expires;
  };
  Status fetch_token(http::Client& client, const Challenge& c, const std::string& sent);
  Error required(const std::string& why) const;

  std::string registry_;
  std::string repository_;
  std::vector<std::string> actions_;
  Credentials creds_;
  Stats* stats_;
  mutable std::mutex mu_;  // held across a token fetch, so threads do not fetch the same token
  std::string current_;
  std::map<std::string, Token> tokens_;  // by realm, service and scope
};

}  // namespace prewarm::registry::auth
