#include "lib/pool.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <numeric>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/forkserver.h"
#include "lib/mapping.h"
#include "lib/process.h"
#include "lib/start_method.h"
#include "lib/test_util.h"
#include "lib/testing/work.h"

namespace mp {
namespace {

using namespace std::chrono_literals;
using namespace mp::testing;
using ::testing::HasSubstr;

std::int64_t slow_identity(const std::int64_t& x) {
  std::this_thread::sleep_for(2ms);
  return x;
}

std::string describe(const std::int64_t& x) {
  return "item-" + std::to_string(x);
}

PoolOptions options(int workers) {
  PoolOptions o;
  o.workers = workers;
  return o;
}

class PoolTest : public ::testing::Test {
 protected:
  void TearDown() override { EXPECT_EQ(leaks_.Check(), ""); }
  testing::LeakCheck leaks_;
};

TEST_F(PoolTest, MapPreservesOrderForEveryChunksize) {
  Pool pool(options(3));
  const auto items = iota(1000);
  for (std::size_t chunksize : {0, 1, 7, 64, 4096}) {
    EXPECT_EQ(pool.map(twice, items, chunksize),
              serial_map(twice, std::span(items)))
        << "chunksize " << chunksize;
  }
}

std::int64_t worker_pid(const std::int64_t&) { return ::getpid(); }

// A call smaller than the items a worker may queue is split over every
// worker, not queued behind the first (which ran a map of slow items on one
// worker only).
TEST_F(PoolTest, SmallCallIsSplitOverEveryWorker) {
  Pool pool(options(2));
  const std::vector<std::int64_t> pids = pool.map(worker_pid, iota(400), 1);
  std::map<std::int64_t, int> per_worker;
  for (std::int64_t pid : pids) ++per_worker[pid];
  ASSERT_EQ(per_worker.size(), 2u);
  for (const auto& [pid, count] : per_worker)
    EXPECT_GE(count, 100) << "worker " << pid;
}

std::int64_t fail_on_777(const std::int64_t& x) {
  if (x == 777) throw std::runtime_error("777");
  return x;
}

std::int64_t die_on_700(const std::int64_t& x) {
  if (x == 700) ::raise(SIGKILL);
  return x;
}

// Small chunks dealt to one worker travel together in one frame; an error
// and a worker's death still name the exact chunk.
TEST_F(PoolTest, SmallChunksTravelTogetherYetFailuresNameTheirChunk) {
  Pool pool(options(2));
  const auto items = iota(1000);
  try {
    pool.map(fail_on_777, items, 1);
    FAIL() << "map must fail";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.item_index(), 777u);
    EXPECT_THAT(e.what(), HasSubstr("item 777 (chunk 777 of"));
  }
  try {
    pool.map(die_on_700, items, 3);
    FAIL() << "map must fail";
  } catch (const WorkerLost& e) {
    EXPECT_THAT(e.what(),
                HasSubstr("while running chunk 233 (items 699..701)"));
    EXPECT_EQ(e.first_item(), 699u);
    EXPECT_EQ(e.count(), 3u);
  }
  std::vector<std::int64_t> out(items.size());
  pool.map_into(twice, std::span(items), std::span(out), 1);
  EXPECT_EQ(out, serial_map(twice, std::span(items)));
}

TEST_F(PoolTest, MapOfNonTrivialResults) {
  Pool pool(options(2));
  const auto items = iota(50);
  const auto out = pool.map(describe, items, 4);
  ASSERT_EQ(out.size(), 50u);
  EXPECT_EQ(out[0], "item-0");
  EXPECT_EQ(out[49], "item-49");
}

std::size_t length_of(const std::string& s) { return s.size(); }

// Strings of many sizes (the empty one included) are encoded straight into
// the task ring (Codec<std::string>::encoded_size) and arrive intact.
TEST_F(PoolTest, ItemsOfVaryingSizeArriveIntact) {
  Pool pool(options(2));
  std::vector<std::string> items;
  for (std::size_t i = 0; i < 300; ++i)
    items.push_back(std::string(i * 37 % 1000, 'a' + i % 26));
  std::vector<std::size_t> expected;
  for (const auto& s : items) expected.push_back(s.size());
  for (std::size_t chunksize : {1, 7, 64, 300})
    EXPECT_EQ(pool.map(length_of, items, chunksize), expected) << chunksize;
}

TEST_F(PoolTest, MapIntoWritesTheCallersBuffer) {
  Pool pool(options(2));
  const auto items = iota(1000);
  const auto expected = serial_map(twice, std::span(items));
  std::vector<std::int64_t> out(items.size(), -1);
  for (std::size_t chunksize : {0, 1, 7, 64, 4096}) {
    std::fill(out.begin(), out.end(), -1);
    const std::int64_t* before = out.data();
    pool.map_into(twice, std::span(items), std::span(out), chunksize);
    EXPECT_EQ(out, expected) << "chunksize " << chunksize;
    EXPECT_EQ(out.data(), before) << "the caller's buffer, not a new one";
  }
  std::vector<std::string> names;
  pool.map_into(describe, items, names, 8);
  ASSERT_EQ(names.size(), items.size());
  EXPECT_EQ(names[999], "item-999");
  std::vector<std::int64_t> empty;
  pool.map_into(twice, std::vector<std::int64_t>{}, empty);
  EXPECT_TRUE(empty.empty());
}

TEST_F(PoolTest, MapIntoRefusesABufferOfAnotherSizeAndReportsErrors) {
  Pool pool(options(2));
  const auto items = iota(100);
  std::vector<std::int64_t> short_out(99);
  EXPECT_THROW(pool.map_into(twice, std::span(items), std::span(short_out)),
               std::invalid_argument);
  std::vector<std::int64_t> out(100);
  try {
    pool.map_into(fail_on_17, std::span(items), std::span(out), 8);
    FAIL() << "map_into must fail";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.item_index(), 17u);
  }
  pool.map_into(twice, std::span(items), std::span(out), 8);
  EXPECT_EQ(out, serial_map(twice, std::span(items)));
}

