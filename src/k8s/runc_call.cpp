// runc's command line, split: shared by prewarm-runtime's small launcher and prewarm itself.
#include "k8s/runc_call.h"

namespace prewarm::k8s {
namespace {

// runc's global options that take a value (the rest are flags).
bool global_takes_value(std::string_view opt) {
  return opt == "--root" || opt == "--log" || opt == "--log-format" || opt == "--criu" ||
         opt == "--rootless";
}

// create's (and run's, restore's) options that take a value.
bool create_takes_value(std::string_view opt) {
  return opt == "--bundle" || opt == "-b" || opt == "--pid-file" || opt == "--console-socket" ||
         opt == "--preserve-fds" || opt == "--pidfd-socket";
}

}  // namespace

std::optional<RuncCall> parse_runc_call(const std::vector<std::string>& argv) {
  RuncCall c;
  size_t i = 0;
  for (; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a.empty() || a[0] != '-') break;
    c.globals.push_back(a);
    if (a.find('=') == std::string::npos && global_takes_value(a) && i + 1 < argv.size())
      c.globals.push_back(argv[++i]);
  }
  if (i == argv.size())
    return std::nullopt;
  c.command = argv[i++];
  c.args.assign(argv.begin() + static_cast<long>(i), argv.end());
  for (size_t k = 0; k < c.args.size(); ++k) {
    std::string opt = c.args[k], value;
    if (opt.empty() || opt[0] != '-') {
      c.id = opt;  // the last positional argument is the container id
      continue;
    }
    if (auto eq = opt.find('='); eq != std::string::npos) {
      value = opt.substr(eq + 1);
      opt = opt.substr(0, eq);
    } else if (create_takes_value(opt) && k + 1 < c.args.size()) {
      value = c.args[++k];
    }
    if (opt == "--bundle" || opt == "-b") c.bundle = value;
    else if (opt == "--pid-file") c.pid_file = value;
    else if (opt == "--console-socket") c.console_socket = value;
  }
  // Commands whose arguments follow the id (exec, kill): the id is the first positional one.
  if (c.command == "exec" || c.command == "kill" || c.command == "update" ||
      c.command == "ps" || c.command == "events") {
    c.id.clear();
    for (size_t k = 0; k < c.args.size(); ++k) {
      const std::string& a = c.args[k];
      if (!a.empty() && a[0] != '-') {
        c.id = a;
        break;
      }
      if (a.find('=') == std::string::npos && (a == "--process" || a == "-p" ||
                                               a == "--pid-file" || a == "--console-socket" ||
                                               a == "--cwd" || a == "--env" || a == "-e" ||
                                               a == "--user" || a == "-u" || a == "--format" ||
                                               a == "-f" || a == "--interval" || a == "-r" ||
                                               a == "--resources" || a == "--preserve-fds"))
        ++k;
    }
  }
  return c;
}

}  // namespace prewarm::k8s
