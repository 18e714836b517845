#include "bench/ring_pool.h"

#include <linux/futex.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <new>
#include <string>

#include "lib/error.h"

namespace mp::bench {

void Sleeper::block(std::chrono::nanoseconds timeout) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
  // Shared (not FUTEX_PRIVATE) so that forked peers reach the same word.
  if (::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT,
                1u, &ts, nullptr, 0) != 0 &&
      errno != EAGAIN && errno != EINTR && errno != ETIMEDOUT) {
    internal::throw_os_error("futex(FUTEX_WAIT)");
  }
}

void Sleeper::wake_one() noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, 1,
            nullptr, nullptr, 0);
}

namespace ring_pool {
namespace {

std::size_t memory_bytes(std::size_t workers) {
  return sizeof(Shared) + workers * sizeof(Channel);
}

}  // namespace

Base::Base(std::size_t workers, WorkerKind kind)
    : workers_(workers), kind_(kind), parent_pid_(::getpid()) {
  if (workers == 0) throw std::invalid_argument("ring pool: 0 workers");
  memory_ = Mapping::shared(memory_bytes(workers));
  auto* shared = new (memory_.data()) Shared();
  for (std::size_t w = 0; w < workers; ++w) {
    Channel* ch = new (&channel(w)) Channel();
    ch->tasks.data_waiter = &ch->worker;
    ch->tasks.space_waiter = &shared->parent;
    ch->results.data_waiter = &shared->parent;
    ch->results.space_waiter = &ch->worker;
  }
}

Base::~Base() { stop(); }

Channel& Base::channel(std::size_t w) const {
  return reinterpret_cast<Channel*>(memory_.bytes() + sizeof(Shared))[w];
}

Sleeper& Base::parent() const {
  return reinterpret_cast<Shared*>(memory_.data())->parent;
}

pid_t Base::fork_worker() {
  std::fflush(nullptr);  // a child must not flush the parent's buffers
  const pid_t pid = ::fork();
  if (pid < 0) internal::throw_os_error("fork");
  if (pid == 0) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent_pid_)
      exit_child(71);
  }
  return pid;
}

void Base::exit_child(int code) noexcept { ::_exit(code); }

bool Base::parent_alive() const noexcept { return ::getppid() == parent_pid_; }

void Base::thread_failed(const char* what) noexcept {
  try {
    std::lock_guard lock(failure_mutex_);
    if (thread_failure_.empty()) thread_failure_ = what;
  } catch (...) {
    // No message then; the flag below still ends the map.
  }
  thread_failed_.store(true);
}

void Base::check_workers() {
  if (thread_failed_.load()) {
    broken_ = true;
    std::lock_guard lock(failure_mutex_);
    throw RingPoolError("ring pool: worker thread failed: " + thread_failure_);
  }
  for (pid_t pid : pids_) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r < 0) internal::throw_os_error("waitpid", errno, std::to_string(pid));
    if (r == pid) {
      // Reaped here: stop() must not wait for it again.
      std::erase(pids_, pid);
      broken_ = true;
      throw RingPoolError(
          "ring pool: worker " + std::to_string(pid) +
          (WIFSIGNALED(status)
               ? " killed by signal " + std::to_string(WTERMSIG(status))
               : " exited with status " + std::to_string(WEXITSTATUS(status))));
    }
  }
}

void Base::stop() noexcept {
  for (pid_t pid : pids_) {
    if (::kill(pid, SIGKILL) != 0 && errno != ESRCH)
      std::perror("ring pool: kill");
  }
  for (pid_t pid : pids_) {
    int status;
    while (::waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) {
        std::perror("ring pool: waitpid");
        break;
      }
    }
  }
  pids_.clear();
  if (threads_.empty()) return;
  // Threads cannot be killed. An idle worker reads a stop record; one left
  // inside a chunk by an error would take it for an item, so then only the
  // flag stops it, at its next liveness check.
  stopping_.store(true);
  for (std::size_t w = 0; w < threads_.size(); ++w) {
    if (!broken_) {
      Producer<Ring> to(&channel(w).tasks);
      if (to.try_push(kStop)) to.publish();
    }
    channel(w).worker.wake();
  }
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

}  // namespace ring_pool
}  // namespace mp::bench
