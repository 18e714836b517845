#include "lib/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/error.h"
#include "lib/fd.h"
#include "lib/mapping.h"
#include "lib/test_util.h"

namespace mp {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

void sleep_forever() {
  for (;;) ::pause();
}

// Every test must leave no child, fd or /dev/shm entry behind.
class ProcessTest : public ::testing::Test {
 protected:
  void TearDown() override { EXPECT_EQ(leaks_.Check(), ""); }
  testing::LeakCheck leaks_;
};

TEST_F(ProcessTest, NormalExitIsZero) {
  Process p([] {});
  EXPECT_EQ(p.exitcode(), std::nullopt);
  p.start();
  EXPECT_GT(p.pid(), 0);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_FALSE(p.is_alive());
}

TEST_F(ProcessTest, ReturnedIntIsTheExitCode) {
  Process p([] { return 7; });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 7);
}

TEST_F(ProcessTest, StdExitCodeIsReported) {
  Process p([] { std::exit(3); });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 3);
}

TEST_F(ProcessTest, SystemExitUnwindsAndSetsTheCode) {
  Mapping flag = Mapping::shared(sizeof(int));
  auto* destroyed = static_cast<volatile int*>(flag.data());
  Process p([destroyed] {
    struct Guard {
      volatile int* flag;
      ~Guard() { *flag = 1; }
    } guard{destroyed};
    throw SystemExit{4};
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 4);
  EXPECT_EQ(*destroyed, 1) << "SystemExit must unwind the child's stack";
}

TEST_F(ProcessTest, KilledBySignalIsMinusTheSignal) {
  Process p(sleep_forever);
  p.start();
  p.kill();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
}

TEST_F(ProcessTest, TerminateSendsSigterm) {
  Process p(sleep_forever);
  p.start();
  EXPECT_TRUE(p.is_alive());
  p.terminate();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGTERM);
  p.terminate();  // no-op once reaped, as in Python
}

TEST_F(ProcessTest, JoinWithTimeoutOnASleepingChild) {
  Process p([] { std::this_thread::sleep_for(300ms); });
  p.start();
  const auto begin = std::chrono::steady_clock::now();
  EXPECT_FALSE(p.join(20ms));
  EXPECT_GE(std::chrono::steady_clock::now() - begin, 20ms);
  EXPECT_TRUE(p.is_alive());
  EXPECT_EQ(p.exitcode(), std::nullopt);
  EXPECT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(p.join(0ms));
}

TEST_F(ProcessTest, ExceptionInChildPrintsAndExitsWithOne) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  Fd read_end(fds[0]), write_end(fds[1]);
  Process p(
      [&] {
        ::dup2(write_end.get(), STDERR_FILENO);
        throw std::runtime_error("boom in the child");
      },
      "Thrower");
  p.start();
  write_end.reset();
  p.join();
  EXPECT_EQ(p.exitcode(), 1);
  std::string err;
  char buffer[256];
  ssize_t n;
  while ((n = ::read(read_end.get(), buffer, sizeof buffer)) > 0)
    err.append(buffer, n);
  EXPECT_THAT(err, HasSubstr("Process Thrower"));
  EXPECT_THAT(err, HasSubstr("uncaught exception: boom in the child"));
}

TEST_F(ProcessTest, DestructorTerminatesAndReapsARunningChild) {
  pid_t pid = 0;
  {
    Process p(sleep_forever);
    p.start();
    pid = p.pid();
  }
  EXPECT_EQ(::kill(pid, 0), -1) << "child still exists (zombie or running)";
  EXPECT_EQ(errno, ESRCH);
}

TEST_F(ProcessTest, DestructorEscalatesToSigkillWhenSigtermIsIgnored) {
  Mapping ready = Mapping::shared(sizeof(int));
  auto* flag = static_cast<volatile int*>(ready.data());
  pid_t pid = 0;
  const auto begin = std::chrono::steady_clock::now();
  {
    Process p([flag] {
      ::signal(SIGTERM, SIG_IGN);
      *flag = 1;
      sleep_forever();
    });
    p.start();
    pid = p.pid();
    while (*flag == 0) std::this_thread::yield();
  }
  EXPECT_GE(std::chrono::steady_clock::now() - begin,
            Process::kTerminateGracePeriod);
  EXPECT_EQ(::kill(pid, 0), -1);
}