// A worker killed with chunks of other calls waiting in its ring: the one it
// ran fails, the others run in its replacement (which gets fresh rings and
// copies of them).
TEST_F(PoolTest, ChunksQueuedForAKilledWorkerRunInItsReplacement) {
  Pool pool(options(1));
  auto dies = pool.apply_async(die_on_7, std::int64_t{7});
  auto one = pool.apply_async(twice, std::int64_t{1});
  auto two = pool.apply_async(twice, std::int64_t{2});
  EXPECT_THROW(dies.get(), WorkerLost);
  EXPECT_EQ(one.get(), 2);
  EXPECT_EQ(two.get(), 4);
  EXPECT_EQ(pool.workers_started(), 2u);
  const auto items = iota(300);
  EXPECT_EQ(pool.map(twice, items, 1), serial_map(twice, std::span(items)));
}

TEST_F(PoolTest, EmptyInputAndChunksizeLargerThanInput) {
  Pool pool(options(2));
  const std::vector<std::int64_t> none;
  EXPECT_TRUE(pool.map(twice, none).empty());
  EXPECT_EQ(pool.imap(twice, std::span(none)).next(), std::nullopt);
  const auto five = iota(5);
  EXPECT_EQ(pool.map(twice, five, 1000),
            (std::vector<std::int64_t>{0, 2, 4, 6, 8}));
}

TEST_F(PoolTest, DefaultChunksizeFollowsCPython) {
  EXPECT_EQ(default_chunksize(0, 4), 1u);
  EXPECT_EQ(default_chunksize(100, 2), 13u);  // ceil(100 / 8)
  EXPECT_EQ(default_chunksize(13, 5), 1u);
  EXPECT_EQ(default_chunksize(10000, 2), 1250u);
}

TEST_F(PoolTest, DefaultChunkOfLargeItemsStopsAtItsByteBudget) {
  // Small items: CPython's count, whatever the size.
  EXPECT_EQ(default_chunksize(10000, 2, sizeof(double)), 1250u);
  EXPECT_EQ(default_chunksize(10000, 2, 0), 1250u);  // size unknown
  // 64 KiB (+ its 8-byte length) items: 3 to 256 KiB, not 128.
  static_assert(kDefaultChunkBytes == 256 << 10);
  EXPECT_EQ(default_chunksize(1024, 2, 65536 + 8), 3u);
  // An item larger than the budget travels alone.
  EXPECT_EQ(default_chunksize(1024, 2, kDefaultChunkBytes * 3), 1u);
  EXPECT_EQ(internal::mean_encoded_bytes(std::span<const double>()), 0u);
  const std::vector<std::vector<std::uint8_t>> sizes = {
      std::vector<std::uint8_t>(100), std::vector<std::uint8_t>(301)};
  // Each vector's length prefix and bytes, averaged and rounded up.
  const std::size_t mean = internal::mean_encoded_bytes(
      std::span<const std::vector<std::uint8_t>>(sizes));
  EXPECT_EQ(mean,
            (Codec<std::vector<std::uint8_t>>::encoded_size(sizes[0]) +
             Codec<std::vector<std::uint8_t>>::encoded_size(sizes[1]) + 1) /
                2);
}

