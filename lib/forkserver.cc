#include "lib/forkserver.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>

#include "lib/children.h"
#include "lib/error.h"
#include "lib/fd.h"
#include "lib/task.h"

namespace mp {
namespace {

using internal::ChildTable;

constexpr std::uint32_t kRequestMagic = 0x6d706673;  // "mpfs"
constexpr std::size_t kMaxFds = kMaxTaskFds + 1;     // a task's memfd first

// glibc keeps each thread's kernel id in its thread descriptor (the memory at
// pthread_self()); fork updates it through CLONE_CHILD_SETTID, and robust and
// priority-inheritance mutexes store it as their owner. The server's raw clone
// must do the same for its children, so it finds the field: the offsets in
// the descriptor that hold the thread's id, in two threads with different ids.
// Well inside the descriptor (over 2 KiB in every glibc since 2.25); the
// field sits at 720 bytes on x86_64.
constexpr std::size_t kDescriptorScan = 1024;
constexpr int kMaxCandidates = 16;

struct Candidates {
  int count = 0;
  std::size_t offsets[kMaxCandidates] = {};
};

Candidates tid_candidates() noexcept {
  Candidates found;
  const auto tid = static_cast<pid_t>(::syscall(SYS_gettid));
  const auto* self = reinterpret_cast<const unsigned char*>(::pthread_self());
  for (std::size_t offset = 0; offset + sizeof(pid_t) <= kDescriptorScan;
       offset += alignof(pid_t)) {
    pid_t value;
    std::memcpy(&value, self + offset, sizeof value);
    if (value == tid && found.count < kMaxCandidates)
      found.offsets[found.count++] = offset;
  }
  return found;
}

// The server's own state (set once in the server, before it serves).
pid_t* g_tid_field = nullptr;
void* g_robust_head = nullptr;
std::size_t g_robust_length = 0;

struct Ready {
  std::int32_t error = 0;  // 0, or an errno value
};
struct Request {
  std::uint32_t magic = kRequestMagic;
  std::uint32_t fd_count = 0;
  // Bytes of task after this header; 0: the task is in the first fd.
  std::uint64_t task_size = 0;
};

// The server receives each inline task here; a child it forks reads the task
// from its copy, with no system call and no page fault (the page was written
// before the fork, so its mapping is copied).
alignas(64) char g_task[internal::kInlineTask];
struct Reply {
  std::int32_t pid_or_error = 0;  // > 0 pid, else minus an errno value
};

bool send_all(int socket, const void* data, std::size_t size) noexcept {
  const ssize_t n = internal::retry_on_eintr(
      [&] { return ::send(socket, data, size, MSG_NOSIGNAL); });
  return n == static_cast<ssize_t>(size);
}

pid_t clone_worker() noexcept {
  const unsigned long flags = CLONE_PARENT | CLONE_CHILD_SETTID | SIGCHLD;
#if defined(__x86_64__) || defined(__i386__)
  return static_cast<pid_t>(
      ::syscall(SYS_clone, flags, nullptr, nullptr, g_tid_field, nullptr));
#else
  return static_cast<pid_t>(
      ::syscall(SYS_clone, flags, nullptr, nullptr, nullptr, g_tid_field));
#endif
}

// Gives SIGINT its default action back in a child of the server. Through
// syscall(), whose page the child has just run: signal() would run two more
// pages of libc's code, each a page fault in a fresh child.
void default_sigint() noexcept {
#if defined(__x86_64__) || defined(__aarch64__)
  // The kernel's struct sigaction on these: handler, flags, restorer, mask.
  struct {
    void* handler;
    unsigned long flags;
    void* restorer;
    std::uint64_t mask;
  } action = {nullptr, 0, nullptr, 0};  // SIG_DFL
  static_assert(SIG_DFL == nullptr);
  ::syscall(SYS_rt_sigaction, SIGINT, &action, nullptr, sizeof action.mask);
#else
  ::signal(SIGINT, SIG_DFL);
#endif
}

[[noreturn]] void serve(int socket, const Candidates& parent) noexcept {
  // Handlers and ignored signals are the program's, not its children's (as
  // under spawn).
  for (int signal_number = 1; signal_number < NSIG; ++signal_number) {
    if (signal_number != SIGKILL && signal_number != SIGSTOP)
      ::signal(signal_number, SIG_DFL);
  }
  // A Ctrl-C in the terminal goes to the whole process group: the program
  // decides what it means, and may still start children afterwards (as
  // CPython's fork server, which ignores SIGINT too). Children get the
  // default back.
  ::signal(SIGINT, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  int keep = socket;
  internal::close_fds_except(std::span<int>(&keep, 1));

  Ready ready;
  const Candidates own = tid_candidates();
  int matches = 0;
  for (int i = 0; i < own.count; ++i) {
    for (int j = 0; j < parent.count; ++j) {
      if (own.offsets[i] != parent.offsets[j]) continue;
      ++matches;
      g_tid_field = reinterpret_cast<pid_t*>(
          reinterpret_cast<unsigned char*>(::pthread_self()) + own.offsets[i]);
    }
  }
  if (matches != 1) ready.error = ENOTSUP;
  if (::syscall(SYS_get_robust_list, 0, &g_robust_head, &g_robust_length) !=
      0) {
    ready.error = errno;
  }
  if (!send_all(socket, &ready, sizeof ready) || ready.error != 0) _exit(1);

  for (;;) {
    Request request;
    iovec iov[2] = {{&request, sizeof request}, {g_task, sizeof g_task}};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msghdr message{};
    message.msg_iov = iov;
    message.msg_iovlen = 2;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    const ssize_t n = internal::retry_on_eintr(
        [&] { return ::recvmsg(socket, &message, MSG_CMSG_CLOEXEC); });
    if (n == 0) _exit(0);  // every holder of the other end has closed it
    if (n == -1) _exit(1);

    int fds[kMaxFds];
    std::size_t fd_count = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr;
         c = CMSG_NXTHDR(&message, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        if (fd_count < kMaxFds) {
          fds[fd_count++] = fd;
        } else {
          ::close(fd);
        }
      }
    }
    Reply reply;
    const bool in_fd = request.task_size == 0;
    if (n < static_cast<ssize_t>(sizeof request) ||
        request.magic != kRequestMagic ||
        static_cast<std::size_t>(n) != sizeof request + request.task_size ||
        (message.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) != 0 ||
        request.fd_count != fd_count || (in_fd && fd_count == 0)) {
      reply.pid_or_error = -EPROTO;
    } else {
      const pid_t pid = clone_worker();
      if (pid == 0) {
        // The kernel starts a new task with no robust list; glibc's fork
        // registers it again, and so must we.
        ::syscall(SYS_set_robust_list, g_robust_head, g_robust_length);
        default_sigint();
        if (in_fd) {
          internal::worker_main_from_fd(
              fds[0], std::span<const int>(fds + 1, fd_count - 1));
        }
        internal::worker_main(std::string_view(g_task, request.task_size),
                              std::span<const int>(fds, fd_count));
      }
      reply.pid_or_error = pid > 0 ? pid : -errno;
    }
    for (std::size_t i = 0; i < fd_count; ++i) ::close(fds[i]);
    if (!send_all(socket, &reply, sizeof reply)) _exit(1);
  }
}

// This process's client side. Rebuilt in a forked child, which must not use
// its parent's channel (the two would interleave requests) nor the mutex some
// parent thread may have held at fork.
class State {
 public:
  static State& instance() {
    alignas(State) static unsigned char bytes[sizeof(State)];
    static State* const state = new (bytes) State();  // never destroyed
    const pid_t self = ::getpid();
    pid_t owner = state->owner_.load(std::memory_order_acquire);
    while (owner != self) {
      if (owner != -self && state->owner_.compare_exchange_strong(
                                owner, -self, std::memory_order_acquire)) {
        new (&state->mutex) std::mutex();
        // The inherited channel is the parent's: close our copy of it, if the
        // descriptor still is that socket (a forkserver child closed it at
        // birth, and the number may now be one of its task's fds).
        if (state->control) {
          struct stat st;
          const int fd = state->control.release();
          if (::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
              st.st_ino == state->control_inode) {
            ::close(fd);
          }
        }
        state->server = 0;
        state->dead = false;
        state->started = false;
        state->owner_.store(self, std::memory_order_release);
        break;
      }
      std::this_thread::yield();
      owner = state->owner_.load(std::memory_order_acquire);
    }
    return *state;
  }

