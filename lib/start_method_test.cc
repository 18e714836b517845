// What every start method offers a Process, run under each.
#include "lib/start_method.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/error.h"
#include "lib/fd.h"
#include "lib/forkserver.h"
#include "lib/process.h"
#include "lib/reaper.h"
#include "lib/task.h"
#include "lib/test_util.h"

namespace mp {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

int parse_int(std::string_view text) {
  int value = -1;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

int argument_length(std::string_view argument) {
  return static_cast<int>(argument.size());
}

int sleep_forever(std::string_view) {
  for (;;) ::pause();
}

int throw_runtime_error(std::string_view) {
  throw std::runtime_error("task failed");
}

int system_exit(std::string_view argument) {
  throw SystemExit{parse_int(argument)};
}

// Writes this child's parent pid to the descriptor named by the argument.
int write_parent_pid(std::string_view argument) {
  const pid_t parent = ::getppid();
  return ::write(parse_int(argument), &parent, sizeof parent) ==
                 static_cast<ssize_t>(sizeof parent)
             ? 0
             : 2;
}

// Exit code: how many descriptors the child has open (0, 1, 2 and the ones
// it was handed), or 100 + the number if the named one is not open.
int count_fds(std::string_view argument) {
  const int expected = parse_int(argument);
  if (::fcntl(expected, F_GETFD) == -1) return 100 + expected;
  int count = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)entry;
    ++count;
  }
  return count - 1;  // the directory iterator's own descriptor
}

// Takes the robust mutex in the memfd named by the argument and dies holding
// it.
int lock_and_die(std::string_view argument) {
  void* shared =
      ::mmap(nullptr, sizeof(pthread_mutex_t), PROT_READ | PROT_WRITE,
             MAP_SHARED, parse_int(argument), 0);
  if (shared == MAP_FAILED) return 2;
  if (::pthread_mutex_lock(static_cast<pthread_mutex_t*>(shared)) != 0)
    return 3;
  ::raise(SIGKILL);
  return 4;
}

class StartMethodTest : public ::testing::TestWithParam<StartMethod> {
 protected:
  void TearDown() override {
    ForkServer::stop();
    EXPECT_EQ(leaks_.Check(), "");
  }

  Process make(Task task) {
    Process process(std::move(task));
    process.set_start_method(GetParam());
    return process;
  }

  testing::LeakCheck leaks_;
};

TEST_P(StartMethodTest, ReturnValueIsTheExitCode) {
  Process p = make({argument_length, "hello"});
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 5);
}

TEST_P(StartMethodTest, ExceptionsAndSystemExitAsWithFork) {
  Process failing = make({throw_runtime_error, ""});
  Process exiting = make({system_exit, "4"});
  failing.start();
  exiting.start();
  failing.join();
  exiting.join();
  EXPECT_EQ(failing.exitcode(), 1);
  EXPECT_EQ(exiting.exitcode(), 4);
}

TEST_P(StartMethodTest, TerminateAndTimedJoin) {
  Process p = make({sleep_forever, ""});
  p.start();
  EXPECT_FALSE(p.join(20ms));
  EXPECT_TRUE(p.is_alive());
  p.terminate();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGTERM);
}

TEST_P(StartMethodTest, TheChildIsAChildOfThisProcess) {
  int ends[2];
  ASSERT_EQ(::pipe2(ends, O_CLOEXEC), 0);
  Fd read_end(ends[0]);
  Fd write_end(ends[1]);
  Process p = make(
      {write_parent_pid, std::to_string(write_end.get()), {write_end.get()}});
  p.start();
  p.join();
  ASSERT_EQ(p.exitcode(), 0);
  pid_t parent = 0;
  ASSERT_EQ(::read(read_end.get(), &parent, sizeof parent),
            static_cast<ssize_t>(sizeof parent));
  EXPECT_EQ(parent, ::getpid());
}

TEST_P(StartMethodTest, ChildHasOnlyStdioAndItsFds) {
  if (GetParam() == StartMethod::fork) GTEST_SKIP() << "fork inherits all";
  // Open descriptors the child must not see, one of them inheritable.
  Fd stray(::open("/dev/null", O_RDONLY));
  Fd handed(::memfd_create("handed", MFD_CLOEXEC));
  ASSERT_TRUE(stray && handed);
  Process p = make({count_fds, std::to_string(handed.get()), {handed.get()}});
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 4);
}

TEST_P(StartMethodTest, DaemonChildIsTerminatedAtExitLikeWithFork) {
  Process p = make({sleep_forever, ""});
  p.set_daemon(true);
  p.start();
  EXPECT_TRUE(p.is_alive());
}  // destroyed running: terminated and reaped (LeakCheck)

