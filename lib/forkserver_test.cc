#include "lib/forkserver.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/error.h"
#include "lib/fd.h"
#include "lib/process.h"
#include "lib/task.h"
#include "lib/test_util.h"

namespace mp {
namespace {

using ::testing::HasSubstr;

int argument_length(std::string_view argument) {
  return static_cast<int>(argument.size());
}

// Runs, in a forked child, a forkserver child of its own.
int nested_forkserver_child() {
  Process inner(Task{argument_length, "nested"});
  inner.set_start_method(StartMethod::forkserver);
  inner.start();
  inner.join();
  return *inner.exitcode();
}

Process forkserver_process(Task task) {
  Process process(std::move(task));
  process.set_start_method(StartMethod::forkserver);
  return process;
}

// Socket inodes among `pid`'s descriptors, and how many descriptors it has.
std::vector<std::string> socket_inodes(pid_t pid, int* fd_count) {
  std::vector<std::string> inodes;
  *fd_count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(
           "/proc/" + std::to_string(pid) + "/fd")) {
    ++*fd_count;
    const std::string target = std::filesystem::read_symlink(entry.path());
    if (target.rfind("socket:[", 0) == 0)
      inodes.push_back(target.substr(8, target.size() - 9));
  }
  return inodes;
}

class ForkServerTest : public ::testing::Test {
 protected:
  void TearDown() override {
    ForkServer::stop();
    EXPECT_EQ(leaks_.Check(), "");
  }
  testing::LeakCheck leaks_;
};

TEST_F(ForkServerTest, ServerHoldsStdioAndOneUnnamedNonListeningSocket) {
  ForkServer::start();
  ASSERT_TRUE(ForkServer::running());
  const pid_t server = ForkServer::pid();
  int fd_count = 0;
  const std::vector<std::string> inodes = socket_inodes(server, &fd_count);
  EXPECT_EQ(fd_count, 4);
  ASSERT_EQ(inodes.size(), 1u);
  // /proc/net/unix: Num RefCount Protocol Flags Type St Inode [Path]. Flags
  // 00010000 is __SO_ACCEPTCON, a listening socket.
  std::ifstream table("/proc/net/unix");
  std::string line;
  bool seen = false;
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string num, refs, protocol, flags, type, state, inode, path;
    fields >> num >> refs >> protocol >> flags >> type >> state >> inode >>
        path;
    if (inode != inodes[0]) continue;
    seen = true;
    EXPECT_EQ(flags, "00000000") << line;
    EXPECT_EQ(path, "") << "the server's socket has a name: " << line;
  }
  EXPECT_TRUE(seen);
}

TEST_F(ForkServerTest, LazyStartAtFirstUse) {
  ASSERT_FALSE(ForkServer::running());
  Process p = forkserver_process({argument_length, "abc"});
  p.start();
  EXPECT_TRUE(ForkServer::running());
  p.join();
  EXPECT_EQ(p.exitcode(), 3);
}

int sleep_forever(std::string_view) {
  for (;;) ::pause();
}

