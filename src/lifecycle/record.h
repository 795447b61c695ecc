// An instance's one record, INSTANCE_DIR/instance.json: written atomically at every state
// change, versioned, and the only place `ps`, `rm` and recovery learn about the instance from.
#pragma once

#include <filesystem>
#include <string>

#include "base/result.h"
#include "lifecycle/state.h"

namespace prewarm::lifecycle {

inline constexpr const char* kRecordFile = "instance.json";
inline constexpr int kRecordFormat = 2;

struct InstanceRecord {
  std::string id;
  InstanceState state = InstanceState::kPreparing;
  std::string image;         // image name ("" for a bake instance)
  std::string image_digest;  // the image's manifest digest in the store (kept from gc)
  std::string hostname;
  std::string runtime;       // backend that made the container: "runc" or "criu"
  std::string sandbox;       // "own" (prewarm's netns + veth) or "given" (a pod's)
  std::string ip;
  std::string netns;         // netns name (own sandbox) or path (given)
  std::string host_veth;
  std::string started_by;       // "restore" or "cold" ("" until decided)
  std::string paging;           // a restore's: "lazy" (pages served after resume) or "eager"
  std::string fallback_reason;  // why a requested restore became a cold start
  std::string restore_note;     // what could not be checked before the restore was attempted
  std::string error;            // why the instance failed (state failed)
  std::string created;
  double ready_s = 0;
};

std::string record_to_json(const InstanceRecord& r);
// kInvalidInput for text that is not a record (unknown format versions included).
Result<InstanceRecord> record_from_json(std::string_view text, const std::string& where);

// Atomic replace, without fsync: a record means nothing after a reboot, but a crash of the
// writer must never leave a torn one.
Status save_record(const std::filesystem::path& instance_dir, const InstanceRecord& r);
// kNotFound when the instance has no record (yet).
Result<InstanceRecord> load_record(const std::filesystem::path& instance_dir);

}  // namespace prewarm::lifecycle