// A daemon child dies with its parent (PR_SET_PDEATHSIG), and so does a fork
// server whose program is gone: nothing is left orphaned.
TEST_P(StartMethodTest, DaemonChildAndForkServerDieWithTheirProgram) {
  int ends[2];
  ASSERT_EQ(::pipe2(ends, O_CLOEXEC), 0);
  Fd read_end(ends[0]);
  Fd write_end(ends[1]);
  const StartMethod method = GetParam();
  Process program([method, fd = write_end.get()] {
    Process child(Task{sleep_forever, ""});
    child.set_start_method(method);
    child.set_daemon(true);
    child.start();
    const pid_t pids[2] = {child.pid(), ForkServer::pid()};
    if (::write(fd, pids, sizeof pids) != sizeof pids) return 2;
    for (;;) ::pause();
  });
  program.start();
  write_end.reset();
  pid_t pids[2] = {0, 0};
  ASSERT_EQ(::read(read_end.get(), pids, sizeof pids),
            static_cast<ssize_t>(sizeof pids));
  program.kill();
  program.join();
  EXPECT_TRUE(testing::wait_until_gone(pids[0], std::chrono::seconds(5)))
      << "daemon child outlived its program";
  if (method == StartMethod::forkserver) {
    ASSERT_GT(pids[1], 0);
    EXPECT_TRUE(testing::wait_until_gone(pids[1], std::chrono::seconds(5)))
        << "fork server outlived its program";
  }
}

// The child is this process's own: a reaper that collects it keeps its
// status for the Process, as with fork.
TEST_P(StartMethodTest, ReaperKeepsTheStatusForTheProcess) {
  Process p = make({argument_length, "abc"});
  p.start();
  ASSERT_TRUE(testing::wait_until_gone(p.pid(), std::chrono::seconds(10)));
  EXPECT_TRUE(reap().empty()) << "an owned child was reported as unowned";
  p.join();
  EXPECT_EQ(p.exitcode(), 3);
}

TEST_P(StartMethodTest, ClosureIsRefusedWithAClearError) {
  Process p([] {});
  p.set_start_method(GetParam());
  if (GetParam() == StartMethod::fork) {
    p.start();
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
    return;
  }
  try {
    p.start();
    FAIL() << "a closure started under " << to_string(GetParam());
  } catch (const std::logic_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("cannot run a callable"));
    EXPECT_THAT(e.what(), HasSubstr(std::string(to_string(GetParam()))));
  }
  EXPECT_EQ(p.pid(), 0);
}

// The kernel hands a dead owner's robust mutexes on only if the owner's
// thread id is the one glibc stored in the lock: a forkserver child must know
// its own id (lib/forkserver.cc).
TEST_P(StartMethodTest, RobustMutexOfADeadChildIsRecovered) {
#if defined(__SANITIZE_THREAD__)
  // TSan sees no lock taken in another process, so it reports the recovered
  // mutex's unlock as the unlock of an unlocked mutex.
  GTEST_SKIP() << "TSan cannot follow a mutex across processes";
#endif
  Fd memory(::memfd_create("mutex", MFD_CLOEXEC));
  ASSERT_TRUE(memory);
  ASSERT_EQ(::ftruncate(memory.get(), sizeof(pthread_mutex_t)), 0);
  void* shared = ::mmap(nullptr, sizeof(pthread_mutex_t),
                        PROT_READ | PROT_WRITE, MAP_SHARED, memory.get(), 0);
  ASSERT_NE(shared, MAP_FAILED);
  auto* mutex = static_cast<pthread_mutex_t*>(shared);
  pthread_mutexattr_t attributes;
  ::pthread_mutexattr_init(&attributes);
  ::pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
  ::pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
  ASSERT_EQ(::pthread_mutex_init(mutex, &attributes), 0);

  Process p =
      make({lock_and_die, std::to_string(memory.get()), {memory.get()}});
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
  // Bounded: an unrecovered lock is a failure, not a hang.
  timespec deadline;
  ::clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 5;
  ASSERT_EQ(::pthread_mutex_timedlock(mutex, &deadline), EOWNERDEAD);
  ::pthread_mutex_consistent(mutex);
  ::pthread_mutex_unlock(mutex);
  ::munmap(shared, sizeof(pthread_mutex_t));
}

TEST_P(StartMethodTest, BadFdsAreRejectedBeforeAnythingStarts) {
  if (GetParam() == StartMethod::fork) GTEST_SKIP() << "fork inherits all";
  Process closed = make({argument_length, "", {1000}});
  Process stdio = make({argument_length, "", {1}});
  EXPECT_THROW(closed.start(), std::invalid_argument);
  EXPECT_THROW(stdio.start(), std::invalid_argument);
}

TEST(StartMethod, DefaultIsForkAndCanBeChanged) {
  EXPECT_EQ(get_start_method(), StartMethod::fork);
  Process p(Task{argument_length, "abc"});
  EXPECT_EQ(p.start_method(), StartMethod::fork);
  set_start_method(StartMethod::spawn);
  EXPECT_EQ(p.start_method(), StartMethod::spawn);
  p.start();
  set_start_method(StartMethod::fork);
  p.join();
  EXPECT_EQ(p.exitcode(), 3);
  EXPECT_THROW(p.set_start_method(StartMethod::fork), std::logic_error);
}

TEST(StartMethod, NamesArePythons) {
  for (StartMethod method :
       {StartMethod::fork, StartMethod::forkserver, StartMethod::spawn}) {
    EXPECT_EQ(start_method_from_string(to_string(method)), method);
  }
  EXPECT_EQ(start_method_from_string("vfork"), std::nullopt);
}

INSTANTIATE_TEST_SUITE_P(Methods, StartMethodTest,
                         ::testing::Values(StartMethod::fork,
                                           StartMethod::forkserver,
                                           StartMethod::spawn),
                         [](const ::testing::TestParamInfo<StartMethod>& info) {
                           return std::string(to_string(info.param));
                         });

}  // namespace
}  // namespace mp
