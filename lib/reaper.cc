#include "lib/reaper.h"

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
#include "lib/signal_pipe.h"

namespace mp {

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
    : on_reaped_(std::move(on_reaped)),
      pipe_(std::make_unique<internal::SignalPipe>(SIGCHLD, SA_NOCLDSTOP,
                                                   "ChildReaper")) {
  thread_ = std::thread([this] { loop(); });
  // Children that exited before the handler was installed sent no signal.
  pipe_->notify();
}

ChildReaper::~ChildReaper() {
  pipe_->restore();
  stop_ = true;
  pipe_->notify(false);
  if (thread_.joinable()) thread_.join();
}

void ChildReaper::loop() {
  for (;;) {
    try {
      pipe_->wait();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ChildReaper: %s\n", e.what());
      return;
    }
    if (stop_) return;
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