TEST_F(PoolTest, MapOfLargeItemsAtTheDefaultChunksize) {
  // 64 items of 256 KiB (and their lengths): one to a default chunk
  // (CPython's would be 8), every result in its place.
  Pool pool(options(2));
  std::vector<std::vector<std::uint8_t>> items;
  for (std::size_t i = 0; i < 64; ++i)
    items.emplace_back(256 << 10, static_cast<std::uint8_t>(i));
  const auto sums = pool.map(
      +[](const std::vector<std::uint8_t>& v) -> std::uint64_t {
        std::uint64_t sum = 0;
        for (std::uint8_t b : v) sum += b;
        return sum;
      },
      items);
  ASSERT_EQ(sums.size(), items.size());
  for (std::size_t i = 0; i < items.size(); ++i)
    EXPECT_EQ(sums[i], (i % 256) * (256 << 10)) << i;
}

TEST_F(PoolTest, FunctionTakingASpanReadsVectorItemsWhereTheyArrived) {
  // A chunk's items lie back to back in its task message, each behind its
  // 8-byte length: read in place, consecutive items of 100 bytes start 108
  // bytes apart. Decoded copies would be separate vectors.
  Pool pool(options(2));
  std::vector<std::vector<std::uint8_t>> items;
  for (std::size_t i = 0; i < 64; ++i)
    items.emplace_back(100, static_cast<std::uint8_t>(i));
  const auto where = pool.map(
      +[](std::span<const std::uint8_t> v) -> std::uintptr_t {
        if (v.size() != 100 || v[0] != v[99]) throw std::runtime_error("bad");
        return reinterpret_cast<std::uintptr_t>(v.data());
      },
      items, /*chunksize=*/4);
  ASSERT_EQ(where.size(), items.size());
  for (std::size_t i = 0; i < items.size(); i += 4) {
    for (std::size_t j = 1; j < 4; ++j)
      EXPECT_EQ(where[i + j] - where[i + j - 1], 108u) << i + j;
  }
}

TEST_F(PoolTest, FunctionTakingASpanSeesEveryItemIntact) {
  Pool pool(options(2));
  std::vector<std::vector<double>> items;
  for (std::size_t i = 0; i < 300; ++i)
    items.emplace_back(i % 37, 0.5 * static_cast<double>(i));
  const auto sum = +[](std::span<const double> v) {
    double total = 0;
    for (double x : v) total += x;
    return total;
  };
  const std::vector<double> expected = serial_map(sum, items);
  for (std::size_t chunksize : {0, 1, 7, 300}) {
    EXPECT_EQ(pool.map(sum, items, chunksize), expected) << chunksize;
    std::vector<double> unordered;
    for (double r : pool.imap_unordered(sum, std::span(items), chunksize))
      unordered.push_back(r);
    std::vector<double> sorted = expected;
    std::sort(sorted.begin(), sorted.end());
    std::sort(unordered.begin(), unordered.end());
    EXPECT_EQ(unordered, sorted) << chunksize;
  }
  EXPECT_EQ(pool.apply_async(sum, items[36]).get(), expected[36]);
}

TEST(ReadViewTest, ElementsOutOfAlignmentAreCopied) {
  // A length prefix and three uint64_t, once at an aligned offset (viewed
  // in place) and once one byte further (copied into the scratch vector).
  const std::uint64_t values[] = {3, 11, 22, 33};
  alignas(8) std::byte storage[sizeof values + 8];
  std::vector<std::uint64_t> scratch;
  for (std::size_t offset : {0, 1}) {
    std::memcpy(storage + offset, values, sizeof values);
    Reader reader(std::span<const std::byte>(storage + offset, sizeof values));
    const auto view = internal::read_view<std::uint64_t>(reader, scratch);
    ASSERT_EQ(view.size(), 3u);
    EXPECT_EQ(view[0], 11u);
    EXPECT_EQ(view[2], 33u);
    EXPECT_EQ(reader.remaining(), 0u);
    if (offset == 0) {
      EXPECT_EQ(static_cast<const void*>(view.data()),
                static_cast<const void*>(storage + 8));
    } else {
      EXPECT_EQ(view.data(), scratch.data());
    }
  }
  // A length the rest cannot hold is the codec's DecodeError.
  const std::uint64_t too_long = 4;
  Reader reader(std::as_bytes(std::span(&too_long, 1)));
  EXPECT_THROW(internal::read_view<std::uint64_t>(reader, scratch),
               DecodeError);
}

TEST_F(PoolTest, ImapIsOrderedAndLazy) {
  Pool pool(options(2));
  const auto items = iota(500);
  std::int64_t expected = 0;
  for (std::int64_t r : pool.imap(twice, std::span(items), 3)) {
    EXPECT_EQ(r, 2 * expected);
    ++expected;
  }
  EXPECT_EQ(expected, 500);
}

