// SHA-256 of files and buffers (OpenSSL EVP), as lowercase hex.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "base/result.h"

namespace prewarm {

std::string sha256_hex(std::string_view data);
Result<std::string> sha256_file(const std::filesystem::path& path);

}  // namespace prewarm
