// The CRI client: one gRPC channel to the runtime's socket, a deadline on every call, and gRPC
// failures turned into Errors that say which call failed on which socket and why.
#include "cri/client.h"

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <cerrno>
#include <thread>
#include <utility>

#include "cri/runtime_v1.grpc.pb.h"

namespace prewarm::cri {
namespace {

using std::chrono::milliseconds;

// ExecSync's output and ListContainers' answers may be large; gRPC's default cap is 4 MiB.
constexpr int kMaxAnswerBytes = 16 << 20;

const char* code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK: return "OK";
    case grpc::CANCELLED: return "CANCELLED";
    case grpc::UNKNOWN: return "UNKNOWN";
    case grpc::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND: return "NOT_FOUND";
    case grpc::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::ABORTED: return "ABORTED";
    case grpc::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::INTERNAL: return "INTERNAL";
    case grpc::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::DATA_LOSS: return "DATA_LOSS";
    case grpc::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN_CODE";
  }
}

ErrorKind kind_of(grpc::StatusCode code) {
  switch (code) {
    case grpc::NOT_FOUND: return ErrorKind::kNotFound;
    case grpc::INVALID_ARGUMENT:
    case grpc::OUT_OF_RANGE: return ErrorKind::kInvalidInput;
    case grpc::ALREADY_EXISTS: return ErrorKind::kConflict;
    case grpc::PERMISSION_DENIED:
    case grpc::UNAUTHENTICATED: return ErrorKind::kPermissionDenied;
    case grpc::DEADLINE_EXCEEDED:
    case grpc::UNAVAILABLE:
    case grpc::RESOURCE_EXHAUSTED:
    case grpc::ABORTED: return ErrorKind::kUnavailable;
    case grpc::UNIMPLEMENTED: return ErrorKind::kIncompatibleHost;
    default: return ErrorKind::kRuntime;
  }
}

std::string target_of(const std::string& socket_path) {
  if (socket_path.rfind("unix:", 0) == 0) return socket_path;
  return "unix://" + socket_path;
}

}  // namespace

struct Client::Impl {
  std::string target;
  ClientOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::RuntimeService::Stub> runtime;
  std::unique_ptr<v1::ImageService::Stub> images;

  // One unary call with a deadline; the error reads
  // "CRI RunPodSandbox on unix:///x.sock: UNKNOWN (gRPC code 2): <the runtime's message>".
  template <class Stub, class Req, class Resp>
  Result<Resp> call(const char* name, Stub& stub,
                    grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                    const Req& req, milliseconds timeout) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    Resp resp;
    grpc::Status st = (stub.*method)(&ctx, req, &resp);
    if (st.ok()) return resp;
    std::string msg = std::string("CRI ") + name + " on " + target + ": " +
                      code_name(st.error_code()) + " (gRPC code " +
                      std::to_string(static_cast<int>(st.error_code())) + ")";
    if (st.error_code() == grpc::DEADLINE_EXCEEDED)
      msg += " after " + std::to_string(timeout.count()) + " ms";
    if (!st.error_message().empty()) msg += ": " + st.error_message();
    if (st.error_code() == grpc::UNAVAILABLE)
      msg += " (is the runtime still running and listening on that socket?)";
    return Error(kind_of(st.error_code()), std::move(msg));
  }

  template <class Req, class Resp>
  Result<Resp> rt(const char* name,
                  grpc::Status (v1::RuntimeService::Stub::*method)(grpc::ClientContext*,
                                                                     const Req&, Resp*),
                  const Req& req, milliseconds timeout) {
    return call(name, *runtime, method, req, timeout);
  }
  template <class Req, class Resp>
  Result<Resp> rt(const char* name,
                  grpc::Status (v1::RuntimeService::Stub::*method)(grpc::ClientContext*,
                                                                     const Req&, Resp*),
                  const Req& req) {
    return call(name, *runtime, method, req, options.call_timeout);
  }
  template <class Req, class Resp>
  Result<Resp> img(const char* name,
                   grpc::Status (v1::ImageService::Stub::*method)(grpc::ClientContext*,
                                                                   const Req&, Resp*),
                   const Req& req, milliseconds timeout) {
    return call(name, *images, method, req, timeout);
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

const std::string& Client::target() const { return impl_->target; }

Result<Client> Client::connect(const std::string& socket_path, ClientOptions options) {
  std::string path = socket_path.rfind("unix://", 0) == 0 ? socket_path.substr(7) : socket_path;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return Error::sys("CRI socket", errno, path)
        .with_context("cannot connect to the CRI runtime (is containerd running with this "
                      "grpc address?)");
  if (!S_ISSOCK(st.st_mode))
    return Error(ErrorKind::kInvalidInput, "CRI socket " + path + " is not a Unix socket");

  auto impl = std::make_unique<Impl>();
  impl->target = target_of(socket_path);
  impl->options = options;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxAnswerBytes);
  impl->channel =
      grpc::CreateCustomChannel(impl->target, grpc::InsecureChannelCredentials(), args);
  if (!impl->channel->WaitForConnected(std::chrono::system_clock::now() +
                                       options.connect_timeout))
    return Error(ErrorKind::kUnavailable,
                 "cannot connect to the CRI runtime at " + impl->target + " within " +
                     std::to_string(options.connect_timeout.count()) +
                     " ms (is it running and listening there?)");
  impl->runtime = v1::RuntimeService::NewStub(impl->channel);
  impl->images = v1::ImageService::NewStub(impl->channel);
  return Client(std::move(impl));
}