  std::mutex mutex;  // taken after the child table's mutex, never before
  pid_t server = 0;
  Fd control;
  ino_t control_inode = 0;
  bool started = false;  // a server was started (and not stopped)
  bool dead = false;     // ... and found dead
  std::string death;     // how it died

 private:
  State() = default;
  std::atomic<pid_t> owner_{0};
};

// With the child table's mutex held: waits for the server (which has exited
// or been sent SIGKILL) and drops its record. Returns its exit code text.
std::string reap_server_locked(pid_t pid) noexcept {
  int status = 0;
  const pid_t got =
      internal::retry_on_eintr([&] { return ::waitpid(pid, &status, 0); });
  ChildTable& table = ChildTable::instance();
  if (got != pid) {
    // A reaper collected it first and left its status in the record.
    if (internal::ChildRecord* record = table.find(pid);
        record != nullptr && record->reaped) {
      status = record->status;
    } else {
      table.remove(pid);
      return "status unknown";
    }
  }
  table.remove(pid);
  return "exit code " + std::to_string(internal::exit_code_from_status(status));
}

// With both mutexes held: kills (if `kill`) and reaps the server, closes the
// channel and marks it dead.
void bury_locked(State& state, bool kill, const std::string& why) noexcept {
  if (kill) ::kill(state.server, SIGKILL);
  state.control.reset();
  const std::string code = reap_server_locked(state.server);
  state.death = "fork server (pid " + std::to_string(state.server) + ") " +
                why + " (" + code + ")";
  state.dead = true;
  state.server = 0;
}

std::atomic<std::int64_t> g_reply_timeout_ms{
    ForkServer::kDefaultReplyTimeout.count()};

// Waits for `socket` to be readable until the reply timeout; false on timeout.
bool wait_readable(int socket) {
  const auto deadline =
      std::chrono::steady_clock::now() + ForkServer::reply_timeout();
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd pfd{socket, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(left.count()) + 1);
    if (ready > 0) return true;
    if (ready == -1 && errno != EINTR) internal::throw_os_error("poll");
  }
}

}  // namespace

