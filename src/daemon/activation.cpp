#include "daemon/activation.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/log.h"
#include "lifecycle/instance.h"

namespace prewarm::daemon {
namespace {

using Clock = std::chrono::steady_clock;

int app_port(const spec::AppSpec& spec) {
  if (!spec.ports.empty()) return spec.ports.front().container_port;
  if (spec.readiness_probe) {
    if (spec.readiness_probe->http_get) return spec.readiness_probe->http_get->port;
    if (spec.readiness_probe->tcp_socket) return spec.readiness_probe->tcp_socket->port;
  }
  return 0;
}

Result<UniqueFd> connect_to(const std::string& ip, int port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Error::sys("socket", errno);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1)
    return Error(ErrorKind::kRuntime, "instance address " + ip + " is not IPv4");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return Error::sys("connect", errno, ip + ":" + std::to_string(port));
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// Copies both ways until both sides are done (half-closes passed on).
void pump(int a, int b) {
  char buf[65536];
  bool a_open = true, b_open = true;
  while (a_open || b_open) {
    pollfd p[2] = {{a, static_cast<short>(a_open ? POLLIN : 0), 0}, {b, static_cast<short>(b_open ? POLLIN : 0), 0}};
    if (::poll(p, 2, 1000) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    for (int i = 0; i < 2; ++i) {
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      int from = i == 0 ? a : b, to = i == 0 ? b : a;
      ssize_t n = ::recv(from, buf, sizeof buf, 0);
      if (n <= 0) {
        ::shutdown(to, SHUT_WR);
        (i == 0 ? a_open : b_open) = false;
        continue;
      }
      for (ssize_t off = 0; off < n;) {
        ssize_t w = ::send(to, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
        if (w <= 0) return;
        off += w;
      }
    }
  }
}

}  // namespace

Activator::Activator(const engine::Context& ctx, images::LoadedImage img, ActivationOptions opts)
    : ctx_(ctx), img_(std::move(img)), opts_(std::move(opts)) {}

Activator::~Activator() { stop(); }

Status Activator::start() {
  if (opts_.max < 1) return Error(ErrorKind::kInvalidInput, "serve: --max must be at least 1");
  if (opts_.min < 0 || opts_.concurrency < 1)
    return Error(ErrorKind::kInvalidInput, "serve: --min must be 0 or more, --concurrency at least 1");
  if (opts_.target_port == 0) opts_.target_port = app_port(img_.spec);
  if (opts_.target_port <= 0)
    return Error(ErrorKind::kInvalidInput, "serve: image " + img_.name +
                                               " names no port (spec ports or readiness probe); give --target-port");
  listener_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener_.valid()) return Error::sys("socket", errno);
  int one = 1;
  ::setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(opts_.listen_port));
  if (::inet_pton(AF_INET, opts_.listen_host.c_str(), &addr.sin_addr) != 1)
    return Error(ErrorKind::kInvalidInput, "serve: --listen: not an IPv4 address: " + opts_.listen_host);
  if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return Error::sys("bind", errno, opts_.listen_host + ":" + std::to_string(opts_.listen_port));
  if (::listen(listener_.get(), 512) != 0) return Error::sys("listen", errno);
  socklen_t len = sizeof addr;
  ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  remove_left_by_previous();
  {
    std::lock_guard l(mu_);
    save_owned_locked();
  }
  acceptor_ = std::thread([this] { accept_loop(); });
  housekeeper_ = std::thread([this] { housekeeping_loop(); });
  return {};
}

void Activator::stop() {
  {
    std::lock_guard l(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (listener_.valid()) ::shutdown(listener_.get(), SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  if (housekeeper_.joinable()) housekeeper_.join();
  {
    std::unique_lock l(mu_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    cv_.wait(l, [&] { return handlers_ == 0; });
  }
  // Every instance this activator made, and the parked ones it kept.
  lifecycle::Instances inst(ctx_);
  std::vector<std::shared_ptr<Backend>> left;
  {
    std::lock_guard l(mu_);
    left.swap(backends_);
  }
  for (const auto& b : left) (void)inst.remove(b->id);
  // Parked ones it made and nobody claimed (others' parked instances are theirs).
  if (auto parked = inst.parked(img_); parked.ok())
    for (const auto& id : *parked)
      if (std::find(parked_by_us_.begin(), parked_by_us_.end(), id) != parked_by_us_.end())
        (void)inst.remove(id);
  if (port_ != 0) {
    std::error_code ec;
    std::filesystem::remove(owned_file(), ec);
  }
}

std::filesystem::path Activator::owned_file() const {
  return ctx_.state_dir / "serve" / (opts_.listen_host + ":" + std::to_string(port_) + ".json");
}

void Activator::save_owned_locked() {
  nlohmann::json ready = nlohmann::json::array(), parked = nlohmann::json::array();
  for (const auto& b : backends_) ready.push_back(b->id);
  for (const auto& id : parked_by_us_) parked.push_back(id);
  nlohmann::json doc = {{"pid", ::getpid()}, {"image", img_.name}, {"ready", ready},
                        {"parked", parked}};
  Status st = fs::make_dirs(owned_file().parent_path(), 0700);
  if (st.ok()) st = fs::write_file_atomic(owned_file(), doc.dump() + "\n", 0600, /*durable=*/false);
  if (!st.ok()) log::warn("serve: recording its instances: " + st.error().to_string());
}

void Activator::remove_left_by_previous() {
  auto text = fs::read_file(owned_file(), 1 << 20);
  if (!text.ok()) return;  // none: the last serve here stopped cleanly (or there was none)
  auto doc = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  std::vector<std::string> ready, parked;
  if (doc.is_object()) {
    for (auto [key, ids] : {std::pair{"ready", &ready}, std::pair{"parked", &parked}})
      if (doc.contains(key) && doc[key].is_array())
        for (const auto& id : doc[key])
          if (id.is_string()) ids->push_back(id);
  } else {
    log::warn("serve: " + owned_file().string() + " is not what serve writes; ignoring it");
  }
  lifecycle::Instances inst(ctx_);
  int removed = 0;
  auto remove = [&](const std::string& id) {
    Status st = inst.remove(id);
    if (st.ok()) {
      ++removed;
    } else if (st.error().kind() != ErrorKind::kNotFound) {
      log::warn("serve: removing " + id + ", left by a serve that died: " + st.error().to_string());
    }
  };
  for (const auto& id : ready) remove(id);
  // Parked ones only while still parked: a claim (a pool's, another serve's) made them theirs.
  for (const auto& id : parked) {
    auto st = inst.inspect(id);
    if (st.ok() && st->record.state == lifecycle::InstanceState::kRestored) remove(id);
  }
  const std::string pid =
      doc.is_object() && doc.contains("pid") ? doc["pid"].dump() : std::string("?");
  if (removed > 0 && opts_.say)
    opts_.say("serve: removed " + std::to_string(removed) + " instance(s) that a serve on " +
              opts_.listen_host + ":" + std::to_string(port_) + " left when it died (pid " + pid +
              ")");
}

ActivationStats Activator::stats() {
  std::lock_guard l(mu_);
  return stats_;
}

int Activator::instances() {
  std::lock_guard l(mu_);
  return static_cast<int>(backends_.size()) + starting_;
}

void Activator::accept_loop() {
  for (;;) {
    pollfd p{listener_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, 200);
    {
      std::lock_guard l(mu_);
      if (stopping_) return;
    }
    if (r <= 0) continue;
    int c = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    int one = 1;
    ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::lock_guard l(mu_);
    ++stats_.connections;
    ++handlers_;
    open_fds_.push_back(c);
    std::thread([this, c] {
      handle(UniqueFd(c));
      {
        std::lock_guard g(mu_);
        open_fds_.erase(std::remove(open_fds_.begin(), open_fds_.end(), c), open_fds_.end());
        --handlers_;
      }
      cv_.notify_all();
    }).detach();
  }
}

void Activator::handle(UniqueFd client) {
  auto b = acquire();
  if (!b.ok()) {
    log::warn("serve: no instance for a connection: " + b.error().to_string());
    return;  // closing tells the client
  }
  auto up = connect_to((*b)->ip, opts_.target_port);
  if (up.ok()) {
    {
      std::lock_guard l(mu_);
      open_fds_.push_back(up->get());
    }
    pump(client.get(), up->get());
    std::lock_guard l(mu_);
    open_fds_.erase(std::remove(open_fds_.begin(), open_fds_.end(), up->get()), open_fds_.end());
  } else {
    log::warn("serve: " + up.error().to_string());
  }
  release(*b);
}

Result<std::shared_ptr<Activator::Backend>> Activator::acquire() {
  std::unique_lock l(mu_);
  ++waiting_;
  struct Leave {
    int& w;
    ~Leave() { --w; }
  } leave{waiting_};
  for (;;) {
    if (stopping_) return Error(ErrorKind::kUnavailable, "serve is stopping");
    std::shared_ptr<Backend> best;
    for (const auto& b : backends_)
      if (b->active < opts_.concurrency && (!best || b->active < best->active)) best = b;
    if (best) {
      ++best->active;
      best->last_used = Clock::now();
      return best;
    }
    // Start one more only when those already starting cannot take everyone waiting.
    const int total = static_cast<int>(backends_.size()) + starting_;
    if (total < opts_.max && starting_ * opts_.concurrency < waiting_) {
      ++starting_;
      l.unlock();
      lifecycle::Instances inst(ctx_);
      bool claimed = false;
      auto s = inst.claim(img_);
      if (s.ok()) {
        claimed = true;
      } else if (s.error().kind() == ErrorKind::kNotFound) {
        s = inst.start(img_);
      }
      l.lock();
      --starting_;
      if (!s.ok()) {
        cv_.notify_all();
        return std::move(s).error();
      }
      auto b = std::make_shared<Backend>();
      b->id = s->record.id;
      b->ip = s->record.ip;
      b->last_used = Clock::now();
      backends_.push_back(b);
      save_owned_locked();
      (claimed ? stats_.claimed : stats_.started) += 1;
      stats_.peak_instances = std::max(stats_.peak_instances, static_cast<int>(backends_.size()));
      if (opts_.say)
        opts_.say("serve: " + b->id + " (" + b->ip + ") " + (claimed ? "claimed" : "restored") +
                  " in " + std::to_string(static_cast<int>(s->timings.total_ms)) + " ms");
      cv_.notify_all();
      continue;
    }
    cv_.wait(l);
  }
}

void Activator::release(const std::shared_ptr<Backend>& b) {
  {
    std::lock_guard l(mu_);
    --b->active;
    b->last_used = Clock::now();
  }
  cv_.notify_all();
}

void Activator::housekeeping_loop() {
  lifecycle::Instances inst(ctx_);
  lifecycle::StartOptions park;
  park.park = true;
  for (;;) {
    std::vector<std::shared_ptr<Backend>> idle;
    {
      std::unique_lock l(mu_);
      cv_.wait_for(l, std::chrono::milliseconds(200));
      if (stopping_) return;
      const auto now = Clock::now();
      for (auto it = backends_.begin(); it != backends_.end();) {
        if ((*it)->active == 0 && now - (*it)->last_used >= opts_.idle_timeout) {
          idle.push_back(*it);
          it = backends_.erase(it);
        } else {
          ++it;
        }
      }
      stats_.removed_idle += static_cast<int>(idle.size());
    }
    for (const auto& b : idle) {
      Status st = inst.remove(b->id);
      if (opts_.say) opts_.say("serve: " + b->id + " idle, removed");
      if (!st.ok()) log::warn("serve: removing idle " + b->id + ": " + st.error().to_string());
    }
    // The parked ones it made that are still parked stay its own; a claim made the others
    // someone's (its own claims are among its ready ones).
    bool parks;
    {
      std::lock_guard l(mu_);
      parks = opts_.min > 0 || !parked_by_us_.empty();
    }
    Result<std::vector<std::string>> parked = std::vector<std::string>{};
    if (parks) parked = inst.parked(img_);
    {
      std::lock_guard l(mu_);
      size_t before = parked_by_us_.size();
      if (parks && parked.ok())
        std::erase_if(parked_by_us_, [&](const std::string& id) {
          return std::find(parked->begin(), parked->end(), id) == parked->end();
        });
      if (!idle.empty() || parked_by_us_.size() != before) save_owned_locked();
    }
    // Parked ones, up to min (one at a time, so connections are not kept waiting for CPU).
    if (opts_.min > 0) {
      if (parked.ok() && static_cast<int>(parked->size()) < opts_.min) {
        auto s = inst.start(img_, park);
        if (!s.ok()) {
          log::warn("serve: parking an instance: " + s.error().to_string());
        } else {
          std::lock_guard l(mu_);
          parked_by_us_.push_back(s->record.id);
          save_owned_locked();
        }
      }
    }
  }
}

}  // namespace prewarm::daemon
