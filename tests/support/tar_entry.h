// Hand-made tar entries for tests: archives GNU tar would never write (hostile names, odd
// types, whiteouts).
#pragma once

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <string>

namespace prewarm::testing {

// One ustar header block (+ data, padded): for layers GNU tar would never write.
inline std::string tar_entry(const std::string& name, char type, const std::string& data = "",
                             const std::string& link = "", unsigned mode = 0644,
                             unsigned major = 0, unsigned minor = 0) {
  std::array<char, 512> h{};
  std::memcpy(h.data(), name.data(), std::min<size_t>(name.size(), 100));
  std::snprintf(&h[100], 8, "%07o", mode);
  std::snprintf(&h[108], 8, "%07o", 0);
  std::snprintf(&h[116], 8, "%07o", 0);
  std::snprintf(&h[124], 12, "%011zo", data.size());
  std::snprintf(&h[136], 12, "%011o", 1000000);
  std::memset(&h[148], ' ', 8);
  h[156] = type;
  std::memcpy(&h[157], link.data(), std::min<size_t>(link.size(), 100));
  std::memcpy(&h[257], "ustar", 6);
  std::memcpy(&h[263], "00", 2);
  std::snprintf(&h[329], 8, "%07o", major);
  std::snprintf(&h[337], 8, "%07o", minor);
  unsigned sum = 0;
  for (char c : h) sum += static_cast<unsigned char>(c);
  std::snprintf(&h[148], 8, "%06o", sum);
  std::string out(h.data(), h.size());
  out += data;
  out.append((512 - data.size() % 512) % 512, '\0');
  return out;
}

}  // namespace prewarm::testing
