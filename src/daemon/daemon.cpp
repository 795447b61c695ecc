#include "daemon/daemon.h"

#include <sys/socket.h>

#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/fs.h"
#include "base/log.h"
#include "images/images.h"
#include "images/load.h"
#include "lifecycle/instance.h"
#include "lifecycle/record.h"
#include "store/store.h"

#ifndef PREWARM_VERSION
#define PREWARM_VERSION "unknown"
#endif

namespace prewarm::daemon {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

int status_of(ErrorKind k) {
  switch (k) {
    case ErrorKind::kNotFound: return 404;
    case ErrorKind::kInvalidInput: return 400;
    case ErrorKind::kPermissionDenied: return 403;
    case ErrorKind::kConflict: return 409;
    case ErrorKind::kIncompatibleHost: return 422;
    case ErrorKind::kUnavailable: return 503;
    default: return 500;
  }
}

Response json_response(int status, const json& body) {
  Response r;
  r.status = status;
  r.body = body.dump() + "\n";
  return r;
}

Response error_response(const Error& e) {
  return json_response(status_of(e.kind()),
                       {{"error", e.to_string()}, {"kind", error_kind_name(e.kind())}});
}

Response bad_request(const std::string& why) {
  return error_response(Error(ErrorKind::kInvalidInput, why));
}

json instance_json(const lifecycle::InstanceRecord& r, const std::string& runtime_state, pid_t pid) {
  return {{"id", r.id},
          {"image", r.image},
          {"imageDigest", r.image_digest},
          {"ip", r.ip},
          {"hostname", r.hostname},
          {"state", std::string(lifecycle::state_name(r.state))},
          {"process", runtime_state},
          {"pid", pid},
          {"startedBy", r.started_by},
          {"runtime", r.runtime},
          {"paging", r.paging},
          {"fallbackReason", r.fallback_reason},
          {"restoreNote", r.restore_note},
          {"created", r.created},
          {"readySeconds", r.ready_s}};
}

json started_json(const lifecycle::Started& s) {
  json j = instance_json(s.record, s.record.state == lifecycle::InstanceState::kRestored ? "paused" : "running", s.pid);
  j["readyMilliseconds"] = s.timings.total_ms;
  j["timingsMilliseconds"] = s.timings.as_map();
  return j;
}

// Splits "/v1/a/b" into {"v1", "a", "b"}.
std::vector<std::string> segments(const std::string& path) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < path.size()) {
    size_t next = path.find('/', at);
    if (next == std::string::npos) next = path.size();
    if (next > at) out.push_back(path.substr(at, next - at));
    at = next + 1;
  }
  return out;
}

bool same_token(const std::string& a, const std::string& b) {
  // Constant time in the length of the expected token.
  unsigned char diff = a.size() != b.size();
  for (size_t i = 0; i < b.size(); ++i) diff |= static_cast<unsigned char>((i < a.size() ? a[i] : 0) ^ b[i]);
  return diff == 0;
}

