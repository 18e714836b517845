#include "bench/faults.h"

#include <sys/resource.h>

#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <utility>

#include "lib/error.h"

namespace mpbench {
namespace {

// Field 10 (minflt) of /proc/<pid>/stat; 0 for a process that is gone. The
// second field (comm) may hold spaces, so fields are counted after its ')'.
std::uint64_t peer_minor_faults(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  const std::string line((std::istreambuf_iterator<char>(in)),
                         std::istreambuf_iterator<char>());
  const auto close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  // After comm: state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8)
  // flags(9) minflt(10).
  for (int i = 3; i <= 10 && rest >> field; ++i) {
    if (i == 10) return std::stoull(field);
  }
  return 0;
}

std::uint64_t rusage_minor_faults(int who, const char* name) {
  rusage usage{};
  if (::getrusage(who, &usage) != 0) mp::internal::throw_os_error(name);
  return static_cast<std::uint64_t>(usage.ru_minflt);
}

}  // namespace

std::uint64_t minor_faults_now(const std::vector<pid_t>& peers) {
  std::uint64_t total =
      rusage_minor_faults(RUSAGE_SELF, "getrusage(RUSAGE_SELF)") +
      rusage_minor_faults(RUSAGE_CHILDREN, "getrusage(RUSAGE_CHILDREN)");
  for (pid_t pid : peers) total += peer_minor_faults(pid);
  return total;
}

MinorFaults::MinorFaults(std::vector<pid_t> peers) : peers_(std::move(peers)) {
  start();
}

void MinorFaults::start() { start_ = minor_faults_now(peers_); }

void MinorFaults::report(benchmark::State& state) const {
  const std::uint64_t now = minor_faults_now(peers_);
  state.counters["minor_faults"] = benchmark::Counter(
      static_cast<double>(now - start_), benchmark::Counter::kAvgIterations);
}

}  // namespace mpbench