Result<v1::VersionResponse> Client::version() {
  v1::VersionRequest req;
  req.set_version("v1");
  return impl_->rt("Version", &v1::RuntimeService::Stub::Version, req);
}

Result<v1::StatusResponse> Client::status() {
  return impl_->rt("Status", &v1::RuntimeService::Stub::Status, v1::StatusRequest{});
}

Status Client::wait_ready(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string missing = "no answer";
  for (;;) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline -
                                                         std::chrono::steady_clock::now());
    auto st = impl_->rt("Status", &v1::RuntimeService::Stub::Status, v1::StatusRequest{},
                        std::max(milliseconds(100), std::min(left, milliseconds(5000))));
    if (st.ok()) {
      missing.clear();
      for (const char* want : {"RuntimeReady", "NetworkReady"}) {
        bool ready = false;
        for (const auto& c : st->status().conditions()) {
          if (c.type() != want) continue;
          ready = c.status();
          if (!ready) {
            if (!missing.empty()) missing += "; ";
            missing += std::string(want) + " is false: " + c.reason() + " " + c.message();
          }
        }
        if (!ready && missing.find(want) == std::string::npos) {
          if (!missing.empty()) missing += "; ";
          missing += std::string(want) + " not reported";
        }
      }
      if (missing.empty()) return ok_status();
    } else {
      missing = st.error().message();
    }
    if (std::chrono::steady_clock::now() >= deadline)
      return Error(ErrorKind::kUnavailable, "CRI runtime at " + impl_->target +
                                                " not ready after " +
                                                std::to_string(timeout.count()) + " ms: " + missing);
    std::this_thread::sleep_for(milliseconds(50));
  }
}

Result<std::string> Client::run_pod_sandbox(const v1::PodSandboxConfig& config,
                                            const std::string& runtime_handler) {
  v1::RunPodSandboxRequest req;
  *req.mutable_config() = config;
  req.set_runtime_handler(runtime_handler);
  PW_ASSIGN(auto resp, impl_->rt("RunPodSandbox", &v1::RuntimeService::Stub::RunPodSandbox, req));
  return resp.pod_sandbox_id();
}

Status Client::stop_pod_sandbox(const std::string& pod_id) {
  v1::StopPodSandboxRequest req;
  req.set_pod_sandbox_id(pod_id);
  PW_TRY(impl_->rt("StopPodSandbox", &v1::RuntimeService::Stub::StopPodSandbox, req));
  return ok_status();
}

Status Client::remove_pod_sandbox(const std::string& pod_id) {
  v1::RemovePodSandboxRequest req;
  req.set_pod_sandbox_id(pod_id);
  PW_TRY(impl_->rt("RemovePodSandbox", &v1::RuntimeService::Stub::RemovePodSandbox, req));
  return ok_status();
}

Result<v1::PodSandboxStatus> Client::pod_sandbox_status(const std::string& pod_id) {
  v1::PodSandboxStatusRequest req;
  req.set_pod_sandbox_id(pod_id);
  PW_ASSIGN(auto resp,
            impl_->rt("PodSandboxStatus", &v1::RuntimeService::Stub::PodSandboxStatus, req));
  return std::move(*resp.mutable_status());
}

Result<v1::PodSandboxStatusResponse> Client::pod_sandbox_status_verbose(const std::string& pod_id) {
  v1::PodSandboxStatusRequest req;
  req.set_pod_sandbox_id(pod_id);
  req.set_verbose(true);
  return impl_->rt("PodSandboxStatus", &v1::RuntimeService::Stub::PodSandboxStatus, req);
}

Result<std::vector<v1::PodSandbox>> Client::list_pod_sandboxes(const v1::PodSandboxFilter& filter) {
  v1::ListPodSandboxRequest req;
  *req.mutable_filter() = filter;
  PW_ASSIGN(auto resp, impl_->rt("ListPodSandbox", &v1::RuntimeService::Stub::ListPodSandbox, req));
  return std::vector<v1::PodSandbox>(resp.items().begin(), resp.items().end());
}