TEST_F(ProcessTest, MovedProcessKeepsOwnership) {
  Process a([] { return 5; });
  a.start();
  Process b(std::move(a));
  EXPECT_EQ(a.pid(), 0);
  b.join();
  EXPECT_EQ(b.exitcode(), 5);
}

TEST_F(ProcessTest, StartTwiceAndMisuseAreLogicErrors) {
  Process p([] {});
  EXPECT_THROW(p.join(), std::logic_error);
  p.start();
  EXPECT_THROW(p.start(), std::logic_error);
  EXPECT_THROW(p.set_daemon(true), std::logic_error);
  p.join();
  Process empty;
  EXPECT_THROW(empty.start(), std::logic_error);
}

TEST_F(ProcessTest, ChildReapedBehindItsBackHasExitedWithNoStatus) {
  Process p([] { return 3; });
  p.start();
  int status;
  ASSERT_EQ(::waitpid(p.pid(), &status, 0), p.pid());  // stolen behind p's back
  EXPECT_FALSE(p.is_alive());
  EXPECT_NO_THROW(EXPECT_EQ(p.exitcode(), std::nullopt));
  EXPECT_TRUE(p.exit_status_unavailable());
  EXPECT_NO_THROW(p.join());
  EXPECT_NO_THROW(p.terminate());  // nothing left to stop
}

// The pidfd is opened on first need; a child reaped behind the Process's back
// before that need is seen as gone, and its pid (free for reuse) is never
// signalled.
TEST_F(ProcessTest, SignalAndTimedJoinAfterAReapBehindItsBack) {
  Process p([] { return 3; });
  p.start();
  int status;
  ASSERT_EQ(::waitpid(p.pid(), &status, 0), p.pid());
  EXPECT_NO_THROW(p.kill());
  bool joined = false;
  EXPECT_NO_THROW(joined = p.join(1s));
  EXPECT_TRUE(joined);
  EXPECT_TRUE(p.exit_status_unavailable());

  // Opened by a timed join while the child runs, the pidfd confirms the
  // exit when someone else reaps it.
  Process q([] { std::this_thread::sleep_for(30ms); });
  q.start();
  EXPECT_FALSE(q.join(1ms));
  ASSERT_EQ(::waitpid(q.pid(), &status, 0), q.pid());
  EXPECT_NO_THROW(q.join());
  EXPECT_TRUE(q.exit_status_unavailable());
}

// A program that ignores SIGCHLD: the kernel reaps every child at once.
TEST_F(ProcessTest, ExitcodeDoesNotThrowWhenSigchldIsIgnored) {
  struct sigaction ignore {
  }, previous{};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGCHLD, &ignore, &previous), 0);
  Process quick([] { return 5; });
  quick.start();
  while (quick.is_alive()) std::this_thread::sleep_for(1ms);
  std::optional<int> code;
  EXPECT_NO_THROW(code = quick.exitcode());
  EXPECT_EQ(code, std::nullopt);
  EXPECT_TRUE(quick.exit_status_unavailable());
  Process slow([] { std::this_thread::sleep_for(50ms); });
  slow.start();
  EXPECT_NO_THROW(slow.join());  // blocks until it exits, then returns
  EXPECT_TRUE(slow.exit_status_unavailable());
  Process timed([] { std::this_thread::sleep_for(20ms); });
  timed.start();
  bool joined = false;
  EXPECT_NO_THROW(joined = timed.join(10s));
  EXPECT_TRUE(joined);
  ASSERT_EQ(::sigaction(SIGCHLD, &previous, nullptr), 0);
}

