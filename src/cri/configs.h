// The pod and container configs the kubelet sends through the CRI, for the parts prewarm's
// tests and benchmarks vary; the rest is filled in as the kubelet would (pod namespaces: network
// and IPC shared by the pod, PID per container; the kubelet's labels and log paths).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "cri/runtime_v1.pb.h"

namespace prewarm::cri {

struct PodOptions {
  std::string name;                      // metadata.name
  std::string uid;                       // metadata.uid (the kubelet's pod UID)
  std::string k8s_namespace = "default";  // metadata.namespace
  std::string hostname;                  // "" = name
  // Where the runtime writes container logs; the kubelet's is /var/log/pods/<ns>_<name>_<uid>.
  std::string log_directory;
  // The pod's cgroup (cgroupfs driver: a path like "/kubepods/besteffort/pod<uid>").
  std::string cgroup_parent;
  // shareProcessNamespace: the pod's containers share the pause process's PID namespace.
  bool share_process_namespace = false;
  std::map<std::string, std::string> labels;       // added to the kubelet's own
  std::map<std::string, std::string> annotations;
  std::vector<std::string> dns_servers;            // none: the runtime copies the host's
};

::runtime::v1::PodSandboxConfig kubelet_pod_config(const PodOptions& pod);

struct ContainerOptions {
  std::string name;
  std::string image;
  std::vector<std::string> command;  // replaces the image's entrypoint when set
  std::vector<std::string> args;     // replaces the image's cmd when set
  std::string working_dir;
  std::vector<std::pair<std::string, std::string>> env;
  unsigned attempt = 0;              // the restart count
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;
};

// log_path is "<name>/<attempt>.log" under the pod's log_directory, as the kubelet sets it.
::runtime::v1::ContainerConfig kubelet_container_config(const PodOptions& pod,
                                                        const ContainerOptions& container);

}  // namespace prewarm::cri
