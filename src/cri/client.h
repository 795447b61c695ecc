// A client for a CRI runtime (containerd, CRI-O) on its Unix socket: the calls the kubelet
// makes to run pods, as Results. Every call has a deadline; a failed call's error names the
// call, the socket, the gRPC status code and the runtime's message.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "cri/runtime_v1.pb.h"

namespace prewarm::cri {

namespace v1 = ::runtime::v1;

struct ClientOptions {
  // How long connect() waits for the socket to accept a connection.
  std::chrono::milliseconds connect_timeout{10'000};
  // The deadline of a call that has no timeout of its own (RunPodSandbox pulls nothing but
  // may run CNI plugins, so this is generous).
  std::chrono::milliseconds call_timeout{60'000};
  // Added to StopContainer's and ExecSync's own timeouts for the call's deadline.
  std::chrono::milliseconds grace{30'000};
  // PullImage may download a large image.
  std::chrono::milliseconds pull_timeout{600'000};
};

struct ExecResult {
  std::string stdout_data;
  std::string stderr_data;
  int exit_code = 0;
};

class Client {
 public:
  // socket_path: a filesystem path ("/run/containerd/containerd.sock") or a "unix://" URI.
  // Fails (kUnavailable) when nothing accepts a connection there within connect_timeout.
  static Result<Client> connect(const std::string& socket_path, ClientOptions options = {});

  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  ~Client();

  const std::string& target() const;

  // --- runtime ---
  Result<v1::VersionResponse> version();
  Result<v1::StatusResponse> status();
  // Polls Status until the runtime reports RuntimeReady and NetworkReady (CNI config loaded),
  // or fails with the conditions that were not met after `timeout`.
  Status wait_ready(std::chrono::milliseconds timeout);

  // --- pod sandboxes ---
  // Returns the sandbox id. runtime_handler "" is the runtime's default handler.
  Result<std::string> run_pod_sandbox(const v1::PodSandboxConfig& config,
                                      const std::string& runtime_handler = "");
  Status stop_pod_sandbox(const std::string& pod_id);
  Status remove_pod_sandbox(const std::string& pod_id);
  Result<v1::PodSandboxStatus> pod_sandbox_status(const std::string& pod_id);
  // With the runtime's verbose info: containerd puts a JSON document under "info" (the pause
  // process's pid, the sandbox's OCI spec with its netns path, ...).
  Result<v1::PodSandboxStatusResponse> pod_sandbox_status_verbose(const std::string& pod_id);
  Result<std::vector<v1::PodSandbox>> list_pod_sandboxes(const v1::PodSandboxFilter& filter = {});

  // --- containers ---
  // Returns the container id. sandbox_config: the pod's config, as the kubelet passes it again.
  Result<std::string> create_container(const std::string& pod_id,
                                       const v1::ContainerConfig& config,
                                       const v1::PodSandboxConfig& sandbox_config);
  Status start_container(const std::string& container_id);
  // Sends the stop signal, then SIGKILL after `timeout`.
  Status stop_container(const std::string& container_id, std::chrono::seconds timeout);
  Status remove_container(const std::string& container_id);
  Result<v1::ContainerStatus> container_status(const std::string& container_id);
  // With the runtime's verbose info (containerd: the container's OCI spec, its pid, ...).
  Result<v1::ContainerStatusResponse> container_status_verbose(const std::string& container_id);
  Result<std::vector<v1::Container>> list_containers(const v1::ContainerFilter& filter = {});
  // Runs cmd in the container; a non-zero exit is a result, not an error. timeout 0: none
  // (the call's deadline is then call_timeout).
  Result<ExecResult> exec_sync(const std::string& container_id,
                               const std::vector<std::string>& cmd,
                               std::chrono::seconds timeout = std::chrono::seconds(30));

  // --- images ---
  Result<std::vector<v1::Image>> list_images();
  // nullopt when the runtime does not have the image.
  Result<std::optional<v1::Image>> image_status(const std::string& image);
  // Returns the image reference (its id) the runtime resolved.
  Result<std::string> pull_image(const std::string& image);
  Status remove_image(const std::string& image);

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace prewarm::cri
