// CRIU's pagemap images and the working set prewarm records at bake.
//
// pagemap-<pid>.img lists, in the order of pages-<id>.img, which pages of one task's memory the
// checkpoint holds. Entries CRIU marks "lazy" may be served by userfaultfd after the task
// resumes (`criu restore --lazy-pages`); the others are copied before it resumes. A lazy
// restore first copies the app's working set (the pages it touched from resume until it had
// answered its warm-up, recorded by a trial restore at bake): the image view it restores from
// has those pages' entries without the lazy flag.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace prewarm::image {

// In an image directory, beside manifest.json (sealed with the image). Optional.
inline constexpr const char* kWorkingSetFile = "working-set";

inline constexpr uint32_t kPagemapInParent = 1u << 0;  // CRIU's PE_PARENT
inline constexpr uint32_t kPagemapLazy = 1u << 1;      // PE_LAZY
inline constexpr uint32_t kPagemapPresent = 1u << 2;   // PE_PRESENT

struct PagemapEntry {
  uint64_t vaddr = 0;
  uint64_t nr_pages = 0;
  uint32_t flags = 0;
};

struct Pagemap {
  uint32_t pages_id = 0;  // pages-<pages_id>.img holds the present pages
  std::vector<PagemapEntry> entries;
};

// CRIU's file names in a checkpoint directory: pagemap-<pid>.img and pages-<id>.img.
bool is_pagemap_name(const std::string& name);
Result<pid_t> pagemap_pid(const std::string& name);  // kInvalidInput for another name
bool is_pages_name(const std::string& name);

Result<Pagemap> parse_pagemap(std::string_view image);
std::string serialize_pagemap(const Pagemap& pm);

// Pages of each task (the pid in the image's names), as sorted, disjoint page-aligned ranges.
struct PageRange {
  uint64_t start = 0;  // address
  uint64_t pages = 0;
};
using WorkingSet = std::map<pid_t, std::vector<PageRange>>;

// The working-set file: "<pid> <address hex> <pages>" lines (a '#' line is a comment).
Result<WorkingSet> parse_working_set(std::string_view text);
std::string format_working_set(const WorkingSet& ws);
// From a lazy-pages daemon's fault record ("<pid> <address hex>" per fault, in fault order):
// every page faulted, as ranges.
Result<WorkingSet> working_set_from_faults(std::string_view record);
uint64_t working_set_pages(const WorkingSet& ws);

// `pm` with the lazy flag cleared on the pages `ranges` names (entries are split where
// needed); present pages keep their order, so pages-<id>.img still matches. Returns the number
// of pages that became eager.
uint64_t make_pages_eager(Pagemap& pm, const std::vector<PageRange>& ranges);

// Pages of a pagemap: {all present pages, those marked lazy}.
std::pair<uint64_t, uint64_t> pagemap_pages(const Pagemap& pm);

struct LazyView {
  std::filesystem::path dir;
  uint64_t pages = 0;           // present pages in the checkpoint
  uint64_t lazy_pages = 0;      // served after the app resumes
  uint64_t working_set = 0;     // of the lazy-able ones, copied before it resumes
  bool working_set_stale = false;  // the file names pages the checkpoint has not as lazy
};

// Makes `view` (emptied first) a directory of relative symlinks to checkpoint_dir's files,
// except pagemap-*.img, rewritten so that the working set (may be empty) is copied before the
// app resumes and the rest is served lazily.
Result<LazyView> make_lazy_view(const std::filesystem::path& checkpoint_dir,
                                const std::filesystem::path& view, const WorkingSet& ws);

// Present pages of a checkpoint directory (all pagemap-*.img), and how many are lazy-able.
Result<std::pair<uint64_t, uint64_t>> checkpoint_pages(const std::filesystem::path& checkpoint_dir);

}  // namespace prewarm::image