Result<json> body_json(const Request& req) {
  if (req.body.empty()) return json::object();
  json j = json::parse(req.body, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return Error(ErrorKind::kInvalidInput, "request body: expected a JSON object");
  return j;
}

void record_start_metrics(Metrics& m, const lifecycle::Started& s, const char* how) {
  const auto& t = s.timings;
  m.count("prewarm_starts_total", {{"how", how}});
  if (std::string(how) == "claim") {
    m.observe("prewarm_claim_seconds", t.total_ms / 1000);
    m.observe("prewarm_claim_phase_seconds", t.identity_ms / 1000, {{"phase", "identity"}});
    m.observe("prewarm_claim_phase_seconds", t.runtime_ms / 1000, {{"phase", "thaw"}});
    m.observe("prewarm_claim_phase_seconds", t.probe_ms / 1000, {{"phase", "probe"}});
    return;
  }
  if (s.record.started_by == "cold") {
    m.observe("prewarm_cold_start_seconds", t.total_ms / 1000);
    if (!s.record.fallback_reason.empty())
      m.count("prewarm_fallbacks_total",
              {{"reason", s.host_cannot_restore ? "host" : "restore_failed"}});
    return;
  }
  m.observe("prewarm_restore_seconds", t.total_ms / 1000);
  for (const auto& [phase, ms] : std::map<std::string, double>{{"verify", t.verify_ms},
                                                                {"record", t.record_ms},
                                                                {"network", t.network_ms},
                                                                {"prepare", t.prepare_ms},
                                                                {"runtime", t.runtime_ms},
                                                                {"identity", t.identity_ms},
                                                                {"probe", t.probe_ms}})
    m.observe("prewarm_restore_phase_seconds", ms / 1000, {{"phase", phase}});
}

Result<std::vector<PoolSpec>> read_pools_file(const std::string& path) {
  PW_ASSIGN(std::string text, fs::read_file(path, 1 << 20));
  std::vector<PoolSpec> out;
  try {
    YAML::Node root = YAML::Load(text);
    if (!root.IsMap() || !root["pools"] || !root["pools"].IsSequence())
      return Error(ErrorKind::kInvalidInput, path + ": expected `pools:` with a list");
    for (const auto& n : root["pools"]) {
      if (!n.IsMap()) return Error(ErrorKind::kInvalidInput, path + ": a pool is not a map");
      json j = json::object();
      for (const auto& kv : n) {
        const std::string k = kv.first.as<std::string>();
        if (k == "image" || k == "paging") j[k] = kv.second.as<std::string>();
        else if (k == "min" || k == "max") j[k] = kv.second.as<int>();
        else return Error(ErrorKind::kInvalidInput, path + ": unknown pool field '" + k + "'");
      }
      auto p = pool_from_json(j, "");
      if (!p.ok()) return std::move(p).error().with_context(path);
      out.push_back(*p);
    }
  } catch (const YAML::Exception& e) {
    return Error(ErrorKind::kInvalidInput, path + ": " + e.what());
  }
  return out;
}

}  // namespace

Daemon::Daemon(engine::Context ctx, Options opts) : ctx_(std::move(ctx)), opts_(std::move(opts)) {}

Daemon::~Daemon() { stop(); }

