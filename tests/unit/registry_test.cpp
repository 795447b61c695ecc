// Registry client pieces that need no registry: references, challenges, range arithmetic.
#include <gtest/gtest.h>

#include "registry/auth.h"
#include "registry/http.h"
#include "registry/registry.h"
#include "registry/session.h"

namespace prewarm::registry {
namespace {

const std::string kDigest = "sha256:" + std::string(64, 'a');

TEST(Reference, ParsesHostPortRepoTag) {
  auto r = parse_reference("127.0.0.1:5000/team/app:v1");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->registry, "127.0.0.1:5000");
  EXPECT_EQ(r->repository, "team/app");
  EXPECT_EQ(r->tag, "v1");
  EXPECT_EQ(r->digest, "");
  EXPECT_EQ(r->reference(), "v1");
  EXPECT_EQ(r->host(), "127.0.0.1");
  EXPECT_EQ(r->to_string(), "127.0.0.1:5000/team/app:v1");
}

TEST(Reference, ParsesDigestsAndHostForms) {
  auto d = parse_reference("registry.example.com/app@" + kDigest);
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ(d->registry, "registry.example.com");
  EXPECT_EQ(d->tag, "");
  EXPECT_EQ(d->reference(), kDigest);

  auto both = parse_reference("localhost:5000/a/b/c:1.0-rc_1@" + kDigest);
  ASSERT_TRUE(both.ok()) << both.error().message();
  EXPECT_EQ(both->repository, "a/b/c");
  EXPECT_EQ(both->tag, "1.0-rc_1");
  EXPECT_EQ(both->reference(), kDigest);
  EXPECT_EQ(both->host(), "localhost");

  auto v6 = parse_reference("[::1]:5000/app:latest");
  ASSERT_TRUE(v6.ok()) << v6.error().message();
  EXPECT_EQ(v6->registry, "[::1]:5000");
  EXPECT_EQ(v6->host(), "[::1]");

  auto sep = parse_reference("localhost/my-app__x.y/z:t");
  ASSERT_TRUE(sep.ok()) << sep.error().message();
  EXPECT_EQ(sep->repository, "my-app__x.y/z");
}

void expect_invalid(const std::string& text, const std::string& why) {
  auto r = parse_reference(text);
  ASSERT_FALSE(r.ok()) << text;
  EXPECT_NE(r.error().message().find(why), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find(text), std::string::npos) << r.error().message();
}

TEST(Reference, ErrorsNameTheProblem) {
  expect_invalid("app:v1", "no registry host");
  expect_invalid("library/app:v1", "no registry host");
  expect_invalid("127.0.0.1:5000/App:v1", "must be lowercase");
  expect_invalid("127.0.0.1:5000/app-:v1", "repository component 'app-'");
  expect_invalid("127.0.0.1:5000/a//b:v1", "repository component ''");
  expect_invalid("127.0.0.1:5000/app", "no tag or digest");
  expect_invalid("127.0.0.1:5000/app:", "tag ''");
  expect_invalid("127.0.0.1:5000/app:.x", "tag '.x'");
  expect_invalid("127.0.0.1:5000/app@sha512:abc", "not sha256");
  expect_invalid("127.0.0.1:5000/app@sha256:ABC", "64 lowercase hex");
  expect_invalid("127.0.0.1:99999/app:v1", "not a valid host");
  expect_invalid("127.0.0.1:5000/:v1", "no repository");
  expect_invalid("", "empty");
}

TEST(Digest, OnlySha256WithLowercaseHex) {
  EXPECT_TRUE(is_valid_digest(kDigest));
  EXPECT_FALSE(is_valid_digest("sha256:" + std::string(63, 'a')));
  EXPECT_FALSE(is_valid_digest("sha256:" + std::string(64, 'A')));
  EXPECT_FALSE(is_valid_digest("sha512:" + std::string(64, 'a')));
}

TEST(Session, PlainHttpOnlyForLoopbackUnlessTold) {
  Options opts;
  auto url = [&](const std::string& text) {
    return Session(*parse_reference(text), opts, "pull").url("/tags/list");
  };
  EXPECT_EQ(url("127.0.0.1:5000/app:v1"), "http://127.0.0.1:5000/v2/app/tags/list");
  EXPECT_EQ(url("localhost/app:v1"), "http://localhost/v2/app/tags/list");
  EXPECT_EQ(url("[::1]:5000/app:v1"), "http://[::1]:5000/v2/app/tags/list");
  EXPECT_EQ(url("registry.example.com/a/b:v1"), "https://registry.example.com/v2/a/b/tags/list");
  opts.insecure_http = false;
  EXPECT_EQ(url("127.0.0.1:5000/app:v1"), "https://127.0.0.1:5000/v2/app/tags/list");
  opts.insecure_http = true;
  EXPECT_EQ(url("registry.example.com/app:v1"), "http://registry.example.com/v2/app/tags/list");
}

TEST(WwwAuthenticate, ParsesBasicAndBearer) {
  auto basic = auth::parse_www_authenticate("Basic realm=\"registry\"");
  ASSERT_EQ(basic.size(), 1u);
  EXPECT_EQ(basic[0].scheme, "basic");
  EXPECT_EQ(basic[0].params["realm"], "registry");

  auto bearer = auth::parse_www_authenticate(
      "Bearer realm=\"https://auth.example.com/token\",service=\"registry.example.com\","
      "scope=\"repository:team/app:pull,push\",error=\"invalid_token\"");
  ASSERT_EQ(bearer.size(), 1u);
  EXPECT_EQ(bearer[0].scheme, "bearer");
  EXPECT_EQ(bearer[0].params["realm"], "https://auth.example.com/token");
  EXPECT_EQ(bearer[0].params["service"], "registry.example.com");
  EXPECT_EQ(bearer[0].params["scope"], "repository:team/app:pull,push");
  EXPECT_EQ(bearer[0].params["error"], "invalid_token");
}

TEST(WwwAuthenticate, ParsesSeveralChallengesTokensAndEscapes) {
  auto cs = auth::parse_www_authenticate(
      "Negotiate abc==, Basic realm=plain, Bearer Realm = \"a \\\"quoted\\\" realm\" ,scope=x");
  ASSERT_EQ(cs.size(), 3u);
  EXPECT_EQ(cs[0].scheme, "negotiate");
  EXPECT_TRUE(cs[0].params.empty());
  EXPECT_EQ(cs[1].scheme, "basic");
  EXPECT_EQ(cs[1].params["realm"], "plain");
  EXPECT_EQ(cs[2].scheme, "bearer");
  EXPECT_EQ(cs[2].params["realm"], "a \"quoted\" realm");
  EXPECT_EQ(cs[2].params["scope"], "x");
  EXPECT_TRUE(auth::parse_www_authenticate("").empty());
}

TEST(WwwAuthenticate, TokenScopeWidensOnlyOurRepository) {
  std::vector<std::string> push = {"pull", "push"};
  EXPECT_EQ(auth::token_scope("repository:app:pull", "app", push), "repository:app:pull,push");
  EXPECT_EQ(auth::token_scope("repository:app:push,pull", "app", push), "repository:app:push,pull");
  EXPECT_EQ(auth::token_scope("", "team/app", {"pull"}), "repository:team/app:pull");
  EXPECT_EQ(auth::token_scope("repository:other:pull", "app", push), "repository:other:pull");
  EXPECT_EQ(auth::token_scope("registry:catalog:*", "app", push), "registry:catalog:*");
  EXPECT_EQ(auth::token_scope("repository:host:5000/app:pull", "host:5000/app", push),
            "repository:host:5000/app:pull,push");
}

TEST(TokenAnswer, TokenAndLifetime) {
  using std::chrono::seconds;
  auto a = auth::parse_token_answer(R"({"token":"t1","expires_in":300})");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->token, "t1");
  EXPECT_EQ(a->refresh_after, seconds(270));
  EXPECT_EQ(auth::parse_token_answer(R"({"access_token":"t2"})")->refresh_after, seconds(54));
  EXPECT_FALSE(auth::parse_token_answer(R"({"expires_in":300})"));
  EXPECT_FALSE(auth::parse_token_answer("[1]"));
  // A huge lifetime is capped at a day (it overflowed the clock; found by fuzz/registry.cpp).
  EXPECT_EQ(auth::parse_token_answer(R"({"token":"t","expires_in":9223372036854775807})")
                ->refresh_after,
            seconds(86400 * 9 / 10));
  EXPECT_EQ(auth::parse_token_answer(R"({"token":"t","expires_in":-5})")->refresh_after,
            seconds(0));
}

