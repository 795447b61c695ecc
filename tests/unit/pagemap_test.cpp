// Pagemap images and working sets: what a lazy restore's image view is made of.
#include "image/pagemap.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "base/fs.h"

namespace prewarm::image {
namespace {

namespace stdfs = std::filesystem;
constexpr uint64_t P = 4096;

Pagemap sample() {
  Pagemap pm;
  pm.pages_id = 7;
  pm.entries = {{0x400000, 4, kPagemapPresent},                  // not lazy-able (e.g. a stack)
                {0x10000000, 8, kPagemapPresent | kPagemapLazy},
                {0x20000000, 2, kPagemapPresent | kPagemapLazy}};
  return pm;
}

TEST(Pagemap, RoundTripsThroughCriusFormat) {
  Pagemap pm = sample();
  std::string bytes = serialize_pagemap(pm);
  auto back = parse_pagemap(bytes);
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  EXPECT_EQ(back->pages_id, 7u);
  ASSERT_EQ(back->entries.size(), 3u);
  EXPECT_EQ(back->entries[1].vaddr, 0x10000000u);
  EXPECT_EQ(back->entries[1].nr_pages, 8u);
  EXPECT_EQ(back->entries[1].flags, kPagemapPresent | kPagemapLazy);
  auto [present, lazy] = pagemap_pages(*back);
  EXPECT_EQ(present, 14u);
  EXPECT_EQ(lazy, 10u);
}

TEST(Pagemap, RejectsWhatIsNotOne) {
  EXPECT_FALSE(parse_pagemap("").ok());
  EXPECT_FALSE(parse_pagemap(std::string(8, '\0')).ok());
  std::string bytes = serialize_pagemap(sample());
  EXPECT_FALSE(parse_pagemap(bytes.substr(0, bytes.size() - 3)).ok()) << "truncated entry";
  bytes[0] ^= 1;
  EXPECT_FALSE(parse_pagemap(bytes).ok()) << "wrong magic";
}

TEST(Pagemap, WorkingSetPagesBecomeEagerAndTheOrderStays) {
  Pagemap pm = sample();
  // Pages 2..4 of the first lazy entry, and one page outside any entry (ignored).
  uint64_t eager = make_pages_eager(pm, {{0x10000000 + 2 * P, 3}, {0x30000000, 1}});
  EXPECT_EQ(eager, 3u);
  ASSERT_EQ(pm.entries.size(), 5u);
  EXPECT_EQ(pm.entries[0].vaddr, 0x400000u);
  EXPECT_EQ(pm.entries[1].vaddr, 0x10000000u);
  EXPECT_EQ(pm.entries[1].nr_pages, 2u);
  EXPECT_EQ(pm.entries[1].flags, kPagemapPresent | kPagemapLazy);
  EXPECT_EQ(pm.entries[2].vaddr, 0x10000000u + 2 * P);
  EXPECT_EQ(pm.entries[2].nr_pages, 3u);
  EXPECT_EQ(pm.entries[2].flags, kPagemapPresent);
  EXPECT_EQ(pm.entries[3].vaddr, 0x10000000u + 5 * P);
  EXPECT_EQ(pm.entries[3].nr_pages, 3u);
  EXPECT_EQ(pm.entries[4].vaddr, 0x20000000u);
  // Same pages, same order (pages-<id>.img is read in entry order).
  auto [present, lazy] = pagemap_pages(pm);
  EXPECT_EQ(present, 14u);
  EXPECT_EQ(lazy, 7u);
}

TEST(Pagemap, AWorkingSetCoveringEntriesWhollyOrAcrossThem) {
  Pagemap pm = sample();
  EXPECT_EQ(make_pages_eager(pm, {{0x10000000 + 6 * P, 0x100}}), 2u);  // runs past the entry
  Pagemap across = sample();  // from inside the first lazy entry to inside the second
  EXPECT_EQ(make_pages_eager(across, {{0x10000000 + 6 * P, (0x20001000 - 0x10006000) / P}}), 3u);
  Pagemap all = sample();
  EXPECT_EQ(make_pages_eager(all, {{0x10000000, 8}, {0x20000000, 2}}), 10u);
  EXPECT_EQ(pagemap_pages(all).second, 0u);
  Pagemap none = sample();
  EXPECT_EQ(make_pages_eager(none, {}), 0u);
  EXPECT_EQ(none.entries.size(), 3u);
}

TEST(WorkingSet, FromAFaultRecordAndBackThroughTheFile) {
  auto ws = working_set_from_faults("1 10002000\n1 10001000\n1 10001000\n12 7f0000\n1 10003abc\n");
  ASSERT_TRUE(ws.ok()) << ws.error().to_string();
  ASSERT_EQ(ws->size(), 2u);
  ASSERT_EQ(ws->at(1).size(), 1u);  // merged: 0x10001000..0x10004000
  EXPECT_EQ(ws->at(1)[0].start, 0x10001000u);
  EXPECT_EQ(ws->at(1)[0].pages, 3u);
  EXPECT_EQ(working_set_pages(*ws), 4u);
  auto back = parse_working_set(format_working_set(*ws));
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  EXPECT_EQ(working_set_pages(*back), 4u);
  EXPECT_EQ(back->at(12)[0].start, 0x7f0000u);
}

TEST(WorkingSet, MalformedLinesNameTheLine) {
  auto bad = parse_working_set("# header\n1 1000 1\n1 zz 2\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("line 3"), std::string::npos) << bad.error().message();
  EXPECT_FALSE(parse_working_set("1 1001 1\n").ok()) << "unaligned";
  EXPECT_FALSE(parse_working_set("0 1000 1\n").ok()) << "pid 0";
  EXPECT_FALSE(working_set_from_faults("1\n").ok());
}

TEST(LazyView, LinksEverythingButThePagemapsWhichItRewrites) {
  const stdfs::path dir = stdfs::temp_directory_path() / ("pagemap-test-" + fs::random_hex(4));
  fs::RemoveOnExit cleanup(dir);
  ASSERT_TRUE(fs::make_dirs(dir / "ckpt").ok());
  ASSERT_TRUE(fs::write_file(dir / "ckpt" / "pagemap-1.img", serialize_pagemap(sample())).ok());
  ASSERT_TRUE(fs::write_file(dir / "ckpt" / "pages-7.img", std::string(14 * P, 'x')).ok());
  ASSERT_TRUE(fs::write_file(dir / "ckpt" / "core-1.img", "core").ok());
  WorkingSet ws;
  ws[1] = {{0x20000000, 2}};
  ws[99] = {{0x1000, 1}};  // a task the checkpoint does not have: stale
  auto view = make_lazy_view(dir / "ckpt", dir / "view", ws);
  ASSERT_TRUE(view.ok()) << view.error().to_string();
  EXPECT_EQ(view->pages, 14u);
  EXPECT_EQ(view->working_set, 2u);
  EXPECT_EQ(view->lazy_pages, 8u);
  EXPECT_TRUE(view->working_set_stale);
  EXPECT_TRUE(stdfs::is_symlink(dir / "view" / "pages-7.img"));
  EXPECT_FALSE(stdfs::path(stdfs::read_symlink(dir / "view" / "core-1.img")).is_absolute());
  EXPECT_EQ(*fs::read_file(dir / "view" / "core-1.img"), "core");
  EXPECT_FALSE(stdfs::is_symlink(dir / "view" / "pagemap-1.img"));
  auto pm = parse_pagemap(*fs::read_file(dir / "view" / "pagemap-1.img"));
  ASSERT_TRUE(pm.ok());
  EXPECT_EQ(pagemap_pages(*pm).second, 8u);
  // The checkpoint itself is untouched.
  auto orig = parse_pagemap(*fs::read_file(dir / "ckpt" / "pagemap-1.img"));
  EXPECT_EQ(pagemap_pages(*orig).second, 10u);
  auto pages = checkpoint_pages(dir / "ckpt");
  ASSERT_TRUE(pages.ok());
  EXPECT_EQ(pages->first, 14u);
  EXPECT_EQ(pages->second, 10u);
  EXPECT_FALSE(make_lazy_view(dir / "view-missing", dir / "v2", {}).ok());
}

}  // namespace
}  // namespace prewarm::image
