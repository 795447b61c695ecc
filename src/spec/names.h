// One naming rule for app specs, images, instance ids and hostnames: a name is a DNS-1123
// label short enough that an instance id (name + "-" + 8 hex digits) is one too, so every
// instance's id can be its hostname (a Kubernetes container name has the same shape).
#pragma once

#include <string>
#include <string_view>

#include "base/result.h"

namespace prewarm::spec {

// 63 (a DNS label, and under the kernel's 64-byte hostname) minus the 9 an instance id adds.
inline constexpr size_t kMaxNameLength = 54;
inline constexpr size_t kInstanceSuffixLength = 9;

// kInvalidInput unless `name` is 1..kMaxNameLength of [a-z0-9-], starting and ending with a
// letter or digit. `what` names the thing in the message ("name", "image name", ...).
Status check_name(std::string_view name, std::string_view what = "name");

// A valid name made from free text (a repository or file name): lowercased, other characters
// turned into '-', trimmed to the limit; "" when nothing usable is left.
std::string to_name(std::string_view raw);

}  // namespace prewarm::spec
