// Start methods against a multi-threaded parent, and against another user.
//
// The deadlock test is issue 13's: a parent with a second thread holding a
// mutex and a third allocating in a loop starts children that take the mutex
// and allocate. forkserver and spawn children must all finish (100 rounds,
// each bounded); what fork does is reported (printed and recorded as test
// properties), not asserted: its child copies the held mutex.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "lib/fd.h"
#include "lib/forkserver.h"
#include "lib/pool.h"
#include "lib/process.h"
#include "lib/start_method.h"
#include "lib/task.h"
#include "lib/test_util.h"

namespace mp {
namespace {

using namespace std::chrono_literals;

std::mutex g_held;

int lock_and_allocate(std::string_view) {
  std::lock_guard lock(g_held);
  for (int i = 0; i < 64; ++i) std::free(std::malloc(16 + i * 1024));
  return 0;
}

int allocate(std::string_view) {
  for (int i = 0; i < 64; ++i) std::free(std::malloc(16 + i * 1024));
  return 0;
}

int sleep_forever(std::string_view) {
  for (;;) ::pause();
}

// A second thread that holds g_held, a third that allocates without pause.
class BusyThreads {
 public:
  BusyThreads() {
    holder_ = std::thread([this] {
      std::lock_guard lock(g_held);
      locked_ = true;
      while (!stop_) std::this_thread::sleep_for(1ms);
    });
    allocator_ = std::thread([this] {
      unsigned size = 1;
      while (!stop_) {
        std::free(std::malloc(size));
        size = size * 7 % 100'003 + 1;
      }
    });
    while (!locked_) std::this_thread::yield();
  }
  ~BusyThreads() {
    stop_ = true;
    holder_.join();
    allocator_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<bool> locked_{false};
  std::thread holder_;
  std::thread allocator_;
};

// Starts `rounds` children of `task` under `method`, each given `bound` to
// finish; returns how many did not (they are killed).
int stuck_children(StartMethod method, TaskFunction task, int rounds,
                   std::chrono::milliseconds bound) {
  int stuck = 0;
  for (int i = 0; i < rounds; ++i) {
    Process p(Task{task, ""});
    p.set_start_method(method);
    p.start();
    if (!p.join(bound)) {
      ++stuck;
      p.kill();
      p.join();
    } else {
      EXPECT_EQ(p.exitcode(), 0);
    }
  }
  return stuck;
}

class StartMethodsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The server must be a copy of the program before the threads exist.
    ForkServer::stop();
    ForkServer::start();
  }
  void TearDown() override {
    ForkServer::stop();
    EXPECT_EQ(leaks_.Check(), "");
  }
  testing::LeakCheck leaks_;
};

TEST_F(StartMethodsTest, ForkserverAndSpawnNeverDeadlockInAThreadedParent) {
  BusyThreads threads;
  for (StartMethod method : {StartMethod::forkserver, StartMethod::spawn}) {
    EXPECT_EQ(stuck_children(method, lock_and_allocate, 100, 10s), 0)
        << to_string(method);
  }
}

TEST_F(StartMethodsTest, WhatForkDoesInAThreadedParentIsReported) {
  BusyThreads threads;
  constexpr int kRounds = 5;
  const int mutex_stuck =
      stuck_children(StartMethod::fork, lock_and_allocate, kRounds, 300ms);
  const int malloc_stuck = stuck_children(StartMethod::fork, allocate, 20, 2s);
  std::printf(
      "fork, threaded parent: %d of %d children deadlocked on the held "
      "mutex; %d of 20 deadlocked in malloc alone\n",
      mutex_stuck, kRounds, malloc_stuck);
  RecordProperty("fork_mutex_deadlocks", mutex_stuck);
  RecordProperty("fork_malloc_deadlocks", malloc_stuck);
}

// What another uid can reach of process `pid`: each way in that worked.
std::vector<std::string> reachable(pid_t pid) {
  std::vector<std::string> found;
  const std::string proc = "/proc/" + std::to_string(pid);
  if (DIR* dir = ::opendir((proc + "/fd").c_str())) {
    found.push_back("list " + proc + "/fd");
    ::closedir(dir);
  }
  if (DIR* dir = ::opendir((proc + "/map_files").c_str())) {
    found.push_back("list " + proc + "/map_files");
    ::closedir(dir);
  }
  for (const char* file : {"/mem", "/environ"}) {
    const int fd = ::open((proc + file).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      found.push_back("open " + proc + file);
      ::close(fd);
    }
  }
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  for (int n = 0; n < 64; ++n) {
    const std::string path = proc + "/fd/" + std::to_string(n);
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
      found.push_back("open " + path);
      ::close(fd);
    }
    if (pidfd >= 0) {
      const int got = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, n, 0));
      if (got >= 0) {
        found.push_back("pidfd_getfd " + std::to_string(n) + " of " + proc);
        ::close(got);
      }
    }
  }
  if (pidfd >= 0) ::close(pidfd);
  return found;
}

