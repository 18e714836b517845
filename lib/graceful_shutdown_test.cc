#include "lib/graceful_shutdown.h"

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "lib/mapping.h"
#include "lib/pool.h"
#include "lib/process.h"
#include "lib/test_util.h"
#include "lib/testing/work.h"

namespace mp {
namespace {

using namespace std::chrono_literals;
using namespace mp::testing;

PoolOptions options(int workers) {
  PoolOptions o;
  o.workers = workers;
  return o;
}

class GracefulShutdownTest : public ::testing::Test {
 protected:
  void TearDown() override { EXPECT_EQ(leaks_.Check(), ""); }
  testing::LeakCheck leaks_;
};

// Seed 003: SIGTERM to a parent running a pool must let running chunks
// finish, reap every worker, and leave no process behind.
TEST_F(GracefulShutdownTest, SigtermToTheParentLeavesNoProcessBehind) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // orphans would come to us
  struct Shared {
    std::atomic<pid_t> workers[4];
    std::atomic<int> ready;
    std::atomic<int> started;
    std::atomic<int> finished;
  };
  Mapping memory = Mapping::shared(sizeof(Shared));
  auto* shared = new (memory.data()) Shared();
  static Shared* g_shared;
  g_shared = shared;
  Process parent([shared] {
    Pool pool(options(2));
    GracefulShutdown graceful(pool);
    const auto pids = pool.worker_pids();
    for (std::size_t i = 0; i < pids.size(); ++i) shared->workers[i] = pids[i];
    shared->ready = 1;
    const auto items = iota(100000);
    pool.map(
        +[](const std::int64_t& x) {
          g_shared->started.fetch_add(1);
          std::this_thread::sleep_for(1ms);
          g_shared->finished.fetch_add(1);
          return x;
        },
        items, 4);
    return 7;  // never: SIGTERM arrives first
  });
  parent.start();
  while (shared->ready == 0 || shared->finished < 20)
    std::this_thread::sleep_for(1ms);
  parent.terminate();
  ASSERT_TRUE(parent.join(30s));
  EXPECT_EQ(parent.exitcode(), -SIGTERM);
  EXPECT_EQ(shared->started.load(), shared->finished.load())
      << "a running chunk was cut short";
  for (int i = 0; i < 2; ++i) {
    const pid_t pid = shared->workers[i];
    EXPECT_EQ(::kill(pid, 0), -1) << "worker " << pid << " outlived its parent";
  }
  EXPECT_TRUE(testing::child_pids().empty());
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
}

TEST_F(GracefulShutdownTest, OnlyOneAtATimeAndTheDestructorRestoresSigterm) {
  Pool pool(options(1));
  struct sigaction before {};
  ::sigaction(SIGTERM, nullptr, &before);
  {
    GracefulShutdown graceful(pool);
    EXPECT_THROW(GracefulShutdown second(pool), std::logic_error);
  }
  struct sigaction after {};
  ::sigaction(SIGTERM, nullptr, &after);
  EXPECT_EQ(after.sa_handler, before.sa_handler);
  GracefulShutdown again(pool);  // the slot is free again
}

}  // namespace
}  // namespace mp
