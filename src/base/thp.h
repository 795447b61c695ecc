// Transparent huge page settings of this host (/sys/kernel/mm/transparent_hugepage): which
// folio sizes memory advised MADV_HUGEPAGE may get. On a VM whose balloon reports free memory
// to the host, idle memory goes back in 2 MiB blocks, so a 2 MiB folio is filled by hundreds of
// host faults, while smaller multi-size THP folios (e.g. 64 KiB) come from memory the guest
// still has (README: huge pages).
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace prewarm::thp {

struct AdvisedSizes {
  uint64_t pmd_bytes = 0;              // the PMD size (hpage_pmd_size), 0 if unknown
  bool pmd = false;                    // advised memory may get PMD-sized folios
  std::vector<uint64_t> smaller;       // the smaller sizes it may get (multi-size THP), bytes
};

// Reads `dir` (a directory laid out as /sys/kernel/mm/transparent_hugepage). A size is allowed
// to advised memory when its `enabled` is always or madvise, or inherit while the top-level
// `enabled` is always or madvise. Missing files allow nothing.
AdvisedSizes advised_sizes(const std::filesystem::path& dir = "/sys/kernel/mm/transparent_hugepage");

// Advised memory gets smaller folios and never PMD-sized ones: filling memory advised
// MADV_HUGEPAGE then costs less without the idle-memory penalty of 2 MiB folios.
bool small_folios_only(const AdvisedSizes& s);

}  // namespace prewarm::thp
