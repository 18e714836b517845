#include "bench/ring_pool.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "gtest/gtest.h"

namespace mp::bench {
namespace {

struct Twice {
  std::uint64_t operator()(std::uint64_t x) const { return x * 2; }
};

class RingPoolTest : public ::testing::TestWithParam<WorkerKind> {};

TEST_P(RingPoolTest, MapsEveryItemInPlaceAtEveryChunksize) {
  RingPool<Twice> pool(2, GetParam(), Twice{});
  for (std::size_t n : {0, 1, 7, 10'000, 100'000}) {
    for (std::size_t chunksize : {1, 8, 4096, 5000}) {
      std::vector<std::uint64_t> out(n, 0);
      pool.map(
          n, chunksize, [](std::size_t i) { return std::uint64_t{i}; },
          [&](std::size_t i, std::uint64_t r) { out[i] = r; });
      for (std::size_t i = 0; i < n; ++i)
        ASSERT_EQ(out[i], 2 * i) << "n " << n << " chunksize " << chunksize;
    }
  }
}

TEST_P(RingPoolTest, RejectsBadArguments) {
  EXPECT_THROW(RingPool<Twice>(0, GetParam(), Twice{}), std::invalid_argument);
  RingPool<Twice> pool(1, GetParam(), Twice{});
  EXPECT_THROW(pool.map(
                   1, 0, [](std::size_t) { return std::uint64_t{0}; },
                   [](std::size_t, std::uint64_t) {}),
               std::invalid_argument);
}

struct ThrowsAt7 {
  std::uint64_t operator()(std::uint64_t x) const {
    if (x == 7) throw std::runtime_error("item 7");
    return x;
  }
};

TEST_P(RingPoolTest, FailingKernelIsReportedNotAwaited) {
  RingPool<ThrowsAt7> pool(2, GetParam(), ThrowsAt7{});
  EXPECT_THROW(pool.map(
                   100, 1, [](std::size_t i) { return std::uint64_t{i}; },
                   [](std::size_t, std::uint64_t) {}),
               RingPoolError);
}

INSTANTIATE_TEST_SUITE_P(Kinds, RingPoolTest,
                         ::testing::Values(WorkerKind::kProcesses,
                                           WorkerKind::kThreads));

TEST(RingPoolProcesses, KilledWorkerIsReportedNotAwaited) {
  RingPool<Twice> pool(2, WorkerKind::kProcesses, Twice{});
  const pid_t victim = pool.pids()[0];
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  EXPECT_THROW(pool.map(
                   1'000'000, 1, [](std::size_t i) { return std::uint64_t{i}; },
                   [](std::size_t, std::uint64_t) {}),
               RingPoolError);
  // Unusable afterwards, with a clear error rather than a hang.
  EXPECT_THROW(pool.map(
                   1, 1, [](std::size_t) { return std::uint64_t{0}; },
                   [](std::size_t, std::uint64_t) {}),
               RingPoolError);
  // The dead worker was reaped when it was found: no zombie.
  EXPECT_EQ(::waitpid(victim, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

TEST(RingPoolProcesses, WorkersAreReapedAtDestruction) {
  std::vector<pid_t> pids;
  {
    RingPool<Twice> pool(2, WorkerKind::kProcesses, Twice{});
    pids = pool.pids();
    ASSERT_EQ(pids.size(), 2u);
  }
  for (pid_t pid : pids) {
    // Reaped already: no such child (no zombie left for us to collect).
    EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), -1);
    EXPECT_EQ(errno, ECHILD);
  }
}

}  // namespace
}  // namespace mp::bench
