#include "lib/fork_map.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/process.h"
#include "lib/start_method.h"
#include "lib/test_util.h"
#include "lib/testing/work.h"

namespace mp {
namespace {

using namespace std::chrono_literals;
using namespace mp::testing;
using ::testing::HasSubstr;

class ForkMapTest : public ::testing::Test {
 protected:
  void TearDown() override { EXPECT_EQ(leaks_.Check(), ""); }
  testing::LeakCheck leaks_;
};

TEST_F(ForkMapTest, SharesInputsAndReportsErrors) {
  const auto items = iota(1000);
  const std::int64_t offset = 7;  // a closure: fork_map takes any callable
  const auto out =
      fork_map([offset](const std::int64_t& x) { return x + offset; },
               std::span(items), 3, 10);
  ASSERT_EQ(out.size(), 1000u);
  for (std::size_t i = 0; i < out.size(); ++i)
    ASSERT_EQ(out[i], static_cast<std::int64_t>(i) + 7);
  EXPECT_TRUE(fork_map(twice, std::span<const std::int64_t>(), 2).empty());
  try {
    fork_map(fail_on_17, std::span(items), 2, 8);
    FAIL();
  } catch (const TaskError& e) {
    EXPECT_EQ(e.item_index(), 17u);
  }
  EXPECT_THROW(fork_map(die_on_7, std::span(items), 2, 8), WorkerLost);
}

TEST_F(ForkMapTest, OtherStartMethodsAreAClearError) {
  const auto items = iota(10);
  for (StartMethod method : {StartMethod::forkserver, StartMethod::spawn}) {
    set_start_method(method);
    try {
      fork_map(twice, std::span(items), 2);
      set_start_method(StartMethod::fork);
      FAIL() << "fork_map ran under " << to_string(method);
    } catch (const std::logic_error& e) {
      EXPECT_THAT(e.what(), HasSubstr("inherit the items by fork"));
    }
    set_start_method(StartMethod::fork);
  }
  EXPECT_EQ(fork_map(twice, std::span(items), 2).size(), 10u);
}

TEST_F(ForkMapTest, NonStandardExceptionNamesTheExactItem) {
  const auto items = iota(40);
  try {
    fork_map(
        [](const std::int64_t& x) {
          if (x == 13) throw 42;
          return x;
        },
        std::span(items), 2, 4);
    FAIL() << "throw 42 must fail the call";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.item_index(), 13u);
    EXPECT_THAT(e.what(), HasSubstr("item 13 "));
    EXPECT_THAT(e.what(), HasSubstr("not derived from std::exception"));
  }
}

TEST_F(ForkMapTest, ResultsLargerThanTheResultQueueAreMessageTooLong) {
  const auto items = iota(4);
  ForkMapOptions options;
  options.workers = 2;
  options.chunksize = 1;
  options.result_queue_bytes = 64 << 10;
  try {
    fork_map(mebibyte, std::span(items), options);
    FAIL() << "1 MiB results cannot travel through a 64 KiB queue";
  } catch (const MessageTooLong& e) {
    EXPECT_THAT(e.what(),
                HasSubstr("raise ForkMapOptions::result_queue_bytes"));
    EXPECT_GT(e.length(), e.limit());
  }
  options.result_queue_bytes = 1024;  // could not even carry the report
  EXPECT_THROW(fork_map(twice, std::span(items), options),
               std::invalid_argument);
  options.result_queue_bytes = 4 << 20;  // now they fit
  EXPECT_EQ(fork_map(mebibyte, std::span(items), options).size(), 4u);
}

TEST_F(ForkMapTest, WorkerReapedElsewhereIsALostChunkNotAHang) {
  struct sigaction ignore {
  }, previous{};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGCHLD, &ignore, &previous), 0);
  const auto items = iota(100);
  try {
    fork_map(die_on_7, std::span(items), 2, 8);
    ADD_FAILURE() << "a killed worker must fail the call";
  } catch (const WorkerLost& e) {
    EXPECT_EQ(e.first_item(), 0u);
    EXPECT_THAT(e.what(),
                HasSubstr("exit status unavailable (reaped elsewhere)"));
  }
  EXPECT_EQ(fork_map(twice, std::span(items), 2, 8).size(), 100u);
  ASSERT_EQ(::sigaction(SIGCHLD, &previous, nullptr), 0);
}

}  // namespace
}  // namespace mp