// Forks a process that keeps nothing of ours (no descriptor), becomes uid and
// gid 65534, and tries every way into `targets`; returns its exit code, the
// number of ways that worked (each printed).
int other_user_reaches(std::vector<pid_t> targets) {
  Process intruder([targets] {
    ::close_range(3, ~0U, 0);
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 ||
        ::setuid(65534) != 0) {
      return 100;
    }
    int ways = 0;
    for (pid_t pid : targets) {
      for (const std::string& way : reachable(pid)) {
        std::fprintf(stderr, "uid 65534 can %s\n", way.c_str());
        ++ways;
      }
    }
    return ways;
  });
  intruder.start();
  intruder.join();
  return *intruder.exitcode();
}

// True if uid 65534 exists in this user namespace (a sandbox may map only
// root).
bool nobody_is_mapped() {
  std::FILE* map = std::fopen("/proc/self/uid_map", "r");
  if (map == nullptr) return false;
  unsigned long inside = 0, outside = 0, count = 0;
  bool mapped = false;
  while (std::fscanf(map, "%lu %lu %lu", &inside, &outside, &count) == 3) {
    if (65534 >= inside && 65534 - inside < count) mapped = true;
  }
  std::fclose(map);
  return mapped;
}

TEST_F(StartMethodsTest, AnotherUserCannotReachTheServerTheChildOrItsMemory) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another uid";
  if (!nobody_is_mapped()) GTEST_SKIP() << "no uid 65534 in this namespace";
  for (StartMethod method : {StartMethod::forkserver, StartMethod::spawn}) {
    // The child maps shared memory (a memfd, as a queue for these methods
    // would) and holds its task's descriptor.
    Fd memory(::memfd_create("shared", MFD_CLOEXEC));
    ASSERT_TRUE(memory);
    ASSERT_EQ(::ftruncate(memory.get(), 4096), 0);
    Process child(Task{sleep_forever, "", {memory.get()}});
    child.set_start_method(method);
    child.start();
    std::vector<pid_t> targets = {::getpid(), child.pid()};
    if (method == StartMethod::forkserver) targets.push_back(ForkServer::pid());
    EXPECT_EQ(other_user_reaches(targets), 0) << to_string(method);
    // Same uid, as a control: the checks do find a way in.
    EXPECT_FALSE(reachable(child.pid()).empty());
    child.terminate();
    child.join();
  }
}

std::int64_t lock_and_allocate_item(const std::int64_t& x) {
  lock_and_allocate("");
  return x + 1;
}

// Pools whose workers take the lock the parent's second thread holds: under
// forkserver and spawn no worker is a copy of that thread's state.
TEST_F(StartMethodsTest, PoolsNeverDeadlockInAThreadedParent) {
  BusyThreads threads;
  const std::vector<std::int64_t> items = {1, 2, 3, 4};
  for (StartMethod method : {StartMethod::forkserver, StartMethod::spawn}) {
    for (int round = 0; round < 10; ++round) {
      PoolOptions options;
      options.workers = 2;
      options.start = method;
      Pool pool(options);
      auto results = pool.imap(lock_and_allocate_item, items, 1);
      for (std::int64_t expected : {2, 3, 4, 5})
        ASSERT_EQ(results.next(10s), expected) << to_string(method);
    }
  }
}

TEST_F(StartMethodsTest, AnotherUserCannotReachAPoolsWorkersOrRings) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another uid";
  if (!nobody_is_mapped()) GTEST_SKIP() << "no uid 65534 in this namespace";
  for (StartMethod method : {StartMethod::forkserver, StartMethod::spawn}) {
    PoolOptions options;
    options.workers = 2;
    options.start = method;
    Pool pool(options);
    std::vector<pid_t> targets = pool.worker_pids();
    targets.push_back(::getpid());  // holds the pool's memfd
    if (method == StartMethod::forkserver) targets.push_back(ForkServer::pid());
    EXPECT_EQ(other_user_reaches(targets), 0) << to_string(method);
    // Same uid, as a control: a worker's rings are found.
    EXPECT_FALSE(reachable(pool.worker_pids()[0]).empty());
  }
}

}  // namespace
}  // namespace mp