Status Daemon::start() {
  if (!opts_.tcp.empty()) {
    if (opts_.token_file.empty())
      return Error(ErrorKind::kInvalidInput, "--tcp needs --token-file: TCP requests must carry a bearer token");
    PW_ASSIGN(std::string t, fs::read_file(opts_.token_file, 4096));
    token_ = t.substr(0, t.find('\n'));
    if (token_.size() < 16)
      return Error(ErrorKind::kInvalidInput, opts_.token_file + ": the token must have at least 16 characters");
  }
  // Reconcile with what runs: adopt ready and parked instances, undo half-made ones.
  lifecycle::Instances inst(ctx_);
  auto rep = inst.recover();
  if (!rep.ok()) return std::move(rep).error().with_context("recovery");
  for (const auto& id : rep->removed) events_.publish({{"type", "instance.recovered_removed"}, {"id", id}});
  log::info("prewarmd: " + std::to_string(rep->adopted.size()) + " instance(s) adopted, " +
            std::to_string(rep->removed.size()) + " half-made removed");

  pools_ = std::make_unique<Pools>(ctx_, metrics_, events_);
  PW_TRY(pools_->start());
  if (!opts_.pools_file.empty()) {
    PW_ASSIGN(auto specs, read_pools_file(opts_.pools_file));
    for (const auto& p : specs) {
      Status st = pools_->set(p);
      if (!st.ok()) return std::move(st).error().with_context("pool " + p.image + " from " + opts_.pools_file);
    }
  }

  metrics_.gauge("prewarm_instances", "instances on this node, by state", [this] {
    std::map<std::string, double> by;
    std::error_code ec;
    for (const auto& e : stdfs::directory_iterator(ctx_.instances_dir(), ec))
      if (auto r = lifecycle::load_record(e.path()); r.ok()) by[std::string(lifecycle::state_name(r->state))] += 1;
    std::vector<std::pair<Labels, double>> out;
    for (const auto& [state, n] : by) out.push_back({{{"state", state}}, n});
    return out;
  });
  metrics_.gauge("prewarm_pool_parked", "parked instances per pool", [this] {
    std::vector<std::pair<Labels, double>> out;
    for (const auto& p : pools_->list()) out.push_back({{{"image", p.spec.image}}, static_cast<double>(p.parked)});
    return out;
  });
  metrics_.gauge("prewarm_pool_min", "each pool's min", [this] {
    std::vector<std::pair<Labels, double>> out;
    for (const auto& p : pools_->list()) out.push_back({{{"image", p.spec.image}}, static_cast<double>(p.spec.min)});
    return out;
  });
  metrics_.gauge("prewarm_pool_max", "each pool's max", [this] {
    std::vector<std::pair<Labels, double>> out;
    for (const auto& p : pools_->list()) out.push_back({{{"image", p.spec.image}}, static_cast<double>(p.spec.max)});
    return out;
  });
  metrics_.gauge("prewarm_store_bytes", "bytes the store's images take (shared chunks counted once per image)", [this] {
    double total = 0;
    if (auto l = images::list_images(ctx_); l.ok())
      for (const auto& i : *l) total += static_cast<double>(i.stored_bytes);
    return std::vector<std::pair<Labels, double>>{{{}, total}};
  });

  server_ = std::make_unique<HttpServer>([this](const Request& r) { return handle(r); });
  PW_TRY(fs::make_dirs(stdfs::path(opts_.socket).parent_path(), 0755));
  PW_TRY(server_->listen_unix(opts_.socket));
  if (!opts_.tcp.empty()) {
    size_t colon = opts_.tcp.rfind(':');
    if (colon == std::string::npos) return Error(ErrorKind::kInvalidInput, "--tcp: expected HOST:PORT");
    PW_TRY(server_->listen_tcp(opts_.tcp.substr(0, colon), std::stoi(opts_.tcp.substr(colon + 1))));
  }
  server_->start();
  events_.publish({{"type", "daemon.started"}, {"adopted", rep->adopted.size()}});
  return {};
}

void Daemon::stop() {
  events_.close();
  if (server_) server_->stop();
  if (pools_) pools_->stop();
}

Response Daemon::handle(const Request& req) {
  Stopwatch sw;
  std::string route_name = "unknown";
  Response r;
  if (req.over_tcp) {
    auto it = req.headers.find("authorization");
    const std::string expected = "Bearer " + token_;
    if (token_.empty() || it == req.headers.end() || !same_token(it->second, expected)) {
      r = json_response(401, {{"error", "a bearer token is required on TCP (Authorization: Bearer ...)"},
                              {"kind", "invalid input"}});
      r.headers["WWW-Authenticate"] = "Bearer";
      metrics_.count("prewarm_api_requests_total", {{"route", "unauthorized"}, {"code", "401"}});
      return r;
    }
  }
  r = route(req, route_name);
  metrics_.count("prewarm_api_requests_total", {{"route", route_name}, {"code", std::to_string(r.status)}});
  return r;
}

