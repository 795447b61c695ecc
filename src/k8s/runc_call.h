// runc's command line as a shim (containerd's runc shim, CRI-O) gives it to a runtime: no
// dependencies, so that prewarm-runtime's launcher (cmd/prewarm-runtime) stays small.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace prewarm::k8s {

// runc's command line as a shim gives it.
struct RuncCall {
  std::vector<std::string> globals;  // the options before the command, verbatim
  std::string command;               // "create", "start", "delete", ...
  std::vector<std::string> args;     // everything after the command, verbatim
  std::string id;                    // the container id (the last argument), when there is one
  // create's options
  std::string bundle, pid_file, console_socket;
};

// Splits runc's command line (without argv[0]); nullopt when there is no command.
std::optional<RuncCall> parse_runc_call(const std::vector<std::string>& argv);

}  // namespace prewarm::k8s
