// What a process costs: fork, vfork, posix_spawn, fork+exec and mp::Process,
// each created and fully reaped per iteration, against std::thread; and how
// the cost grows with the parent's resident memory (rss_mib:N).
// mp::Process is measured under each start method (start:fork|forkserver|
// spawn); the fork server is started once, before any ballast, as a program
// starts it at the top of main.
//
// Every family uses real time: CPU time would not see the children.

#include <pthread.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench/ballast.h"
#include "bench/faults.h"
#include "benchmark/benchmark.h"
#include "lib/forkserver.h"
#include "lib/process.h"
#include "lib/start_method.h"
#include "lib/task.h"

extern char** environ;

namespace mp::bench {
namespace {

constexpr int64_t kRssMib[] = {0, 1, 64, 512, 2048};
constexpr int64_t kStartRssMib[] = {0, 64, 512, 2048};
char kTrue[] = "/bin/true";
char* const kTrueArgv[] = {kTrue, nullptr};

std::string errno_text(const char* call, int error) {
  return std::string(call) + ": " + std::strerror(error);
}

// Waits for `pid` and checks it exited with status 0; on failure reports
// through SkipWithError and returns false.
bool reap_ok(benchmark::State& state, pid_t pid) {
  int status = 0;
  pid_t got;
  do {
    got = ::waitpid(pid, &status, 0);
  } while (got == -1 && errno == EINTR);
  if (got != pid) {
    state.SkipWithError(errno_text("waitpid", errno).c_str());
    return false;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    state.SkipWithError(
        ("child ended with status " + std::to_string(status)).c_str());
    return false;
  }
  return true;
}

// Holds the ballast for benchmarks registered with rss_mib, none otherwise.
bool prepare(benchmark::State& state, bool with_rss) {
  try {
    hold_ballast(with_rss ? static_cast<std::size_t>(state.range(0)) : 0);
    return true;
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return false;
  }
}

void finish(benchmark::State& state) {
  state.SetItemsProcessed(state.iterations());
}

void ForkExitWait(benchmark::State& state, bool with_rss) {
  if (!prepare(state, with_rss)) return;
  mpbench::MinorFaults faults;
  faults.start();
  for (auto _ : state) {
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    if (pid == -1) {
      state.SkipWithError(errno_text("fork", errno).c_str());
      break;
    }
    if (!reap_ok(state, pid)) break;
  }
  faults.report(state);
  finish(state);
}

// vfork suspends the parent until the child calls _exit; kept out of line so
// that nothing of the caller's frame is live across it.
[[gnu::noinline]] pid_t vfork_and_exit() {
  const pid_t pid = ::vfork();
  if (pid == 0) ::_exit(0);
  return pid;
}

void Vfork(benchmark::State& state, bool with_rss) {
  if (!prepare(state, with_rss)) return;
  for (auto _ : state) {
    const pid_t pid = vfork_and_exit();
    if (pid == -1) {
      state.SkipWithError(errno_text("vfork", errno).c_str());
      break;
    }
    if (!reap_ok(state, pid)) break;
  }
  finish(state);
}

void PosixSpawn(benchmark::State& state, bool with_rss) {
  if (!prepare(state, with_rss)) return;
  for (auto _ : state) {
    pid_t pid = 0;
    if (const int error =
            ::posix_spawn(&pid, kTrue, nullptr, nullptr, kTrueArgv, environ)) {
      state.SkipWithError(errno_text("posix_spawn", error).c_str());
      break;
    }
    if (!reap_ok(state, pid)) break;
  }
  finish(state);
}

void ForkExec(benchmark::State& state, bool with_rss) {
  if (!prepare(state, with_rss)) return;
  for (auto _ : state) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::execve(kTrue, kTrueArgv, environ);
      ::_exit(127);
    }
    if (pid == -1) {
      state.SkipWithError(errno_text("fork", errno).c_str());
      break;
    }
    if (!reap_ok(state, pid)) break;
  }
  finish(state);
}

void ThreadStartJoin(benchmark::State& state, bool with_rss) {
  if (!prepare(state, with_rss)) return;
  for (auto _ : state) {
    std::thread thread([] {});
    thread.join();
  }
  finish(state);
}

int exit_zero(std::string_view) { return 0; }

// start:fork runs a closure, as fork users do; forkserver and spawn run the
// equivalent mp::Task, the only thing they can run.
void ProcessStartJoin(benchmark::State& state, StartMethod method) {
  try {
    if (method == StartMethod::forkserver && !ForkServer::running()) {
      hold_ballast(0);
      ForkServer::start();
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  if (!prepare(state, true)) return;
  // The server's own faults count too: it forks each child.
  mpbench::MinorFaults faults(method == StartMethod::forkserver
                                  ? std::vector<pid_t>{ForkServer::pid()}
                                  : std::vector<pid_t>{});
  faults.start();
  for (auto _ : state) {
    try {
      Process process = method == StartMethod::fork
                            ? Process([] {})
                            : Process(Task{exit_zero, ""});
      process.set_start_method(method);
      process.start();
      process.join();
      if (process.exitcode() != 0) {
        state.SkipWithError("mp::Process child did not exit with 0");
        break;
      }
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
      break;
    }
  }
  faults.report(state);
  finish(state);
}

using Family = void (*)(benchmark::State&, bool);

void register_family(const char* name, Family family, bool with_rss_sweep) {
  benchmark::RegisterBenchmark(name, family, false)->UseRealTime();
  if (!with_rss_sweep) return;
  auto* swept = benchmark::RegisterBenchmark(name, family, true);
  swept->ArgName("rss_mib")->UseRealTime();
  for (int64_t mib : kRssMib) swept->Arg(mib);
}

const bool registered = [] {
  register_family("BM_ForkExitWait", ForkExitWait, true);
  register_family("BM_Vfork", Vfork, true);
  register_family("BM_PosixSpawn", PosixSpawn, true);
  register_family("BM_ForkExec", ForkExec, false);
  register_family("BM_ThreadStartJoin", ThreadStartJoin, false);
  for (StartMethod method :
       {StartMethod::fork, StartMethod::forkserver, StartMethod::spawn}) {
    const std::string name =
        "BM_ProcessStartJoin/start:" + std::string(to_string(method));
    auto* swept =
        benchmark::RegisterBenchmark(name.c_str(), ProcessStartJoin, method);
    swept->ArgName("rss_mib")->UseRealTime();
    for (int64_t mib : kStartRssMib) swept->Arg(mib);
  }
  return true;
}();

}  // namespace
}  // namespace mp::bench
