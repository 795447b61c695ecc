// What the kubelet (1.30-ish, cgroupfs driver, a BestEffort pod) puts in RunPodSandbox and
// CreateContainer requests.
#include "cri/configs.h"

namespace prewarm::cri {

namespace v1 = ::runtime::v1;

v1::PodSandboxConfig kubelet_pod_config(const PodOptions& pod) {
  v1::PodSandboxConfig c;
  auto* md = c.mutable_metadata();
  md->set_name(pod.name);
  md->set_uid(pod.uid);
  md->set_namespace_(pod.k8s_namespace);
  md->set_attempt(0);
  c.set_hostname(pod.hostname.empty() ? pod.name : pod.hostname);
  c.set_log_directory(pod.log_directory);
  if (!pod.dns_servers.empty()) {
    for (const auto& s : pod.dns_servers) c.mutable_dns_config()->add_servers(s);
  }
  auto& labels = *c.mutable_labels();
  labels["io.kubernetes.pod.name"] = pod.name;
  labels["io.kubernetes.pod.namespace"] = pod.k8s_namespace;
  labels["io.kubernetes.pod.uid"] = pod.uid;
  for (const auto& [k, v] : pod.labels) labels[k] = v;
  auto& annotations = *c.mutable_annotations();
  annotations["kubernetes.io/config.source"] = "api";
  for (const auto& [k, v] : pod.annotations) annotations[k] = v;
  auto* linux = c.mutable_linux();
  linux->set_cgroup_parent(pod.cgroup_parent);
  auto* ns = linux->mutable_security_context()->mutable_namespace_options();
  ns->set_network(v1::POD);
  ns->set_pid(pod.share_process_namespace ? v1::POD : v1::CONTAINER);
  ns->set_ipc(v1::POD);
  return c;
}

v1::ContainerConfig kubelet_container_config(const PodOptions& pod,
                                             const ContainerOptions& container) {
  v1::ContainerConfig c;
  c.mutable_metadata()->set_name(container.name);
  c.mutable_metadata()->set_attempt(container.attempt);
  c.mutable_image()->set_image(container.image);
  for (const auto& a : container.command) c.add_command(a);
  for (const auto& a : container.args) c.add_args(a);
  c.set_working_dir(container.working_dir);
  for (const auto& [k, v] : container.env) {
    auto* kv = c.add_envs();
    kv->set_key(k);
    kv->set_value(v);
  }
  auto& labels = *c.mutable_labels();
  labels["io.kubernetes.container.name"] = container.name;
  labels["io.kubernetes.pod.name"] = pod.name;
  labels["io.kubernetes.pod.namespace"] = pod.k8s_namespace;
  labels["io.kubernetes.pod.uid"] = pod.uid;
  for (const auto& [k, v] : container.labels) labels[k] = v;
  auto& annotations = *c.mutable_annotations();
  annotations["io.kubernetes.container.restartCount"] = std::to_string(container.attempt);
  annotations["io.kubernetes.container.terminationMessagePath"] = "/dev/termination-log";
  annotations["io.kubernetes.container.terminationMessagePolicy"] = "File";
  for (const auto& [k, v] : container.annotations) annotations[k] = v;
  c.set_log_path(container.name + "/" + std::to_string(container.attempt) + ".log");
  auto* linux = c.mutable_linux();
  // BestEffort: the minimum CPU shares, the highest OOM score.
  auto* res = linux->mutable_resources();
  res->set_cpu_period(100000);
  res->set_cpu_shares(2);
  res->set_oom_score_adj(1000);
  auto* ns = linux->mutable_security_context()->mutable_namespace_options();
  ns->set_network(v1::POD);
  ns->set_pid(pod.share_process_namespace ? v1::POD : v1::CONTAINER);
  ns->set_ipc(v1::POD);
  return c;
}

}  // namespace prewarm::cri