TEST_F(PoolTest, ImapUnorderedDeliversEachItemExactlyOnce) {
  Pool pool(options(3));
  const auto items = iota(2000);
  std::multiset<std::int64_t> seen;
  for (std::int64_t r : pool.imap_unordered(twice, std::span(items), 5))
    seen.insert(r);
  ASSERT_EQ(seen.size(), 2000u);
  for (std::int64_t i = 0; i < 2000; ++i) EXPECT_EQ(seen.count(2 * i), 1u) << i;
}

TEST_F(PoolTest, ExceptionNamesTheItemAndThePoolStaysUsable) {
  Pool pool(options(2));
  const auto items = iota(100);
  try {
    pool.map(fail_on_17, items, 8);
    FAIL() << "map must fail";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.item_index(), 17u);
    EXPECT_THAT(
        e.what(),
        HasSubstr("item 17 (chunk 2 of call #0) raised: seventeen is unlucky"));
  }
  EXPECT_EQ(pool.map(twice, items, 8), serial_map(twice, std::span(items)));
}

TEST_F(PoolTest, ApplyAsync) {
  Pool pool(options(2));
  auto a = pool.apply_async(twice, std::int64_t{21});
  auto b = pool.apply_async(fail_on_17, std::int64_t{17});
  EXPECT_EQ(a.get(), 42);
  EXPECT_EQ(a.get(1s), 42);
  EXPECT_TRUE(a.ready());
  EXPECT_TRUE(a.successful());
  b.wait();
  EXPECT_TRUE(b.ready());
  EXPECT_FALSE(b.successful());
  EXPECT_THROW(b.get(), TaskError);
  auto slow = pool.apply_async(slow_identity, std::int64_t{5});
  EXPECT_THROW(slow.successful(), std::logic_error);  // not ready yet
  EXPECT_EQ(slow.get(10s), 5);
}

TEST_F(PoolTest, WorkerKilledMidChunkFailsTheCallNamingTheChunk) {
  Pool pool(options(2));
  const auto items = iota(40);
  try {
    pool.map(die_on_7, items, 4);
    FAIL() << "map must fail";
  } catch (const WorkerLost& e) {
    EXPECT_THAT(e.what(), HasSubstr("was killed by signal 9"));
    EXPECT_THAT(e.what(), HasSubstr("while running chunk 1 (items 4..7)"));
  }
  EXPECT_GE(pool.workers_started(), 3u);  // replaced
  EXPECT_EQ(pool.map(twice, items, 4), serial_map(twice, std::span(items)));
}

TEST_F(PoolTest, WorkerKilledFromOutsideIsReplacedAndNothingHangs) {
  Pool pool(options(2));
  const auto items = iota(400);
  auto results = pool.imap(slow_identity, std::span(items), 2);
  ASSERT_EQ(results.next(), 0);
  ::kill(pool.worker_pids()[0], SIGKILL);
  std::size_t delivered = 1;
  try {
    while (auto r = results.next()) ++delivered;
    // The killed worker may have been idle: then every item arrives.
    EXPECT_EQ(delivered, 400u);
  } catch (const WorkerLost& e) {
    EXPECT_THAT(e.what(), HasSubstr("killed by signal 9"));
  }
  EXPECT_EQ(pool.map(twice, items), serial_map(twice, std::span(items)));
}

TEST_F(PoolTest, MaxTasksPerChildRecyclesWorkersWithoutLosingTasks) {
  PoolOptions o = options(2);
  o.max_tasks_per_child = 3;
  Pool pool(o);
  const auto items = iota(60);
  EXPECT_EQ(pool.map(twice, items, 2), serial_map(twice, std::span(items)));
  EXPECT_GE(pool.workers_started(), 10u);  // 30 chunks / 3 per worker
}

// Found under --config=asan (MaxTasksPerChildRecycles... hung): a worker
// that retired and exited before the pool read its "retiring" message was
// replaced twice, by the health check and again by that message, read while
// the first replacement was under way; a later "retiring" message from a
// replaced generation then made the pool join a live, idle worker forever.
// A consumer slower than the 20 ms health interval lets retirements pile up
// behind its back, so every pause below sets the scene.
TEST_F(PoolTest, RetiredWorkersSeenDeadAreReplacedOnce) {
  PoolOptions o = options(2);
  o.max_tasks_per_child = 1;
  Pool pool(o);
  constexpr std::size_t kItems = 200;
  const auto items = iota(kItems);
  auto results = pool.imap_unordered(twice, std::span(items), 1);
  std::int64_t sum = 0;
  std::size_t count = 0;
  while (auto value = results.next(10s)) {  // a hang fails here
    sum += *value;
    if (++count % 10 == 0) std::this_thread::sleep_for(25ms);
  }
  EXPECT_EQ(count, kItems);
  EXPECT_EQ(sum, static_cast<std::int64_t>(kItems * (kItems - 1)));
  // One worker per task, plus the two first: never one started twice over.
  EXPECT_LE(pool.workers_started(), kItems + 2);
}