std::chrono::milliseconds ForkServer::reply_timeout() noexcept {
  return std::chrono::milliseconds(
      g_reply_timeout_ms.load(std::memory_order_relaxed));
}

void ForkServer::set_reply_timeout(std::chrono::milliseconds timeout) noexcept {
  g_reply_timeout_ms.store(timeout.count(), std::memory_order_relaxed);
}

void ForkServer::start() {
  ChildTable& table = ChildTable::instance();
  State& state = State::instance();
  std::lock_guard table_lock(table.mutex());
  std::lock_guard lock(state.mutex);
  if (state.server != 0) return;

  const Candidates parent = tid_candidates();
  int sockets[2];
  internal::check(
      ::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sockets),
      "socketpair");
  Fd ours(sockets[0]);
  Fd theirs(sockets[1]);
  // The server's children would write whatever is buffered again.
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid == 0) serve(theirs.get(), parent);
  if (pid == -1) internal::throw_os_error("fork", errno, "fork server");
  try {
    table.add(pid, /*daemon=*/true);
  } catch (...) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw;
  }
  theirs.reset();
  state.server = pid;
  struct stat st;
  internal::check(::fstat(ours.get(), &st), "fstat");
  state.control_inode = st.st_ino;
  state.control = std::move(ours);
  state.started = true;
  state.dead = false;

  Ready ready;
  ready.error = EPROTO;
  bool answered = false;
  if (wait_readable(state.control.get())) {
    answered = internal::retry_on_eintr([&] {
                 return ::recv(state.control.get(), &ready, sizeof ready, 0);
               }) == static_cast<ssize_t>(sizeof ready);
  }
  if (answered && ready.error == 0) return;
  bury_locked(state, true, "failed to start");
  if (answered && ready.error == ENOTSUP) {
    throw std::runtime_error(
        "mp::ForkServer::start: cannot locate the thread id in glibc's thread "
        "descriptor; StartMethod::forkserver is unavailable here");
  }
  if (answered) internal::throw_os_error("fork server start", ready.error);
  throw PeerError(state.death);
}

