#include "lib/signal_pipe.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#include "lib/error.h"

namespace mp::internal {
namespace {

constexpr char kSignalByte = 's';
constexpr char kWakeByte = 'w';

// Per signal: the write end the handler writes to, plus one (zero, the
// static initial value, means none), and what was installed before (to
// restore, and to restore in a forked child).
std::atomic<int> g_write_fd[NSIG];
struct sigaction g_previous[NSIG];

void on_signal(int signal_number) {
  const int saved = errno;
  const int fd = g_write_fd[signal_number].load(std::memory_order_relaxed) - 1;
  if (fd >= 0) {
    [[maybe_unused]] ssize_t ignored = ::write(fd, &kSignalByte, 1);
  }
  errno = saved;
}

void reset_in_child() {
  // The thread that read the pipe does not exist in a forked child.
  for (int s = 1; s < NSIG; ++s) {
    if (g_write_fd[s].exchange(0) != 0) ::sigaction(s, &g_previous[s], nullptr);
  }
}

}  // namespace

SignalPipe::SignalPipe(int signal_number, int sa_flags, const char* owner)
    : signal_number_(signal_number) {
  static std::once_flag atfork_once;
  std::call_once(atfork_once,
                 [] { ::pthread_atfork(nullptr, nullptr, reset_in_child); });
  int fds[2];
  check(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), "pipe2");
  read_end_.reset(fds[0]);
  write_end_.reset(fds[1]);
  int expected = 0;
  if (!g_write_fd[signal_number].compare_exchange_strong(
          expected, write_end_.get() + 1)) {
    throw std::logic_error(std::string(owner) + ": another one is active");
  }
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART | sa_flags;
  if (::sigaction(signal_number, &action, &g_previous[signal_number]) == -1) {
    const int error = errno;
    g_write_fd[signal_number] = 0;
    throw_os_error("sigaction", error, ::strsignal(signal_number));
  }
}

SignalPipe::~SignalPipe() { restore(); }

void SignalPipe::restore() noexcept {
  int ours = write_end_.get() + 1;
  if (g_write_fd[signal_number_].load() != ours) return;
  ::sigaction(signal_number_, &g_previous[signal_number_], nullptr);
  g_write_fd[signal_number_].compare_exchange_strong(ours, 0);
}

void SignalPipe::notify(bool signal) const noexcept {
  const char byte = signal ? kSignalByte : kWakeByte;
  [[maybe_unused]] ssize_t ignored = ::write(write_end_.get(), &byte, 1);
}

bool SignalPipe::wait() {
  for (;;) {
    pollfd pfd{read_end_.get(), POLLIN, 0};
    if (::poll(&pfd, 1, -1) == -1) {
      if (errno == EINTR) continue;
      throw_os_error("poll", errno);
    }
    bool signalled = false, any = false;
    char bytes[256];
    ssize_t n;
    while ((n = ::read(read_end_.get(), bytes, sizeof bytes)) > 0) {
      any = true;
      for (ssize_t i = 0; i < n; ++i) signalled |= bytes[i] == kSignalByte;
    }
    if (any) return signalled;
  }
}

}  // namespace mp::internal