TEST(Credentials, ComeFromTheOptionsNeverTheEnvironment) {
  // The environment is read once, into the caller's context (engine::config_from_env).
  ::setenv("PREWARM_REGISTRY_USER", "env-user", 1);
  ::setenv("PREWARM_REGISTRY_PASSWORD", "env-pass", 1);
  Options opts;
  EXPECT_TRUE(auth::resolve_credentials(opts).empty());
  opts.username = "u";
  opts.password = "p";
  EXPECT_EQ(auth::resolve_credentials(opts).username, "u");
  EXPECT_EQ(auth::resolve_credentials(opts).password, "p");
  ::unsetenv("PREWARM_REGISTRY_USER");
  ::unsetenv("PREWARM_REGISTRY_PASSWORD");
}

TEST(Ranges, UploadRangeHeaders) {
  EXPECT_EQ(http::upload_content_range(0, 1024), "0-1023");
  EXPECT_EQ(http::upload_content_range(8 << 20, 1), "8388608-8388608");
  // The registry reports what it holds as "0-LAST".
  EXPECT_EQ(http::upload_received("0-1023"), 1024u);
  EXPECT_EQ(http::upload_received("bytes=0-8388607"), 8388608u);
  EXPECT_EQ(http::upload_received("0-0"), 0u);  // empty (or one byte): resume from 0
  EXPECT_FALSE(http::upload_received(""));
  EXPECT_FALSE(http::upload_received("5-9"));
  EXPECT_FALSE(http::upload_received("0-x"));
  EXPECT_FALSE(http::upload_received("9-5"));
  auto r = http::parse_range(" 100-199 ");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->first, 100u);
  EXPECT_EQ(r->last, 199u);
}

