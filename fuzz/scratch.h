// A scratch directory for fuzz targets that need files: made once per process, emptied after
// every input so inputs cannot see each other's leftovers.
#pragma once

#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

namespace prewarm::fuzz {

inline const std::filesystem::path& scratch_root() {
  static const std::filesystem::path root = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "prewarm-fuzz-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    std::filesystem::path p = tmpl;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_root(), ec);
    });
    return p;
  }();
  return root;
}

// Empties the scratch directory (it stays).
inline void clear_scratch() {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(scratch_root(), ec))
    std::filesystem::remove_all(e.path(), ec);
}

// Writes data to scratch_root()/name, aborting on failure (a harness fault, not a finding).
inline std::filesystem::path write_scratch(const std::string& name, std::string_view data) {
  std::filesystem::path p = scratch_root() / name;
  std::FILE* f = std::fopen(p.c_str(), "wb");
  if (f == nullptr || std::fwrite(data.data(), 1, data.size(), f) != data.size() ||
      std::fclose(f) != 0) {
    std::perror(p.c_str());
    std::abort();
  }
  return p;
}

}  // namespace prewarm::fuzz
