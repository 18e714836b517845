#include "lib/wait.h"

#include <atomic>
#include <chrono>
#include <new>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/error.h"
#include "lib/mapping.h"
#include "lib/peers.h"
#include "lib/process.h"

namespace mp::internal {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

WaitPolicy short_slices(std::chrono::nanoseconds spin = 0ns) {
  WaitPolicy policy;
  policy.spin = spin;
  policy.liveness_check = 5ms;
  return policy;
}

TEST(DeadlineTest, NeverNowAndAfter) {
  EXPECT_TRUE(Deadline().never());
  EXPECT_FALSE(Deadline().passed());
  EXPECT_EQ(Deadline().remaining(7ms), 7ms);
  EXPECT_TRUE(Deadline::now().passed());
  EXPECT_EQ(Deadline::now().remaining(7ms), 0ns);
  const Deadline later = Deadline::after(1h);
  EXPECT_FALSE(later.passed());
  EXPECT_EQ(later.remaining(7ms), 7ms);
}

TEST(WaitSliceTest, ReadyAtOnceNeitherSpinsNorBlocks) {
  int blocks = 0;
  EXPECT_EQ(wait_slice(
                short_slices(1s), Deadline(), [] { return true; },
                [&](std::chrono::nanoseconds) { return ++blocks, false; }),
            WaitResult::kReady);
  EXPECT_EQ(blocks, 0);
}

TEST(WaitSliceTest, PassedDeadlineTimesOutWithoutBlocking) {
  int blocks = 0;
  EXPECT_EQ(wait_slice(
                short_slices(1s), Deadline::now(), [] { return false; },
                [&](std::chrono::nanoseconds) { return ++blocks, false; }),
            WaitResult::kTimedOut);
  EXPECT_EQ(blocks, 0);
}

TEST(WaitSliceTest, BlocksOneSliceThenAsksForAPeerCheck) {
  std::chrono::nanoseconds asked{0};
  EXPECT_EQ(wait_slice(
                short_slices(), Deadline(), [] { return false; },
                [&](std::chrono::nanoseconds slice) {
                  asked = slice;
                  return false;
                }),
            WaitResult::kCheckPeers);
  EXPECT_EQ(asked, 5ms);  // policy.liveness_check
  EXPECT_EQ(wait_slice(
                short_slices(), Deadline(), [] { return false; },
                [](std::chrono::nanoseconds) { return true; }),
            WaitResult::kReady);
}

TEST(WaitSliceTest, SpinSeesAConditionThatBecomesTrue) {
  int checks = 0;
  EXPECT_EQ(wait_slice(
                short_slices(10s), Deadline(), [&] { return ++checks > 100; },
                [](std::chrono::nanoseconds) { return false; }),
            WaitResult::kReady);
  EXPECT_GT(checks, 100);
}

TEST(SharedEventTest, NotifyWakesASleeper) {
  SharedEvent event;
  std::atomic<bool> flag{false};
  std::thread waker([&] {
    std::this_thread::sleep_for(10ms);
    flag = true;
    event.notify_all();
  });
  EXPECT_EQ(wait_for(event, WaitPolicy::block_only(), Deadline::after(10s),
                     [&] { return flag.load(); }),
            WaitResult::kReady);
  waker.join();
}

TEST(SharedEventTest, SleepEndsWithTheSlice) {
  SharedEvent event;
  EXPECT_FALSE(sleep_until_ready(event, 2ms, [] { return false; }));
  EXPECT_EQ(wait_for(event, short_slices(), Deadline::after(20ms),
                     [] { return false; }),
            WaitResult::kCheckPeers);
}

TEST(WaitWhilePeersLiveTest, TimesOutWhilePeersLive) {
  PeerTable table;
  table.set_creator(current_pid());
  SharedEvent event;
  EXPECT_FALSE(wait_on_event(
      event, short_slices(), Deadline::after(20ms), [] { return false; }, table,
      PeerTable::kConsumer, [] { return "never"; }));
}

TEST(WaitWhilePeersLiveTest, FailsOnceEveryPeerOfTheRoleIsGone) {
  Mapping memory = Mapping::shared(sizeof(PeerTable));
  auto* table = new (memory.data()) PeerTable();
  table->set_creator(current_pid());
  Process consumer([table] { table->join(PeerTable::kConsumer); });
  consumer.start();
  consumer.join();
  SharedEvent event;
  try {
    wait_on_event(
        event, short_slices(), Deadline(), [] { return false; }, *table,
        PeerTable::kConsumer,
        [] { return std::string("Test::wait: nobody left"); });
    FAIL() << "a wait on dead peers must throw";
  } catch (const PeerError& e) {
    EXPECT_THAT(e.what(),
                HasSubstr("Test::wait: nobody left (consumers: pid " +
                          std::to_string(consumer.pid()) + " (gone)"));
  }
}

}  // namespace
}  // namespace mp::internal