TEST_F(PoolTest, InitializerRunsOncePerWorker) {
  Mapping counter_memory = Mapping::shared(sizeof(std::atomic<int>));
  auto* counter = static_cast<std::atomic<int>*>(counter_memory.data());
  PoolOptions o = options(3);
  o.initializer = [counter] { counter->fetch_add(1); };
  {
    Pool pool(o);
    const auto items = iota(100);
    pool.map(twice, items, 1);
    pool.close();
    pool.join();
    EXPECT_EQ(counter->load(), 3);
    EXPECT_EQ(pool.workers_started(), 3u);
  }
}

TEST_F(PoolTest, InitializerFailureBreaksThePoolClearly) {
  PoolOptions o = options(2);
  o.initializer = [] { throw std::runtime_error("no database"); };
  Pool pool(o);
  const auto items = iota(10);
  try {
    pool.map(twice, items);
    FAIL();
  } catch (const PoolError& e) {
    EXPECT_THAT(e.what(), HasSubstr("initializer failed"));
  }
}

TEST_F(PoolTest, CloseJoinAndTerminate) {
  Pool pool(options(2));
  auto pending = pool.apply_async(slow_identity, std::int64_t{3});
  EXPECT_THROW(pool.join(), std::logic_error);  // close first, as in Python
  pool.close();
  const auto items = iota(3);
  EXPECT_THROW(pool.map(twice, items), PoolError);
  pool.join();
  EXPECT_EQ(pending.get(), 3);  // submitted work finished before join returned
  for (pid_t pid : pool.worker_pids()) EXPECT_EQ(::kill(pid, 0), -1);

  Pool other(options(2));
  auto doomed = other.apply_async(slow_identity, std::int64_t{1});
  other.terminate();
  EXPECT_THROW(doomed.get(), PoolError);
  for (pid_t pid : other.worker_pids()) EXPECT_EQ(::kill(pid, 0), -1);
}

TEST_F(PoolTest, ChunkLargerThanTheTaskQueueIsAClearError) {
  PoolOptions o = options(1);
  o.task_queue_bytes = 1024;
  Pool pool(o);
  const auto items = iota(1000);  // 8000 bytes in one chunk
  try {
    pool.map(twice, items, 1000);
    FAIL();
  } catch (const MessageTooLong& e) {
    EXPECT_THAT(
        e.what(),
        HasSubstr("raise PoolOptions::task_queue_bytes or lower chunksize"));
  }
  EXPECT_EQ(pool.map(twice, items, 10), serial_map(twice, std::span(items)));
}

// CPython's default would make chunks of 12,500 8-byte items (100 KB) for
// 100,000 items on 2 workers: more than one message of a 64 KiB ring. The
// default chunksize shrinks to fit instead of failing.
TEST_F(PoolTest, DefaultChunksizeFitsChunksInTheRings) {
  PoolOptions o = options(2);
  o.task_queue_bytes = 64 << 10;
  o.result_queue_bytes = 64 << 10;
  Pool pool(o);
  const auto items = iota(100000);
  const auto expected = serial_map(twice, std::span(items));
  EXPECT_EQ(pool.map(twice, items), expected);
  std::vector<std::int64_t> out(items.size());
  pool.map_into(twice, items, std::span(out));
  EXPECT_EQ(out, expected);
  // An explicit chunksize is the caller's: it still meets the limit.
  EXPECT_THROW(pool.map(twice, items, 12500), MessageTooLong);
}

TEST_F(PoolTest, AnyContiguousRangeOfItems) {
  Pool pool(options(2));
  std::vector<std::int64_t> items = iota(50);
  const auto expected = serial_map(twice, items);
  EXPECT_EQ(pool.map(twice, items), expected);             // non-const vector
  EXPECT_EQ(pool.map(twice, std::span(items)), expected);  // std::span<T>
  EXPECT_EQ(pool.map(twice, std::span<const std::int64_t>(items)), expected);
  std::array<std::int64_t, 3> array{1, 2, 3};
  EXPECT_EQ(pool.map(twice, array), (std::vector<std::int64_t>{2, 4, 6}));
  std::int64_t c_array[] = {4, 5};
  EXPECT_EQ(pool.map(twice, c_array), (std::vector<std::int64_t>{8, 10}));
  std::vector<std::int64_t> got;
  for (std::int64_t r : pool.imap(twice, std::span(items), 7)) got.push_back(r);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(pool.apply_async(twice, std::int64_t{21}).get(), 42);
  // What fn may be, as concepts (a capturing lambda is refused at compile
  // time with internal::PoolFunction named in the error).
  const std::int64_t offset = 1;
  auto capturing = [offset](const std::int64_t& x) { return x + offset; };
  auto captureless = [](const std::int64_t& x) { return x; };
  static_assert(!internal::PoolFunction<decltype(capturing), std::int64_t>);
  static_assert(internal::PoolFunction<decltype(captureless), std::int64_t>);
  static_assert(internal::PoolFunction<decltype(&twice), std::int64_t>);
  EXPECT_EQ(capturing(1), 2);
}

