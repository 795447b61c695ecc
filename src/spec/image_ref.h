// Container image references as a rootfs source: a registry reference, or a local OCI image
// layout (`oci:PATH[:TAG]`) or an archive of one (`oci-archive:PATH[:TAG]`), named as skopeo's
// transports name them.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "base/result.h"

namespace prewarm::spec {

enum class ImageTransport { kRegistry, kOciLayout, kOciArchive };

struct ImageRef {
  ImageTransport transport = ImageTransport::kRegistry;
  // kRegistry: HOST[:PORT]/REPO[:TAG][@sha256:HEX], as registry::parse_reference reads it.
  std::string registry_ref;
  // kOciLayout (a directory) and kOciArchive (a tar of one): an absolute path.
  std::filesystem::path path;
  // Layouts: the org.opencontainers.image.ref.name to pick from index.json; empty when the
  // index holds exactly one image.
  std::string tag;

  // The form parse_image_ref reads back ("oci:/abs/path:tag", "127.0.0.1:5000/app:v1").
  std::string to_string() const;
  bool operator==(const ImageRef&) const = default;
};

// Parses `text`; a relative layout path resolves against base_dir. A layout path may not
// contain ':' (the first ':' after the transport starts the tag, as in skopeo).
Result<ImageRef> parse_image_ref(std::string_view text, const std::filesystem::path& base_dir);

}  // namespace prewarm::spec