TEST(Ranges, ContentRangeOfPartialResponses) {
  auto cr = http::parse_content_range("bytes 1048576-4194303/4194304");
  ASSERT_TRUE(cr);
  EXPECT_EQ(cr->first, 1048576u);
  EXPECT_EQ(cr->last, 4194303u);
  EXPECT_EQ(cr->total, 4194304u);
  auto unknown = http::parse_content_range("bytes 0-9/*");
  ASSERT_TRUE(unknown);
  EXPECT_FALSE(unknown->total);
  EXPECT_FALSE(http::parse_content_range("bytes 0-9/9"));  // last byte beyond total
  EXPECT_FALSE(http::parse_content_range("0-9/10"));
  EXPECT_FALSE(http::parse_content_range("bytes */10"));
}

TEST(Http, UrlEncodingAndResolution) {
  EXPECT_EQ(http::url_encode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
  EXPECT_EQ(*http::resolve_url("http://h:5000/v2/app/blobs/uploads/", "/v2/app/blobs/uploads/u1?_state=x"),
            "http://h:5000/v2/app/blobs/uploads/u1?_state=x");
  EXPECT_EQ(*http::resolve_url("http://h:5000/v2/a/", "https://other/x"), "https://other/x");
  EXPECT_EQ(http::url_authority("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
  EXPECT_EQ(http::url_authority("https://Registry.Example.com/v2/"), "registry.example.com:443");
  EXPECT_EQ(http::url_authority("http://[::1]:5000/v2/"), "[::1]:5000");
}

TEST(Http, DescribesRegistryErrors) {
  http::Response r;
  r.status = 404;
  r.reason = "Not Found";
  r.body = R"({"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":"x"}]})";
  EXPECT_EQ(http::describe(r), "HTTP 404 Not Found (BLOB_UNKNOWN: blob unknown to registry)");
  EXPECT_EQ(http::error_code(r), "BLOB_UNKNOWN");
  r.body = "plain text\n";
  EXPECT_EQ(http::describe(r), "HTTP 404 Not Found (plain text)");
  EXPECT_EQ(http::error_code(r), "");
}

}  // namespace
}  // namespace prewarm::registry
