#include "lib/graceful_shutdown.h"

#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <thread>
#include <vector>

#include "lib/children.h"
#include "lib/signal_pipe.h"

namespace mp {

struct GracefulShutdown::State {
  Pool* pool;
  std::chrono::milliseconds grace;
  internal::SignalPipe pipe{SIGTERM, 0, "GracefulShutdown"};
  std::thread thread;

  void run();
};

void GracefulShutdown::State::run() {
  try {
    if (!pipe.wait()) return;  // the destructor's wake-up
  } catch (const std::exception& e) {
    std::fprintf(stderr, "GracefulShutdown: %s\n", e.what());
    return;
  }
  // Stop taking tasks; running chunks finish; then every worker exits.
  pool->request_stop();
  const std::vector<pid_t> pids = pool->worker_pids();
  const auto deadline = std::chrono::steady_clock::now() + grace;
  for (pid_t pid : pids) {
    siginfo_t info{};
    for (;;) {
      info.si_pid = 0;
      // WNOWAIT: watch without reaping; the reaping below keeps the Process
      // objects' bookkeeping right.
      if (::waitid(P_PID, static_cast<id_t>(pid), &info,
                   WEXITED | WNOHANG | WNOWAIT) == -1)
        break;
      if (info.si_pid == pid) break;
      if (std::chrono::steady_clock::now() >= deadline) ::kill(pid, SIGKILL);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  for (pid_t pid : pids) internal::reap_owned(pid);
  std::fflush(nullptr);
  ::signal(SIGTERM, SIG_DFL);
  ::raise(SIGTERM);
}

GracefulShutdown::GracefulShutdown(Pool& pool, std::chrono::milliseconds grace)
    : state_(std::make_unique<State>()) {
  state_->pool = &pool;
  state_->grace = grace;
  state_->thread = std::thread([s = state_.get()] { s->run(); });
}

GracefulShutdown::~GracefulShutdown() {
  state_->pipe.restore();
  state_->pipe.notify(false);
  if (state_->thread.joinable()) state_->thread.join();
}

}  // namespace mp
