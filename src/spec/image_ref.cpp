// Parsing and printing image references (spec/image_ref.h).
#include "spec/image_ref.h"

#include <algorithm>

#include "registry/registry.h"

namespace prewarm::spec {
namespace {

constexpr std::string_view kOci = "oci:";
constexpr std::string_view kOciArchive = "oci-archive:";

// What an OCI layout's org.opencontainers.image.ref.name may hold (the spec's grammar:
// components of alphanumerics joined by -._:@/+=).
bool valid_tag(std::string_view t) {
  if (t.empty() || t.size() > 128) return false;
  return std::all_of(t.begin(), t.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("-._:@/+=").find(c) != std::string_view::npos;
  });
}

Result<ImageRef> parse_layout(ImageTransport t, std::string_view transport, std::string_view rest,
                              const std::filesystem::path& base_dir) {
  ImageRef out;
  out.transport = t;
  const size_t colon = rest.find(':');
  std::string_view path = rest.substr(0, colon);
  if (colon != std::string_view::npos) {
    out.tag = std::string(rest.substr(colon + 1));
    if (!valid_tag(out.tag))
      return Error(ErrorKind::kInvalidInput,
                   std::string(transport) + " tag \"" + out.tag +
                       "\" is not an image name (letters, digits and -._:@/+= only, at most "
                       "128)");
  }
  if (path.empty())
    return Error(ErrorKind::kInvalidInput,
                 "\"" + std::string(transport) + "\" names no path; write " +
                     std::string(transport) + "PATH[:TAG]");
  if (path.find('\0') != std::string_view::npos)
    return Error(ErrorKind::kInvalidInput, std::string(transport) + " path has a NUL byte");
  std::filesystem::path p(path);
  if (p.is_relative()) p = base_dir / p;
  p = p.lexically_normal();
  if (!p.has_filename() && p != p.root_path()) p = p.parent_path();
  out.path = std::move(p);
  return out;
}

}  // namespace

std::string ImageRef::to_string() const {
  switch (transport) {
    case ImageTransport::kRegistry:
      return registry_ref;
    case ImageTransport::kOciLayout:
    case ImageTransport::kOciArchive: {
      std::string s(transport == ImageTransport::kOciLayout ? kOci : kOciArchive);
      s += path.string();
      if (!tag.empty()) s += ":" + tag;
      return s;
    }
  }
  return registry_ref;
}

Result<ImageRef> parse_image_ref(std::string_view text, const std::filesystem::path& base_dir) {
  if (text.starts_with(kOciArchive))
    return parse_layout(ImageTransport::kOciArchive, kOciArchive, text.substr(kOciArchive.size()),
                        base_dir);
  if (text.starts_with(kOci))
    return parse_layout(ImageTransport::kOciLayout, kOci, text.substr(kOci.size()), base_dir);
  auto ref = registry::parse_reference(text);
  if (!ref.ok())
    return Error(ErrorKind::kInvalidInput,
                 ref.error().message() +
                     " (an image is HOST[:PORT]/REPO[:TAG][@sha256:DIGEST], oci:PATH[:TAG] or "
                     "oci-archive:PATH[:TAG])");
  ImageRef out;
  out.transport = ImageTransport::kRegistry;
  out.registry_ref = ref->to_string();
  return out;
}

}  // namespace prewarm::spec
