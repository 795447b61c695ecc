// prewarm serve NAME --listen HOST:PORT [--min N] [--max N] [--concurrency C]
//                    [--idle-timeout SECONDS] [--target-port P]
#include <signal.h>

#include <cstdio>

#include "cli.h"
#include "daemon/activation.h"
#include "images/load.h"

namespace prewarm::cli {

void add_serve(CLI::App& app, Globals& g) {
  struct Args {
    std::string image, listen = "127.0.0.1:8080";
    int min = 0, max = 4, concurrency = 4, target_port = 0;
    double idle_timeout_s = 60;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand(
      "serve", "accept connections for an image and start its instances on demand (scale from "
               "zero): each connection is forwarded to a ready instance, one is claimed or "
               "restored when none has room, idle ones are removed");
  c->add_option("name", a->image, "image name")->required();
  c->add_option("--listen", a->listen, "HOST:PORT to accept connections on")->capture_default_str();
  c->add_option("--min", a->min, "instances kept parked (restored, frozen) for the next burst")
      ->capture_default_str();
  c->add_option("--max", a->max, "instances at most")->capture_default_str();
  c->add_option("--concurrency", a->concurrency,
                "connections one instance takes before another is started")->capture_default_str();
  c->add_option("--idle-timeout", a->idle_timeout_s, "seconds without a connection before an "
                                                      "instance is removed")->capture_default_str();
  c->add_option("--target-port", a->target_port,
                "the app's port (default: the spec's first port, else its readiness probe's)");
  c->callback([&g, a] {
    auto ctx = open_context(g, false, Recover::kYes);
    if (!ctx.ok()) return void(g.rc = fail(ctx.error()));
    auto img = images::load_image(*ctx, a->image, images::LoadOptions{});
    if (!img.ok()) return void(g.rc = fail(img.error()));
    daemon::ActivationOptions o;
    const size_t colon = a->listen.rfind(':');
    if (colon == std::string::npos)
      return void(g.rc = fail(Error(ErrorKind::kInvalidInput, "--listen: expected HOST:PORT")));
    o.listen_host = a->listen.substr(0, colon);
    o.listen_port = std::atoi(a->listen.c_str() + colon + 1);
    o.min = a->min;
    o.max = a->max;
    o.concurrency = a->concurrency;
    o.target_port = a->target_port;
    o.idle_timeout = std::chrono::milliseconds(static_cast<long long>(a->idle_timeout_s * 1000));
    o.say = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    daemon::Activator act(*ctx, std::move(img).value(), o);
    if (Status st = act.start(); !st.ok()) return void(g.rc = fail(st.error()));
    std::printf("serving %s on %s:%d\n", a->image.c_str(), o.listen_host.c_str(), act.port());
    std::fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    auto s = act.stats();
    act.stop();
    std::printf("stopped: %d connection(s), %d instance(s) restored, %d claimed, %d removed when "
                "idle, at most %d at once\n",
                s.connections, s.started, s.claimed, s.removed_idle, s.peak_instances);
  });
}

}  // namespace prewarm::cli
