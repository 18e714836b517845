#include "lib/reaper.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <exception>
#include <mutex>
#include <stdexcept>

#include "lib/children.h"
#include "lib/error.h"

namespace mp {
namespace {

// The write end of the active reaper's self-pipe, read by the signal handler.
std::atomic<int> g_wake_fd{-1};
std::atomic<bool> g_stop{false};
struct sigaction g_previous_action;

void on_sigchld(int) {
  const int saved = errno;
  const int fd = g_wake_fd.load(std::memory_order_relaxed);
  if (fd >= 0) {
    const char byte = 0;
    // A full pipe already guarantees a wake-up; EAGAIN is fine.
    [[maybe_unused]] ssize_t ignored = ::write(fd, &byte, 1);
  }
  errno = saved;
}

void reset_in_child() {
  // The reaper thread does not exist in a forked child: put SIGCHLD back and
  // drop the inherited pipe.
  const int fd = g_wake_fd.exchange(-1);
  if (fd >= 0) {
    ::sigaction(SIGCHLD, &g_previous_action, nullptr);
    ::close(fd);
  }
}

}  // namespace

std::vector<ReapedChild> reap() {
  std::vector<ReapedChild> unowned;
  internal::ChildTable& table = internal::ChildTable::instance();
  std::lock_guard lock(table.mutex());
  for (;;) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid == 0) break;
    if (pid == -1) {
      if (errno == EINTR) continue;
      if (errno == ECHILD) break;
      internal::throw_os_error("waitpid", errno, "pid -1, WNOHANG");
    }
    if (internal::ChildRecord* record = table.find(pid)) {
      record->reaped = true;  // kept for its Process to collect
      record->status = status;
    } else {
      unowned.push_back({pid, internal::exit_code_from_status(status)});
    }
  }
  return unowned;
}

ChildReaper::ChildReaper(Callback on_reaped)
    : on_reaped_(std::move(on_reaped)) {
  static std::once_flag atfork_once;
  std::call_once(atfork_once,
                 [] { ::pthread_atfork(nullptr, nullptr, reset_in_child); });
  int fds[2];
  internal::check(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), "pipe2");
  wake_read_.reset(fds[0]);
  wake_write_.reset(fds[1]);
  int expected = -1;
  if (!g_wake_fd.compare_exchange_strong(expected, wake_write_.get())) {
    throw std::logic_error("ChildReaper: another ChildReaper is active");
  }
  g_stop = false;
  struct sigaction action {};
  action.sa_handler = on_sigchld;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  if (::sigaction(SIGCHLD, &action, &g_previous_action) == -1) {
    const int error = errno;
    g_wake_fd = -1;
    internal::throw_os_error("sigaction(SIGCHLD)", error);
  }
  thread_ = std::thread([this] { loop(); });
  // Children that exited before the handler was installed sent no signal.
  on_sigchld(SIGCHLD);
}

ChildReaper::~ChildReaper() {
  ::sigaction(SIGCHLD, &g_previous_action, nullptr);
  g_stop = true;
  on_sigchld(SIGCHLD);
  if (thread_.joinable()) thread_.join();
  g_wake_fd = -1;
}

void ChildReaper::loop() {
  for (;;) {
    pollfd pfd{wake_read_.get(), POLLIN, 0};
    if (::poll(&pfd, 1, -1) == -1 && errno != EINTR) {
      std::perror("ChildReaper: poll");
      return;
    }
    char drain[256];
    while (::read(wake_read_.get(), drain, sizeof drain) > 0) {
    }
    if (g_stop) return;
    try {
      for (const ReapedChild& child : reap()) {
        if (on_reaped_) on_reaped_(child);
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ChildReaper: %s\n", e.what());
    }
  }
}

}  // namespace mp
