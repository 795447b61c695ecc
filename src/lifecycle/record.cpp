// instance.json: reading and writing an instance's record.
#include "lifecycle/record.h"

#include <nlohmann/json.hpp>

#include "base/fs.h"

namespace prewarm::lifecycle {

using nlohmann::json;

std::string record_to_json(const InstanceRecord& r) {
  json j = {{"format", kRecordFormat},
            {"id", r.id},
            {"state", std::string(state_name(r.state))},
            {"image", r.image},
            {"imageDigest", r.image_digest},
            {"hostname", r.hostname},
            {"runtime", r.runtime},
            {"sandbox", r.sandbox},
            {"ip", r.ip},
            {"netns", r.netns},
            {"hostVeth", r.host_veth},
            {"startedBy", r.started_by},
            {"fallbackReason", r.fallback_reason},
            {"restoreNote", r.restore_note},
            {"paging", r.paging},
            {"error", r.error},
            {"created", r.created},
            {"readySeconds", r.ready_s}};
  return j.dump(2);
}

Result<InstanceRecord> record_from_json(std::string_view text, const std::string& where) {
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return Error(ErrorKind::kInvalidInput, where + ": not a JSON object");
  auto str = [&](const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  InstanceRecord r;
  // Format 1 (no "format", no "state") was written by prewarm before the lifecycle existed;
  // such an instance was either fully started or is a leftover.
  int format = j.contains("format") && j["format"].is_number_integer() ? j["format"].get<int>() : 1;
  if (format > kRecordFormat)
    return Error(ErrorKind::kInvalidInput, where + ": record format " + std::to_string(format) +
                                               " is newer than this prewarm (" +
                                               std::to_string(kRecordFormat) + ")");
  r.id = str("id");
  if (format == 1) {
    r.state = str("startedBy").empty() ? InstanceState::kPreparing : InstanceState::kReady;
  } else {
    auto s = parse_state(str("state"));
    if (!s) return Error(ErrorKind::kInvalidInput, where + ": unknown state '" + str("state") + "'");
    r.state = *s;
  }
  r.image = str("image");
  r.image_digest = str("imageDigest");
  r.hostname = str("hostname");
  r.runtime = str("runtime");
  r.sandbox = str("sandbox");
  r.ip = str("ip");
  r.netns = str("netns");
  r.host_veth = str("hostVeth");
  r.started_by = str("startedBy");
  r.fallback_reason = str("fallbackReason");
  r.restore_note = str("restoreNote");
  r.paging = str("paging");
  r.error = str("error");
  r.created = str("created");
  if (auto it = j.find("readySeconds"); it != j.end() && it->is_number()) r.ready_s = it->get<double>();
  return r;
}

Status save_record(const std::filesystem::path& instance_dir, const InstanceRecord& r) {
  return fs::write_file_atomic(instance_dir / kRecordFile, record_to_json(r), 0600,
                               /*durable=*/false);
}

Result<InstanceRecord> load_record(const std::filesystem::path& instance_dir) {
  auto file = instance_dir / kRecordFile;
  auto text = fs::read_file(file, 1 << 20);
  if (!text.ok()) {
    if (text.error().errno_value() == ENOENT)
      return Error(ErrorKind::kNotFound, file.string() + ": no record");
    return std::move(text).error();
  }
  return record_from_json(*text, file.string());
}

}  // namespace prewarm::lifecycle