TEST_F(PoolTest, NonStandardExceptionNamesTheExactItemInEveryFlavour) {
  Pool pool(options(2));
  const auto items = iota(40);
  auto expect_item_13 = [](auto&& call) {
    try {
      call();
      ADD_FAILURE() << "throw 42 must fail the call";
    } catch (const TaskError& e) {
      EXPECT_EQ(e.item_index(), 13u);
      EXPECT_THAT(e.what(), HasSubstr("item 13 "));
      EXPECT_THAT(e.what(), HasSubstr("not derived from std::exception"));
    }
  };
  expect_item_13([&] { pool.map(throw_42_on_13, items, 4); });
  expect_item_13([&] {
    for (auto r : pool.imap(throw_42_on_13, std::span(items), 4)) (void)r;
  });
  expect_item_13([&] {
    for (auto r : pool.imap_unordered(throw_42_on_13, std::span(items), 4))
      (void)r;
  });
  try {
    pool.apply_async(throw_42_on_13, std::int64_t{13}).get();
    ADD_FAILURE();
  } catch (const TaskError& e) {
    EXPECT_THAT(e.what(), HasSubstr("not derived from std::exception"));
  }
  EXPECT_EQ(pool.workers_started(), 2u) << "no worker died";
  EXPECT_EQ(pool.map(twice, items), serial_map(twice, std::span(items)));
}

TEST_F(PoolTest, ResultsLargerThanTheResultQueueAreMessageTooLong) {
  PoolOptions o = options(2);
  o.result_queue_bytes = 64 << 10;
  Pool pool(o);
  const auto items = iota(4);
  try {
    pool.map(mebibyte, items, 1);
    FAIL() << "1 MiB results cannot travel through a 64 KiB queue";
  } catch (const MessageTooLong& e) {
    EXPECT_THAT(e.what(), HasSubstr("raise PoolOptions::result_queue_bytes"));
    EXPECT_GT(e.length(), e.limit());
  }
  EXPECT_THROW(pool.apply_async(mebibyte, std::int64_t{1}).get(),
               MessageTooLong);
  PoolOptions tiny = options(1);
  tiny.result_queue_bytes = 1024;  // could not even carry the report
  EXPECT_THROW(Pool{tiny}, std::invalid_argument);
  EXPECT_EQ(pool.workers_started(), 2u) << "no worker died";
  EXPECT_EQ(pool.map(twice, items), serial_map(twice, std::span(items)));
}

// A program that ignores SIGCHLD: the kernel reaps the workers, so their
// exit statuses are gone. The pool still sees a worker die, says so, and
// replaces it; nothing hangs and the pool keeps its size.
TEST_F(PoolTest, WorkersReapedElsewhereAreNoticedAndReplaced) {
  struct sigaction ignore {
  }, previous{};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGCHLD, &ignore, &previous), 0);
  {
    Pool pool(options(2));
    const auto items = iota(20);
    EXPECT_EQ(pool.map(twice, items), serial_map(twice, std::span(items)));
    for (int round = 0; round < 2; ++round) {
      try {
        pool.map(die_on_5, items, 1);
        ADD_FAILURE() << "a killed worker must fail the call";
      } catch (const WorkerLost& e) {
        EXPECT_THAT(e.what(),
                    HasSubstr("exit status unavailable (reaped elsewhere)"));
        EXPECT_EQ(e.first_item(), 5u);
      }
    }
    EXPECT_EQ(pool.map(twice, items), serial_map(twice, std::span(items)));
    EXPECT_EQ(pool.workers_started(), 4u);
    const auto pids = pool.worker_pids();
    ASSERT_EQ(pids.size(), 2u);
    for (pid_t pid : pids) EXPECT_TRUE(testing::process_running(pid));
    pool.close();
    pool.join();
  }
  ASSERT_EQ(::sigaction(SIGCHLD, &previous, nullptr), 0);
}