TEST_F(ForkServerTest, KilledServerIsAClearErrorAndIsReaped) {
  ForkServer::start();
  const pid_t server = ForkServer::pid();
  Process running = forkserver_process({sleep_forever, ""});
  running.start();
  ASSERT_EQ(::kill(server, SIGKILL), 0);
  ASSERT_TRUE(testing::wait_until_gone(server, std::chrono::seconds(5)));
  Process p = forkserver_process({argument_length, ""});
  try {
    p.start();
    FAIL() << "started through a dead fork server";
  } catch (const PeerError& e) {
    EXPECT_THAT(e.what(), HasSubstr("fork server (pid " +
                                    std::to_string(server) + ") has died"));
    EXPECT_THAT(e.what(), HasSubstr("exit code -9"));
  }
  EXPECT_EQ(testing::process_state(server), 0) << "server left a zombie";
  // Its children are ours, not orphans: they run on and are reaped by us.
  EXPECT_TRUE(running.is_alive());
  running.terminate();
  running.join();
  EXPECT_EQ(running.exitcode(), -SIGTERM);
  EXPECT_FALSE(ForkServer::running());
  // Dead stays dead (no silent restart from a now big, threaded program)...
  EXPECT_THROW(p.start(), PeerError);
  // ... until the program starts another.
  ForkServer::start();
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

int is_100000_x(std::string_view argument) {
  return argument == std::string(100'000, 'x') ? 0 : 1;
}

TEST_F(ForkServerTest, TaskLargerThanARequestTravelsInAMemfd) {
  static_assert(internal::kInlineTask < 100'000);
  Process p = forkserver_process({is_100000_x, std::string(100'000, 'x')});
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

int sigint_disposition(std::string_view) {
  struct sigaction action;
  if (::sigaction(SIGINT, nullptr, &action) != 0) return 2;
  return action.sa_handler == SIG_DFL ? 0 : 1;
}

TEST_F(ForkServerTest, ServerIgnoresSigintItsChildrenDoNot) {
  ForkServer::start();
  const pid_t server = ForkServer::pid();
  ASSERT_EQ(::kill(server, SIGINT), 0);
  Process p = forkserver_process({sigint_disposition, ""});
  p.start();  // the server survived the Ctrl-C
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(ForkServer::pid(), server);
}

TEST_F(ForkServerTest, HungServerIsATimeoutNotAHang) {
  ForkServer::start();
  const pid_t server = ForkServer::pid();
  ASSERT_EQ(::kill(server, SIGSTOP), 0);
  ForkServer::set_reply_timeout(std::chrono::milliseconds(200));
  Process p = forkserver_process({argument_length, ""});
  try {
    p.start();
    FAIL() << "started through a stopped fork server";
  } catch (const TimeoutError& e) {
    EXPECT_THAT(e.what(), HasSubstr("did not answer in time"));
  }
  ForkServer::set_reply_timeout(ForkServer::kDefaultReplyTimeout);
  EXPECT_EQ(testing::process_state(server), 0) << "hung server not reaped";
  EXPECT_FALSE(ForkServer::running());
  EXPECT_EQ(p.pid(), 0);
}

TEST_F(ForkServerTest, ChildrenOutliveAStoppedServer) {
  Process p = forkserver_process({argument_length, "four"});
  p.start();
  ForkServer::stop();
  p.join();
  EXPECT_EQ(p.exitcode(), 4);
}

TEST_F(ForkServerTest, AForkedChildStartsItsOwnServer) {
  ForkServer::start();
  Process child(nested_forkserver_child);
  child.start();
  child.join();
  EXPECT_EQ(child.exitcode(), 6);
  // Ours still works: the child did not write to our channel.
  Process p = forkserver_process({argument_length, "ab"});
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 2);
}

// In a forked child: replaces the inherited channel (the one socket) with
// /dev/null under the same number, starts a forkserver child, and checks the
// number still holds /dev/null. Exit code 0 when it does.
int reuse_channel_number_then_start() {
  int channel = -1;
  for (int fd = 3; fd < 64; ++fd) {
    struct stat st;
    if (::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) channel = fd;
  }
  if (channel < 0) return 2;
  const int null = ::open("/dev/null", O_RDONLY);
  if (null < 0 || ::dup2(null, channel) != channel) return 3;
  ::close(null);
  const int code = nested_forkserver_child();
  struct stat st;
  if (::fstat(channel, &st) != 0 || !S_ISCHR(st.st_mode)) return 4;
  return code == 6 ? 0 : 5;
}

TEST_F(ForkServerTest, AChildsReusedChannelNumberIsLeftAlone) {
  ForkServer::start();
  Process child(reuse_channel_number_then_start);
  child.start();
  child.join();
  EXPECT_EQ(child.exitcode(), 0);
}

TEST_F(ForkServerTest, ManyChildrenLeaveNothingBehind) {
  ForkServer::start();
  std::vector<Process> children;
  for (int i = 0; i < 20; ++i) {
    children.push_back(
        forkserver_process({argument_length, std::string(i, 'x')}));
    children.back().start();
  }
  for (int i = 0; i < 20; ++i) {
    children[i].join();
    EXPECT_EQ(children[i].exitcode(), i);
  }
}

}  // namespace
}  // namespace mp
