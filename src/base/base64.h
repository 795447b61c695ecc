// Base64 (RFC 4648, standard alphabet, padded).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace prewarm {

std::string base64_encode(std::string_view data);
// nullopt unless `text` is padded base64 of the standard alphabet with no other characters.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace prewarm