// A program with a thread that reaps every child (waitpid(-1)).
TEST_F(PoolTest, WorkersReapedByAnotherThreadAreNoticedAndReplaced) {
  std::atomic<bool> stop{false};
  std::thread reaper([&] {
    while (!stop) {
      int status;
      if (::waitpid(-1, &status, WNOHANG) <= 0)
        std::this_thread::sleep_for(1ms);
    }
  });
  {
    Pool pool(options(2));
    const auto items = iota(20);
    for (int round = 0; round < 3; ++round) {
      try {
        pool.map(die_on_5, items, 1);
        ADD_FAILURE() << "a killed worker must fail the call";
      } catch (const WorkerLost& e) {
        EXPECT_EQ(e.first_item(), 5u);
      }
    }
    EXPECT_EQ(pool.map(twice, items), serial_map(twice, std::span(items)));
    EXPECT_EQ(pool.worker_pids().size(), 2u);
    EXPECT_EQ(pool.workers_started(), 5u);
    pool.close();
    pool.join();
  }
  stop = true;
  reaper.join();
}

// --- Every start method -----------------------------------------------------
// The pool's fault rules, run with workers started by fork, by the fork server
// and by spawn (workers that are not copies of this process).

PoolOptions options(int workers, StartMethod method) {
  PoolOptions o = options(workers);
  o.start = method;
  return o;
}

class PoolStartTest : public ::testing::TestWithParam<StartMethod> {
 protected:
  void TearDown() override {
    ForkServer::stop();
    EXPECT_EQ(leaks_.Check(), "");
  }
  testing::LeakCheck leaks_;
};

int g_initialized = 0;
void initialize() { g_initialized = 42; }
std::int64_t initialized_plus(const std::int64_t& x) {
  return g_initialized + x;
}

TEST_P(PoolStartTest, MapImapAndApplyAsync) {
  Pool pool(options(2, GetParam()));
  EXPECT_EQ(pool.start_method(), GetParam());
  const auto items = iota(1000);
  for (std::size_t chunksize : {0, 1, 64}) {
    EXPECT_EQ(pool.map(twice, items, chunksize),
              serial_map(twice, std::span(items)));
  }
  EXPECT_EQ(pool.map(describe, items), serial_map(describe, std::span(items)));
  std::int64_t sum = 0;
  for (std::int64_t r : pool.imap_unordered(twice, std::span(items), 7))
    sum += r;
  EXPECT_EQ(sum, 999 * 1000);
  EXPECT_EQ(pool.apply_async(twice, std::int64_t{21}).get(), 42);
  try {
    pool.map(fail_on_17, items, 4);
    FAIL() << "map must fail";
  } catch (const TaskError& e) {
    EXPECT_THAT(e.what(), HasSubstr("item 17"));
  }
  pool.close();
  pool.join();
}

TEST_P(PoolStartTest, WorkerKilledMidChunkIsReportedAndReplaced) {
  Pool pool(options(2, GetParam()));
  const auto items = iota(40);
  try {
    pool.map(die_on_7, items, 4);
    FAIL() << "map must fail";
  } catch (const WorkerLost& e) {
    EXPECT_THAT(e.what(), HasSubstr("was killed by signal 9"));
    EXPECT_THAT(e.what(), HasSubstr("while running chunk 1 (items 4..7)"));
  }
  EXPECT_GE(pool.workers_started(), 3u);
  EXPECT_EQ(pool.map(twice, items, 4), serial_map(twice, std::span(items)));
  // Chunks queued behind the one that kills its worker run in the
  // replacement, through the fresh rings it is handed.
  Pool one(options(1, GetParam()));
  auto dies = one.apply_async(die_on_7, std::int64_t{7});
  auto after = one.apply_async(twice, std::int64_t{2});
  EXPECT_THROW(dies.get(), WorkerLost);
  EXPECT_EQ(after.get(), 4);
}

TEST_P(PoolStartTest, MaxTasksPerChildReplacesWorkersWithoutLosingTasks) {
  PoolOptions o = options(2, GetParam());
  o.max_tasks_per_child = 3;
  Pool pool(o);
  const auto items = iota(60);
  EXPECT_EQ(pool.map(twice, items, 2), serial_map(twice, std::span(items)));
  EXPECT_GE(pool.workers_started(), 10u);
}

TEST_P(PoolStartTest, CloseJoinAndTerminateLeaveNoWorker) {
  Pool pool(options(2, GetParam()));
  auto pending = pool.apply_async(slow_identity, std::int64_t{3});
  pool.close();
  pool.join();
  EXPECT_EQ(pending.get(), 3);
  for (pid_t pid : pool.worker_pids()) EXPECT_EQ(::kill(pid, 0), -1);
  Pool other(options(2, GetParam()));
  auto doomed = other.apply_async(slow_identity, std::int64_t{1});
  other.terminate();
  EXPECT_THROW(doomed.get(), PoolError);
  for (pid_t pid : other.worker_pids()) EXPECT_EQ(::kill(pid, 0), -1);
}

