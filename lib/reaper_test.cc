#include "lib/reaper.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "gtest/gtest.h"
#include "lib/process.h"
#include "lib/test_util.h"

namespace mp {
namespace {

using namespace std::chrono_literals;

pid_t raw_child(int code) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(code);
  return pid;
}

class ReaperTest : public ::testing::Test {
 protected:
  void TearDown() override { EXPECT_EQ(leaks_.Check(), ""); }
  testing::LeakCheck leaks_;
};

TEST_F(ReaperTest, ReapCollectsZombiesAndReportsUnownedOnes) {
  const pid_t a = raw_child(3);
  const pid_t b = raw_child(4);
  ASSERT_GT(a, 0);
  ASSERT_GT(b, 0);
  std::vector<ReapedChild> got;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (got.size() < 2 && std::chrono::steady_clock::now() < deadline) {
    for (const ReapedChild& child : reap()) got.push_back(child);
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_EQ(got.size(), 2u);
  for (const ReapedChild& child : got) {
    EXPECT_EQ(child.exitcode, child.pid == a ? 3 : 4);
  }
  EXPECT_TRUE(testing::child_pids().empty());
  EXPECT_TRUE(reap().empty());
}

TEST_F(ReaperTest, ReapDoesNotStealAProcessExitStatus) {
  Process p([] { return 9; });
  p.start();
  ASSERT_TRUE(testing::wait_until_gone(p.pid(), 10s));  // now a zombie
  EXPECT_TRUE(reap().empty());                          // collected, kept
  // /proc shows the leader as a zombie while the child's other threads are
  // still exiting (under TSan every forked child has a runtime thread), and
  // waitpid cannot collect it until they are gone: reap until it is.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (::kill(p.pid(), 0) == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
    EXPECT_TRUE(reap().empty());
  }
  EXPECT_EQ(::kill(p.pid(), 0), -1) << "zombie not collected";
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(p.exitcode(), 9);
  p.join();
}

TEST_F(ReaperTest, SigchldReaperCollectsAsChildrenExit) {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<ReapedChild> got;
  ChildReaper reaper([&](const ReapedChild& child) {
    std::lock_guard lock(mutex);
    got.push_back(child);
    changed.notify_all();
  });
  Process owned([] { return 6; });
  owned.start();
  const pid_t raw = raw_child(5);
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(changed.wait_for(lock, 10s, [&] { return !got.empty(); }));
    EXPECT_EQ(got[0].pid, raw);
    EXPECT_EQ(got[0].exitcode, 5);
  }
  // The owned child was reaped by the reaper or is reaped by join; either
  // way its status is its own.
  owned.join();
  EXPECT_EQ(owned.exitcode(), 6);
  std::lock_guard lock(mutex);
  EXPECT_EQ(got.size(), 1u);
}

TEST_F(ReaperTest, ReaperKeepsJoinWorkingUnderLoad) {
  ChildReaper reaper;
  for (int i = 0; i < 30; ++i) {
    Process p([i] { return i; });
    p.start();
    if (i % 2) std::this_thread::sleep_for(1ms);  // let the reaper win some
    p.join();
    EXPECT_EQ(p.exitcode(), i);
  }
}

TEST_F(ReaperTest, OnlyOneReaperAtATime) {
  ChildReaper first;
  EXPECT_THROW(ChildReaper second, std::logic_error);
}

TEST_F(ReaperTest, SigchldDispositionIsRestored) {
  struct sigaction before {};
  ::sigaction(SIGCHLD, nullptr, &before);
  { ChildReaper reaper; }
  struct sigaction after {};
  ::sigaction(SIGCHLD, nullptr, &after);
  EXPECT_EQ(before.sa_handler, after.sa_handler);
}

}  // namespace
}  // namespace mp
