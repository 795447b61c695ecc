// The activation benchmark (`prewarm serve`): the first request to a service scaled to zero
// (it waits for one restore), the first request with a warm pool of one parked instance (a
// claim), restore → ready and cold start → ready of the same image: all in one run, in turns.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "bake/bake.h"
#include "base/clock.h"
#include "bench/bench.h"
#include "bench/util.h"
#include "daemon/activation.h"
#include "images/load.h"
#include "lifecycle/instance.h"

namespace prewarm::bench {
namespace {

using nlohmann::json;

// One HTTP/1.0 GET through the activator; the milliseconds until the answer was complete.
Result<double> first_request(int port, const std::string& path) {
  Stopwatch sw;
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return Error::sys("connect", errno, "the activator");
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: bench\r\n\r\n";
  if (::write(fd.get(), req.data(), req.size()) != static_cast<ssize_t>(req.size()))
    return Error::sys("write", errno);
  std::string answer;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) > 0;) answer.append(buf, static_cast<size_t>(n));
  const double ms = sw.millis();
  if (answer.rfind("HTTP/1.", 0) != 0 || answer.find(" 200 ") == std::string::npos)
    return Error(ErrorKind::kRuntime, "first request through serve: no 200 answer: " + answer.substr(0, 200));
  return ms;
}

json summary(const std::vector<double>& v) { return {{"median_ms", median(v)}, {"samples_ms", v}}; }

}  // namespace

Result<std::string> bench_serve(const Context& ctx, const ServeBenchOptions& opts) {
  if (opts.runs < 1) return Error(ErrorKind::kInvalidInput, "--runs must be at least 1");
  PW_ASSIGN(spec::AppSpec spec, spec::load_spec(opts.spec_file));
  if (!spec.readiness_probe || !spec.readiness_probe->http_get)
    return Error(ErrorKind::kInvalidInput, "bench serve needs an app with an httpGet readiness probe");
  const std::string path = spec.readiness_probe->http_get->path;
  bake::BakeOptions bo;
  bo.name = spec.name + "-servebench";
  ctx.say("[bench serve] baking " + bo.name);
  PW_ASSIGN(bake::BakeResult baked, bake::bake(ctx, opts.spec_file, bo));
  PW_ASSIGN(images::LoadedImage img, images::load_image(ctx, baked.name));
  std::vector<double> from_zero, warm, restore, cold;
  constexpr int kKinds = 4;
  for (int i = 0; i < opts.runs; ++i) {
    ctx.say("[bench serve] round " + std::to_string(i + 1) + "/" + std::to_string(opts.runs));
    for (int j = 0; j < kKinds; ++j) {
      switch ((i + j) % kKinds) {
        case 0: {
          daemon::ActivationOptions o;
          o.max = 1;
          daemon::Activator act(ctx, img, o);
          PW_TRY(act.start());
          auto ms = first_request(act.port(), path);
          act.stop();
          if (!ms.ok()) return std::move(ms).error();
          from_zero.push_back(*ms);
          break;
        }
        case 1: {
          daemon::ActivationOptions o;
          o.min = 1;
          o.max = 1;
          daemon::Activator act(ctx, img, o);
          PW_TRY(act.start());
          // Parked and settled before the request, as a pool is between bursts.
          for (int k = 0; k < 600; ++k) {
            auto parked = lifecycle::Instances(ctx).parked(img);
            if (parked.ok() && !parked->empty()) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          auto ms = first_request(act.port(), path);
          const bool claimed = act.stats().claimed == 1;
          act.stop();
          if (!ms.ok()) return std::move(ms).error();
          if (!claimed) return Error(ErrorKind::kRuntime, "the warm pool's first request was not a claim");
          warm.push_back(*ms);
          break;
        }
        case 2: {
          PW_ASSIGN(lifecycle::Started s, timed_start(ctx, baked.name, lifecycle::StartMode::kRestore));
          restore.push_back(s.timings.total_ms);
          break;
        }
        default: {
          if (opts.skip_cold) break;
          PW_ASSIGN(lifecycle::Started s, timed_start(ctx, baked.name, lifecycle::StartMode::kCold));
          cold.push_back(s.timings.total_ms);
          break;
        }
      }
    }
  }
  json out = {{"benchmark", "serve"},
              {"image", baked.name},
              {"spec", opts.spec_file.string()},
              {"request_path", path},
              {"first_request_from_zero", summary(from_zero)},
              {"first_request_with_warm_pool", summary(warm)},
              {"restore_to_ready", summary(restore)},
              {"cold_start_to_ready", summary(cold)},
              {"ratios",
               {{"from_zero_vs_restore_to_ready", median(from_zero) / median(restore)},
                {"cold_vs_from_zero", cold.empty() ? 0 : median(cold) / median(from_zero)}}}};
  return out.dump(1);
}

}  // namespace prewarm::bench
