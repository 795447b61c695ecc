// What a registry sends back: WWW-Authenticate challenges, a token server's JSON, Range and
// Content-Range headers, Location URLs, error bodies; and image references from the user. The
// first byte picks the parser, the rest is its input.
#include <cstdint>
#include <string>
#include <string_view>

#include "registry/auth.h"
#include "registry/http.h"
#include "registry/registry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace prewarm::registry;
  if (size == 0) return 0;
  std::string in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 8) {
    case 0:
      for (const auto& c : auth::parse_www_authenticate(in))
        (void)auth::token_scope(c.params.count("scope") ? c.params.at("scope") : "", "team/app",
                                {"pull", "push"});
      break;
    case 1: {
      auto a = auth::parse_token_answer(in);
      if (a) (void)(std::chrono::steady_clock::now() + a->refresh_after);
      break;
    }
    case 2: (void)http::parse_range(in); (void)http::upload_received(in); break;
    case 3: (void)http::parse_content_range(in); break;
    case 4: {
      auto url = http::resolve_url("https://registry.example:5000/v2/team/app/blobs/uploads/", in);
      (void)http::url_authority(url.ok() ? *url : in);
      break;
    }
    case 5: {
      http::Response r;
      r.status = 404;
      r.body = in;
      (void)http::describe(r);
      (void)http::error_code(r);
      break;
    }
    case 6: (void)parse_reference(in); break;
    case 7: (void)is_valid_digest(in); break;
  }
  return 0;
}
