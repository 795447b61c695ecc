// CriNode: a Kubernetes node without a kubelet, for tests that drive the CRI as the kubelet
// does. It runs its own containerd (own root, state, socket and log under one temp dir), with a
// CNI bridge and subnet of its own, a pause image it builds, and a "prewarm" runtime handler
// whose binary the caller picks; stop() (or the destructor) removes every pod, stops that
// containerd by its PID and clears what it left: shims, mounts, netns, bridge, CNI state and
// cgroups. Nothing here uses gtest: errors are Results, for any test framework or benchmark.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/subprocess.h"
#include "cri/client.h"
#include "cri/configs.h"
#include "ociimage/layout.h"

namespace prewarm::testing {

// Why CRI tests cannot run here ("" when they can): not root, or containerd, ctr, runc or the
// CNI bridge plugin missing.
std::string cri_skip_reason();

// Whether pid is a live process (not gone, not a zombie waiting for its reaper).
bool process_running(pid_t pid);

struct CriNodeOptions {
  // BinaryName of the "prewarm" runtime handler (a runc-compatible CLI); "" = runc itself.
  std::string prewarm_binary;
  // The static program that becomes the pause image (tests/cri/pause.c, built static).
  std::filesystem::path pause_binary;
  // Where the node's temp dir is made.
  std::filesystem::path parent_dir = "/var/tmp";
  // How long start() waits for the CRI to report RuntimeReady and NetworkReady.
  std::chrono::milliseconds ready_timeout{60'000};
  // TOML appended to the generated config.toml (more runtime handlers, say).
  std::string extra_config;
};

class CriNode {
 public:
  static constexpr const char* kPauseImage = "prewarm.test/pause:1";
  static constexpr const char* kPrewarmHandler = "prewarm";

  // Builds and imports the pause image, starts containerd and waits until its CRI is ready.
  static Result<std::unique_ptr<CriNode>> start(CriNodeOptions options);
  ~CriNode();
  CriNode(const CriNode&) = delete;
  CriNode& operator=(const CriNode&) = delete;

  // Removes every pod and container through the CRI, stops containerd, then kills, unmounts and
  // deletes whatever this node left. Every problem is in the returned error (one per line);
  // the cleanup goes on regardless. Idempotent; the destructor calls it.
  Status stop();

  cri::Client& cri() { return *client_; }
  const std::filesystem::path& dir() const { return dir_; }
  std::string socket() const { return (dir_ / "containerd.sock").string(); }
  std::filesystem::path log_path() const { return dir_ / "containerd.log"; }
  // The last `max_bytes` of containerd's log, for failure messages.
  std::string log_tail(size_t max_bytes = 16 << 10) const;
  const std::string& tag() const { return tag_; }
  // The top cgroup of this node's pods, under each hierarchy: "prewarm-cri-<tag>".
  const std::string& cgroup_root() const { return cgroup_root_; }
  const std::string& bridge() const { return bridge_; }
  const std::string& network_name() const { return network_; }
  const std::string& subnet() const { return subnet_; }
  const std::string& runc_path() const { return runc_; }
  pid_t containerd_pid() const { return containerd_.pid(); }

  // `ctr images import` of an OCI (or Docker) archive into the CRI's namespace, then waits
  // until the CRI lists `name`.
  Status import_archive(const std::filesystem::path& archive, const std::string& name);
  // write_archive(rootfs) into the node's dir, then import_archive.
  Result<ociimage::WrittenImage> import_rootfs(const std::filesystem::path& rootfs,
                                               const ociimage::ImageConfig& config,
                                               const std::string& name);

  // A kubelet-like pod for this node: a fresh UID, its log directory (made) under the node's
  // dir, and its cgroup under cgroup_root().
  cri::PodOptions pod_options(const std::string& name);
  // RunPodSandbox, remembering the pod's netns so that leftovers() can check it is gone.
  Result<std::string> run_pod(const runtime::v1::PodSandboxConfig& config,
                              const std::string& runtime_handler = "");

  // What this node has left behind, one line each ("" if nothing): CRI pods and containers,
  // shims of this containerd, processes in its cgroups, mounts under its dir, netns it made,
  // container cgroups under cgroup_root(). Pod-level cgroups (the kubelet's to remove) are
  // not counted. Shims get `shim_grace` to exit (they go a moment after their last task).
  std::string leftovers(std::chrono::milliseconds shim_grace = std::chrono::seconds(3));
  // Processes (pids) of containerd shims started by this node's containerd.
  std::vector<pid_t> shim_pids() const;

 private:
  CriNode() = default;
  Status write_config(const CriNodeOptions& options);
  Status build_pause_image(const std::filesystem::path& pause_binary);
  std::vector<std::filesystem::path> cgroup_dirs() const;
  std::vector<pid_t> cgroup_pids() const;

  std::filesystem::path dir_;
  std::string tag_, cgroup_root_, bridge_, network_, subnet_, runc_;
  Child containerd_;
  std::unique_ptr<cri::Client> client_;
  std::vector<std::string> netns_paths_;
  bool stopped_ = true;
};

}  // namespace prewarm::testing
