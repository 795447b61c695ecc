// The CRI client against an in-process gRPC server speaking the same runtime.v1 services:
// answers come through, and failures (runtime errors, missing objects, deadlines, no socket,
// a runtime not ready) become errors of the right kind that name the call, socket and code.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "cri/client.h"
#include "cri/configs.h"
#include "cri/runtime_v1.grpc.pb.h"
#include "support/files.h"

namespace prewarm::testing {
namespace {

namespace v1 = ::runtime::v1;
using namespace std::chrono_literals;

class FakeRuntime final : public v1::RuntimeService::Service {
 public:
  grpc::Status Version(grpc::ServerContext*, const v1::VersionRequest* req,
                       v1::VersionResponse* resp) override {
    resp->set_version(req->version());
    resp->set_runtime_name("fake");
    resp->set_runtime_api_version("v1");
    return grpc::Status::OK;
  }
  grpc::Status RunPodSandbox(grpc::ServerContext*, const v1::RunPodSandboxRequest* req,
                             v1::RunPodSandboxResponse*) override {
    last_run = *req;
    return grpc::Status(grpc::StatusCode::UNKNOWN, "failed to setup network for sandbox");
  }
  grpc::Status ContainerStatus(grpc::ServerContext*, const v1::ContainerStatusRequest* req,
                               v1::ContainerStatusResponse*) override {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "an error occurred when try to find container \"" + req->container_id() +
                            "\": not found");
  }
  grpc::Status ExecSync(grpc::ServerContext* ctx, const v1::ExecSyncRequest* req,
                        v1::ExecSyncResponse* resp) override {
    if (req->cmd_size() > 0 && req->cmd(0) == "hang") {
      while (!ctx->IsCancelled()) std::this_thread::sleep_for(10ms);
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    resp->set_stdout("out");
    resp->set_stderr("err");
    resp->set_exit_code(3);
    return grpc::Status::OK;
  }
  grpc::Status Status(grpc::ServerContext*, const v1::StatusRequest*,
                      v1::StatusResponse* resp) override {
    auto* c = resp->mutable_status()->add_conditions();
    c->set_type("RuntimeReady");
    c->set_status(true);
    c = resp->mutable_status()->add_conditions();
    c->set_type("NetworkReady");
    c->set_status(false);
    c->set_reason("NetworkPluginNotReady");
    c->set_message("cni plugin not initialized");
    return grpc::Status::OK;
  }

  v1::RunPodSandboxRequest last_run;
};

class CriClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    socket_ = (tmp_.path() / "cri.sock").string();
    grpc::ServerBuilder b;
    b.AddListeningPort("unix:" + socket_, grpc::InsecureServerCredentials());
    b.RegisterService(&fake_);
    server_ = b.BuildAndStart();
    ASSERT_TRUE(server_);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + 1s);
  }

  TempDir tmp_{"prewarm-cri-client"};
  std::string socket_;
  FakeRuntime fake_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(CriClientTest, AnswersAndErrorsCarryCallSocketAndCode) {
  auto client = cri::Client::connect(socket_);
  ASSERT_TRUE(client.ok()) << client.error().to_string();
  EXPECT_EQ(client->target(), "unix://" + socket_);

  auto v = client->version();
  ASSERT_TRUE(v.ok()) << v.error().to_string();
  EXPECT_EQ(v->runtime_name(), "fake");
  EXPECT_EQ(v->version(), "v1");

  // What was sent arrives as sent (the kubelet's namespace choices and handler included).
  cri::PodOptions pod;
  pod.name = "p";
  pod.uid = "u";
  auto run = client->run_pod_sandbox(cri::kubelet_pod_config(pod), "prewarm");
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.error().kind(), ErrorKind::kRuntime);
  EXPECT_EQ(run.error().message(), "CRI RunPodSandbox on unix://" + socket_ +
                                       ": UNKNOWN (gRPC code 2): failed to setup network for "
                                       "sandbox");
  EXPECT_EQ(fake_.last_run.runtime_handler(), "prewarm");
  const auto& ns = fake_.last_run.config().linux().security_context().namespace_options();
  EXPECT_EQ(ns.network(), v1::POD);
  EXPECT_EQ(ns.pid(), v1::CONTAINER);
  EXPECT_EQ(ns.ipc(), v1::POD);
  EXPECT_EQ(fake_.last_run.config().metadata().namespace_(), "default");

  auto st = client->container_status("abc");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().kind(), ErrorKind::kNotFound);
  EXPECT_NE(st.error().message().find("NOT_FOUND (gRPC code 5)"), std::string::npos)
      << st.error().message();

  auto ex = client->exec_sync("abc", {"true"}, 5s);
  ASSERT_TRUE(ex.ok()) << ex.error().to_string();
  EXPECT_EQ(ex->stdout_data, "out");
  EXPECT_EQ(ex->stderr_data, "err");
  EXPECT_EQ(ex->exit_code, 3);

  // Not implemented by the fake: the gRPC code says so.
  auto images = client->list_images();
  ASSERT_FALSE(images.ok());
  EXPECT_EQ(images.error().kind(), ErrorKind::kIncompatibleHost);
  EXPECT_NE(images.error().message().find("CRI ListImages"), std::string::npos);
}

TEST_F(CriClientTest, EveryCallHasADeadline) {
  cri::ClientOptions options;
  options.call_timeout = 200ms;
  auto client = cri::Client::connect(socket_, options);
  ASSERT_TRUE(client.ok()) << client.error().to_string();
  auto t0 = std::chrono::steady_clock::now();
  auto ex = client->exec_sync("abc", {"hang"}, 0s);
  ASSERT_FALSE(ex.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(ex.error().kind(), ErrorKind::kUnavailable);
  EXPECT_NE(ex.error().message().find("DEADLINE_EXCEEDED (gRPC code 4) after 200 ms"),
            std::string::npos)
      << ex.error().message();
}

TEST_F(CriClientTest, WaitReadySaysWhatIsNotReady) {
  auto client = cri::Client::connect(socket_);
  ASSERT_TRUE(client.ok()) << client.error().to_string();
  Status ready = client->wait_ready(300ms);
  ASSERT_FALSE(ready.ok());
  EXPECT_EQ(ready.error().kind(), ErrorKind::kUnavailable);
  EXPECT_NE(ready.error().message().find(
                "NetworkReady is false: NetworkPluginNotReady cni plugin not initialized"),
            std::string::npos)
      << ready.error().message();
}

TEST(CriClientConnectTest, NoSocketIsAClearError) {
  TempDir tmp("prewarm-cri-client");
  auto missing = cri::Client::connect((tmp.path() / "none.sock").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind(), ErrorKind::kNotFound);
  EXPECT_NE(missing.error().message().find("none.sock"), std::string::npos);
  spit(tmp.path() / "file", "x");
  auto not_socket = cri::Client::connect((tmp.path() / "file").string());
  ASSERT_FALSE(not_socket.ok());
  EXPECT_EQ(not_socket.error().kind(), ErrorKind::kInvalidInput);
}

}  // namespace
}  // namespace prewarm::testing