TEST_F(ProcessTest, NoFdLeakAcrossManyTimedJoins) {
  const int before = testing::count_open_fds();
  for (int i = 0; i < 20; ++i) {
    Process p([] { std::this_thread::sleep_for(2ms); });
    p.start();
    while (!p.join(1ms)) {
    }
  }
  EXPECT_EQ(testing::count_open_fds(), before);
}

TEST_F(ProcessTest, BufferedOutputIsNotDuplicatedByFork) {
  char path[] = "/tmp/mpbench_flush_XXXXXX";
  Fd file(::mkstemp(path));
  ASSERT_TRUE(file);
  Process writer([&] {
    ::dup2(file.get(), STDOUT_FILENO);
    std::setvbuf(stdout, nullptr, _IOFBF, 4096);
    std::printf("once");
    Process inner([] {});
    inner.start();
    inner.join();
  });
  writer.start();
  writer.join();
  EXPECT_EQ(writer.exitcode(), 0);
  std::string contents(64, '\0');
  const ssize_t n = ::pread(file.get(), contents.data(), contents.size(), 0);
  ::unlink(path);
  ASSERT_GE(n, 0);
  contents.resize(n);
  EXPECT_EQ(contents, "once");
}

// The daemon tests make this process a subreaper, so that grandchildren
// orphaned by a dying child are re-parented here and can be checked and
// reaped, instead of vanishing into init.
class DaemonTest : public ProcessTest {
 protected:
  void SetUp() override { ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0); }
  void TearDown() override {
    ::prctl(PR_SET_CHILD_SUBREAPER, 0);
    ProcessTest::TearDown();
  }

  // Starts a middle process that starts a grandchild (daemon or not) and
  // reports its pid through shared memory, then does `then`.
  template <typename Then>
  pid_t start_middle(Process& middle, bool daemon, Then then) {
    shared_ = Mapping::shared(sizeof(pid_t));
    auto* slot = static_cast<volatile pid_t*>(shared_.data());
    middle = Process([slot, daemon, then] {
      // Leaked on purpose: only the exit handling or PDEATHSIG may stop it.
      auto* grandchild = new Process(sleep_forever);
      grandchild->set_daemon(daemon);
      grandchild->start();
      *slot = grandchild->pid();
      then();
    });
    middle.start();
    while (*slot == 0) std::this_thread::yield();
    return *slot;
  }

  Mapping shared_;
};

TEST_F(DaemonTest, DaemonDiesWhenItsParentIsKilled) {
  Process middle;
  const pid_t grandchild = start_middle(middle, /*daemon=*/true, sleep_forever);
  middle.kill();
  middle.join();
  int status = 0;
  ASSERT_EQ(::waitpid(grandchild, &status, 0), grandchild);
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
}

TEST_F(DaemonTest, DaemonIsTerminatedAtItsParentsNormalExit) {
  Process middle;
  const pid_t grandchild = start_middle(middle, /*daemon=*/true, [] {});
  middle.join();
  EXPECT_EQ(middle.exitcode(), 0);
  // The middle process reaped its daemon before exiting.
  EXPECT_EQ(::kill(grandchild, 0), -1);
}

TEST_F(DaemonTest, NonDaemonIsJoinedAtItsParentsExit) {
  Process middle;
  shared_ = Mapping::shared(2 * sizeof(pid_t));
  auto* slot = static_cast<volatile pid_t*>(shared_.data());
  middle = Process([slot] {
    auto* leaked = new Process([] { std::this_thread::sleep_for(100ms); });
    leaked->start();
    slot[0] = leaked->pid();
  });
  middle.start();
  middle.join();
  EXPECT_EQ(middle.exitcode(), 0);
  EXPECT_EQ(::kill(slot[0], 0), -1) << "middle exited before its child";
}

TEST_F(ProcessTest, NoZombiesAfterManyShortChildren) {
  for (int i = 0; i < 50; ++i) {
    Process p([i] { return i % 4; });
    p.start();
    p.join();
    EXPECT_EQ(p.exitcode(), i % 4);
  }
  EXPECT_TRUE(testing::child_pids().empty());
}

}  // namespace
}  // namespace mp