Response Daemon::route(const Request& req, std::string& name) {
  const auto seg = segments(req.path);
  const std::string& m = req.method;
  if (seg.size() == 1 && seg[0] == "metrics") {
    name = "metrics";
    Response r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics_.exposition();
    return r;
  }
  if (seg.empty() || seg[0] != kApiVersion)
    return json_response(404, {{"error", "no such path " + req.path + " (the API is under /v1)"}, {"kind", "not found"}});
  const std::string what = seg.size() > 1 ? seg[1] : "";
  lifecycle::Instances inst(ctx_);

  if (what == "health" && seg.size() == 2) {
    name = "health";
    return json_response(200, {{"status", "ok"}, {"version", PREWARM_VERSION}, {"api", kApiVersion},
                                {"stateDir", ctx_.state_dir.lexically_normal().string()}});
  }

  if (what == "images") {
    name = "images";
    if (seg.size() == 2 && m == "GET") {
      auto l = images::list_images(ctx_);
      if (!l.ok()) return error_response(l.error());
      json out = json::array();
      for (const auto& i : *l)
        out.push_back({{"name", i.name}, {"created", i.created}, {"digest", i.manifest_digest},
                       {"rawBytes", i.raw_bytes}, {"storedBytes", i.stored_bytes},
                       {"unpacked", i.unpacked}, {"problem", i.problem}});
      return json_response(200, out);
    }
    if (seg.size() == 3 && seg[2] == "pull" && m == "POST") {
      auto body = body_json(req);
      if (!body.ok()) return error_response(body.error());
      const std::string ref = body->value("reference", "");
      if (ref.empty()) return bad_request("pull: `reference` is required");
      auto pulled = images::pull_image(ctx_, ref, body->value("name", ""), images::registry_options(ctx_));
      if (!pulled.ok()) return error_response(pulled.error());
      events_.publish({{"type", "image.pulled"}, {"image", *pulled}, {"reference", ref}});
      return json_response(200, {{"name", *pulled}});
    }
    if (seg.size() == 3 && m == "DELETE") {
      Status st = images::remove_image(ctx_, seg[2]);
      if (!st.ok()) return error_response(st.error());
      events_.publish({{"type", "image.removed"}, {"image", seg[2]}});
      return json_response(200, {{"removed", seg[2]}});
    }
    return json_response(405, {{"error", m + " " + req.path + " is not an operation"}, {"kind", "invalid input"}});
  }

  if (what == "instances") {
    name = "instances";
    if (seg.size() == 2 && m == "GET") {
      auto l = inst.list();
      if (!l.ok()) return error_response(l.error());
      json out = json::array();
      for (const auto& s : *l) out.push_back(instance_json(s.record, s.runtime_state, s.pid));
      return json_response(200, out);
    }
    if (seg.size() == 2 && m == "POST") {
      auto body = body_json(req);
      if (!body.ok()) return error_response(body.error());
      const std::string image = body->value("image", "");
      const json count_j = body->value("count", json(1));
      if (image.empty()) return bad_request("start: `image` is required");
      if (!count_j.is_number_integer() || count_j.get<int>() < 1 || count_j.get<int>() > 64)
        return bad_request("start: `count` must be an integer from 1 to 64");
      const std::string mode = body->value("mode", "restore");
      if (mode != "restore" && mode != "cold") return bad_request("start: `mode` is restore or cold");
      lifecycle::StartOptions o;
      o.mode = mode == "cold" ? lifecycle::StartMode::kCold : lifecycle::StartMode::kRestore;
      o.paging = body->value("paging", "");
      o.hostname = count_j.get<int>() == 1 ? body->value("hostname", "") : "";
      images::LoadOptions lo;
      if (mode != "cold") lo.paging = o.paging;
      auto img = images::load_image(ctx_, image, lo);
      if (!img.ok()) return error_response(img.error());
      json out = json::array();
      int failed = 0;
      Error first_error("");
      for (auto& s : inst.start_many(*img, count_j.get<int>(), o)) {
        if (!s.ok()) {
          if (failed++ == 0) first_error = s.error();
          out.push_back({{"error", s.error().to_string()}, {"kind", error_kind_name(s.error().kind())}});
          continue;
        }
        record_start_metrics(metrics_, *s, "start");
        events_.publish({{"type", "instance.started"}, {"id", s->record.id}, {"image", image},
                         {"startedBy", s->record.started_by}, {"readyMilliseconds", s->timings.total_ms}});
        out.push_back(started_json(*s));
      }
      if (failed == count_j.get<int>()) return error_response(first_error);
      return json_response(201, out);
    }
    if (seg.size() == 3 && m == "GET") {
      auto s = inst.inspect(seg[2]);
      if (!s.ok()) return error_response(s.error());
      return json_response(200, instance_json(s->record, s->runtime_state, s->pid));
    }
    if (seg.size() == 3 && m == "DELETE") {
      Status st = inst.remove(seg[2]);
      if (!st.ok()) return error_response(st.error());
      events_.publish({{"type", "instance.removed"}, {"id", seg[2]}});
      return json_response(200, {{"removed", seg[2]}});
    }
    return json_response(405, {{"error", m + " " + req.path + " is not an operation"}, {"kind", "invalid input"}});
  }

  if (what == "pools") {
    name = "pools";
    auto status_json = [](const PoolStatus& p) {
      json j = to_json(p.spec);
      j["parked"] = p.parked;
      j["claimed"] = p.claimed;
      j["lastError"] = p.last_error;
      return j;
    };
    if (seg.size() == 2 && m == "GET") {
      json out = json::array();
      for (const auto& p : pools_->list()) out.push_back(status_json(p));
      return json_response(200, out);
    }
    if (seg.size() == 3 && m == "GET") {
      auto p = pools_->get(seg[2]);
      if (!p) return error_response(Error(ErrorKind::kNotFound, "no pool for image " + seg[2]));
      return json_response(200, status_json(*p));
    }
    if (seg.size() == 3 && m == "PUT") {
      auto body = body_json(req);
      if (!body.ok()) return error_response(body.error());
      auto spec = pool_from_json(*body, seg[2]);
      if (!spec.ok()) return error_response(spec.error());
      Status st = pools_->set(*spec);
      if (!st.ok()) return error_response(st.error());
      return json_response(200, status_json(*pools_->get(seg[2])));
    }
    if (seg.size() == 3 && m == "DELETE") {
      Status st = pools_->remove(seg[2]);
      if (!st.ok()) return error_response(st.error());
      return json_response(200, {{"removed", seg[2]}});
    }
    if (seg.size() == 4 && seg[3] == "claim" && m == "POST") {
      name = "claim";
      auto body = body_json(req);
      if (!body.ok()) return error_response(body.error());
      lifecycle::StartOptions o;
      o.hostname = body->value("hostname", "");
      bool from_pool = false;
      auto s = pools_->claim(seg[2], o, &from_pool);
      if (!s.ok()) {
        if (s.error().kind() == ErrorKind::kUnavailable) {
          Response r = error_response(s.error());
          r.status = 429;
          r.headers["Retry-After"] = "1";
          return r;
        }
        return error_response(s.error());
      }
      record_start_metrics(metrics_, *s, from_pool ? "claim" : "start");
      events_.publish({{"type", from_pool ? "instance.claimed" : "instance.started"}, {"id", s->record.id},
                       {"image", seg[2]}, {"hostname", s->record.hostname},
                       {"readyMilliseconds", s->timings.total_ms}});
      json j = started_json(*s);
      j["claimed"] = from_pool;
      return json_response(200, j);
    }
    return json_response(405, {{"error", m + " " + req.path + " is not an operation"}, {"kind", "invalid input"}});
  }

  if (what == "events" && seg.size() == 2 && m == "GET") {
    name = "events";
    uint64_t since = 0;
    if (auto it = req.query.find("since"); it != req.query.end())
      since = std::strtoull(it->second.c_str(), nullptr, 10);
    const bool follow = req.query.count("follow") == 0 || req.query.at("follow") != "false";
    Response r;
    r.content_type = "application/x-ndjson";
    r.stream = [this, since, follow](const StreamWriter& write) {
      uint64_t at = since;
      for (;;) {
        auto batch = events_.since(at, follow ? 1000 : 0);
        for (const auto& e : batch) {
          if (!write(e.dump() + "\n")) return;
          at = e["seq"].get<uint64_t>();
        }
        if (!follow || events_.closed()) return;
        // A keep-alive blank line now and then tells a vanished client apart.
        if (batch.empty() && !write("\n")) return;
      }
    };
    return r;
  }
  return json_response(404, {{"error", "no such path " + req.path}, {"kind", "not found"}});
}

}  // namespace prewarm::daemon
