// The prewarm container image: this prewarm with runc, CRIU and busybox, for runtime in
// runtime (`prewarm run --foreground` as a privileged pod container's entrypoint), bakes as
// Kubernetes Jobs, and the node DaemonSet.
#pragma once

#include <filesystem>
#include <string>

#include "base/result.h"
#include "ociimage/layout.h"

namespace prewarm::k8s {

struct SelfImageOptions {
  std::string name = "prewarm/prewarm:0.1.0";
  std::filesystem::path prewarm = "/proc/self/exe";
  std::filesystem::path runc;     // "" : the one prewarm uses
  std::filesystem::path criu;     // "" : the one prewarm uses
  std::filesystem::path busybox = "/bin/busybox";
};

// Writes the image as an OCI archive (`ctr images import`, `skopeo copy oci-archive:...`).
// Binaries keep their paths (/usr/local/bin/prewarm and its runtime launcher prewarm-runtime, /usr/sbin/runc,
// /usr/local/sbin/criu), with the shared libraries they load (ldd) and the dynamic loader;
// prewarm is copied without its debug sections.
Result<ociimage::WrittenImage> write_self_image(const SelfImageOptions& options,
                                                const std::filesystem::path& out_tar);

}  // namespace prewarm::k8s