TEST_P(PoolStartTest, InitializerRunsInEveryWorker) {
  PoolOptions o = options(2, GetParam());
  o.initializer = &initialize;  // a plain function: any method can run it
  o.max_tasks_per_child = 2;    // replacements run it too
  Pool pool(o);
  const auto items = iota(20);
  const auto got = pool.map(initialized_plus, items, 1);
  for (std::size_t i = 0; i < items.size(); ++i)
    EXPECT_EQ(got[i], 42 + items[i]);

  PoolOptions failing = options(1, GetParam());
  failing.initializer = +[] { throw std::runtime_error("no database"); };
  Pool broken(failing);
  try {
    broken.map(twice, items);
    FAIL();
  } catch (const PoolError& e) {
    EXPECT_THAT(e.what(), HasSubstr("initializer failed"));
  }
}

TEST_P(PoolStartTest, SigtermToTheParentLeavesNoProcessBehind) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // orphans come to us
  struct Shared {
    std::atomic<pid_t> workers[2];
    std::atomic<pid_t> server;
    std::atomic<int> ready;
  };
  Mapping memory = Mapping::shared(sizeof(Shared));
  auto* shared = new (memory.data()) Shared();
  const StartMethod method = GetParam();
  Process parent([shared, method] {
    Pool pool(options(2, method));
    const auto pids = pool.worker_pids();
    for (std::size_t i = 0; i < 2; ++i) shared->workers[i] = pids[i];
    shared->server = ForkServer::pid();
    shared->ready = 1;
    const auto items = iota(100000);
    pool.map(slow_identity, items, 1);
    return 7;  // never: SIGTERM arrives first
  });
  parent.set_start_method(StartMethod::fork);
  parent.start();
  while (shared->ready == 0) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(20ms);
  parent.terminate();
  ASSERT_TRUE(parent.join(30s));
  EXPECT_EQ(parent.exitcode(), -SIGTERM);
  std::vector<pid_t> left = {shared->workers[0], shared->workers[1]};
  if (shared->server != 0) left.push_back(shared->server);
  for (pid_t pid : left) {
    EXPECT_TRUE(testing::wait_until_gone(pid, 5000ms))
        << "pid " << pid << " outlived its parent";
    // Orphans came to us (subreaper): reap them as init would.
    if (testing::process_state(pid) == 'Z') ::waitpid(pid, nullptr, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Methods, PoolStartTest,
                         ::testing::Values(StartMethod::fork,
                                           StartMethod::forkserver,
                                           StartMethod::spawn),
                         [](const ::testing::TestParamInfo<StartMethod>& info) {
                           return std::string(to_string(info.param));
                         });

class PoolStartErrorsTest : public PoolStartTest {};

TEST_F(PoolStartErrorsTest, AClosureInitializerNeedsFork) {
  for (StartMethod method : {StartMethod::forkserver, StartMethod::spawn}) {
    PoolOptions o = options(1, method);
    int state = 1;
    o.initializer = [state] { (void)state; };
    try {
      Pool pool(o);
      FAIL() << "a closure initializer under " << to_string(method);
    } catch (const std::logic_error& e) {
      EXPECT_THAT(e.what(), HasSubstr("plain function pointer"));
    }
  }
}

TEST_F(PoolStartErrorsTest, DefaultIsTheProcessWideStartMethod) {
  set_start_method(StartMethod::spawn);
  Pool pool(options(1));
  set_start_method(StartMethod::fork);
  EXPECT_EQ(pool.start_method(), StartMethod::spawn);
  EXPECT_EQ(pool.apply_async(twice, std::int64_t{4}).get(), 8);
}

// The fork server SIGKILLed under a pool: a worker that must be replaced
// cannot be, and the pool says so (no hang); a new pool cannot start.
TEST_F(PoolStartErrorsTest, KilledForkServerBreaksThePoolClearly) {
  ForkServer::start();
  const pid_t server = ForkServer::pid();
  Pool pool(options(1, StartMethod::forkserver));
  ASSERT_EQ(::kill(server, SIGKILL), 0);
  ASSERT_TRUE(testing::wait_until_gone(server, 5000ms));
  const auto items = iota(10);
  EXPECT_THROW(pool.map(die_on_7, items, 1), WorkerLost);
  try {
    pool.map(twice, items);
    FAIL() << "a pool without workers ran a map";
  } catch (const PoolError& e) {
    EXPECT_THAT(e.what(), HasSubstr("a worker could not be started"));
    EXPECT_THAT(e.what(), HasSubstr("has died"));
  }
  EXPECT_THROW(Pool(options(1, StartMethod::forkserver)), PeerError);
}

}  // namespace
}  // namespace mp