Result<std::string> Client::create_container(const std::string& pod_id,
                                             const v1::ContainerConfig& config,
                                             const v1::PodSandboxConfig& sandbox_config) {
  v1::CreateContainerRequest req;
  req.set_pod_sandbox_id(pod_id);
  *req.mutable_config() = config;
  *req.mutable_sandbox_config() = sandbox_config;
  PW_ASSIGN(auto resp,
            impl_->rt("CreateContainer", &v1::RuntimeService::Stub::CreateContainer, req));
  return resp.container_id();
}

Status Client::start_container(const std::string& container_id) {
  v1::StartContainerRequest req;
  req.set_container_id(container_id);
  PW_TRY(impl_->rt("StartContainer", &v1::RuntimeService::Stub::StartContainer, req));
  return ok_status();
}

Status Client::stop_container(const std::string& container_id, std::chrono::seconds timeout) {
  v1::StopContainerRequest req;
  req.set_container_id(container_id);
  req.set_timeout(timeout.count());
  PW_TRY(impl_->rt("StopContainer", &v1::RuntimeService::Stub::StopContainer, req,
                   std::chrono::duration_cast<milliseconds>(timeout) + impl_->options.grace));
  return ok_status();
}

Status Client::remove_container(const std::string& container_id) {
  v1::RemoveContainerRequest req;
  req.set_container_id(container_id);
  PW_TRY(impl_->rt("RemoveContainer", &v1::RuntimeService::Stub::RemoveContainer, req));
  return ok_status();
}

Result<v1::ContainerStatus> Client::container_status(const std::string& container_id) {
  v1::ContainerStatusRequest req;
  req.set_container_id(container_id);
  PW_ASSIGN(auto resp,
            impl_->rt("ContainerStatus", &v1::RuntimeService::Stub::ContainerStatus, req));
  return std::move(*resp.mutable_status());
}

Result<v1::ContainerStatusResponse> Client::container_status_verbose(
    const std::string& container_id) {
  v1::ContainerStatusRequest req;
  req.set_container_id(container_id);
  req.set_verbose(true);
  return impl_->rt("ContainerStatus", &v1::RuntimeService::Stub::ContainerStatus, req);
}

Result<std::vector<v1::Container>> Client::list_containers(const v1::ContainerFilter& filter) {
  v1::ListContainersRequest req;
  *req.mutable_filter() = filter;
  PW_ASSIGN(auto resp, impl_->rt("ListContainers", &v1::RuntimeService::Stub::ListContainers, req));
  return std::vector<v1::Container>(resp.containers().begin(), resp.containers().end());
}

Result<ExecResult> Client::exec_sync(const std::string& container_id,
                                     const std::vector<std::string>& cmd,
                                     std::chrono::seconds timeout) {
  v1::ExecSyncRequest req;
  req.set_container_id(container_id);
  for (const auto& a : cmd) req.add_cmd(a);
  req.set_timeout(timeout.count());
  milliseconds deadline = timeout.count() > 0
                              ? std::chrono::duration_cast<milliseconds>(timeout) +
                                    impl_->options.grace
                              : impl_->options.call_timeout;
  PW_ASSIGN(auto resp,
            impl_->rt("ExecSync", &v1::RuntimeService::Stub::ExecSync, req, deadline));
  return ExecResult{std::move(*resp.mutable_stdout()), std::move(*resp.mutable_stderr()),
                    resp.exit_code()};
}

Result<std::vector<v1::Image>> Client::list_images() {
  PW_ASSIGN(auto resp, impl_->img("ListImages", &v1::ImageService::Stub::ListImages,
                                  v1::ListImagesRequest{}, impl_->options.call_timeout));
  return std::vector<v1::Image>(resp.images().begin(), resp.images().end());
}

Result<std::optional<v1::Image>> Client::image_status(const std::string& image) {
  v1::ImageStatusRequest req;
  req.mutable_image()->set_image(image);
  PW_ASSIGN(auto resp, impl_->img("ImageStatus", &v1::ImageService::Stub::ImageStatus, req,
                                  impl_->options.call_timeout));
  if (!resp.has_image()) return std::optional<v1::Image>();
  return std::optional<v1::Image>(std::move(*resp.mutable_image()));
}

Result<std::string> Client::pull_image(const std::string& image) {
  v1::PullImageRequest req;
  req.mutable_image()->set_image(image);
  PW_ASSIGN(auto resp, impl_->img("PullImage", &v1::ImageService::Stub::PullImage, req,
                                  impl_->options.pull_timeout));
  return resp.image_ref();
}

Status Client::remove_image(const std::string& image) {
  v1::RemoveImageRequest req;
  req.mutable_image()->set_image(image);
  PW_TRY(impl_->img("RemoveImage", &v1::ImageService::Stub::RemoveImage, req,
                    impl_->options.call_timeout));
  return ok_status();
}

}  // namespace prewarm::cri