bool ForkServer::running() {
  State& state = State::instance();
  std::lock_guard lock(state.mutex);
  return state.server != 0;
}

pid_t ForkServer::pid() {
  State& state = State::instance();
  std::lock_guard lock(state.mutex);
  return state.server;
}

void ForkServer::stop() noexcept {
  ChildTable& table = ChildTable::instance();
  State& state = State::instance();
  std::lock_guard table_lock(table.mutex());
  std::lock_guard lock(state.mutex);
  if (state.server != 0) bury_locked(state, true, "stopped");
  state.started = false;
  state.dead = false;
}

namespace internal {

void ensure_fork_server() {
  {
    State& state = State::instance();
    std::lock_guard lock(state.mutex);
    if (state.started) return;
  }
  ForkServer::start();
}

pid_t forkserver_start_worker(std::string_view task, std::span<const int> fds) {
  State& state = State::instance();
  std::lock_guard lock(state.mutex);
  if (state.dead) {
    throw PeerError(state.death +
                    "; call mp::ForkServer::start() to start another");
  }
  if (state.server == 0) {
    throw std::logic_error("no fork server: call mp::ForkServer::start()");
  }
  if (fds.size() > kMaxTaskFds)
    throw std::invalid_argument("mp::Task: too many fds");

  Fd task_fd;
  int sent_fds[kMaxFds];
  std::size_t count = 0;
  Request request;
  if (task.size() > kInlineTask || task.empty()) {
    task_fd = task_memfd(task);
    sent_fds[count++] = task_fd.get();
  } else {
    request.task_size = task.size();
  }
  for (int fd : fds) sent_fds[count++] = fd;
  request.fd_count = static_cast<std::uint32_t>(count);

  iovec iov[2] = {{&request, sizeof request},
                  {const_cast<char*>(task.data()), request.task_size}};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  msghdr message{};
  message.msg_iov = iov;
  message.msg_iovlen = 2;
  if (count > 0) {
    message.msg_control = control;
    message.msg_controllen = CMSG_SPACE(sizeof(int) * count);
    cmsghdr* c = CMSG_FIRSTHDR(&message);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * count);
    std::memcpy(CMSG_DATA(c), sent_fds, sizeof(int) * count);
  }

  const ssize_t sent = retry_on_eintr(
      [&] { return ::sendmsg(state.control.get(), &message, MSG_NOSIGNAL); });
  if (sent == -1) {
    const int error = errno;
    if (error == EPIPE || error == ECONNRESET) {
      bury_locked(state, false, "has died");
      throw PeerError(state.death);
    }
    throw_os_error("sendmsg", error, "fork server");
  }
  if (!wait_readable(state.control.get())) {
    bury_locked(state, true, "did not answer in time and was killed");
    throw TimeoutError(state.death);
  }
  Reply reply;
  const ssize_t got = retry_on_eintr(
      [&] { return ::recv(state.control.get(), &reply, sizeof reply, 0); });
  if (got != static_cast<ssize_t>(sizeof reply)) {
    bury_locked(state, got != 0, "has died");
    throw PeerError(state.death);
  }
  if (reply.pid_or_error <= 0)
    throw_os_error("clone", -reply.pid_or_error, "fork server");
  return reply.pid_or_error;
}

}  // namespace internal
}  // namespace mp
