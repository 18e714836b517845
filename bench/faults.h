// Minor page faults counted around a benchmark's timed loop.
//
// A first touch of a fresh page costs about a microsecond on a KVM guest,
// often more than the IPC it hides in. Every queue, channel and pool
// benchmark reports `minor_faults` per iteration so that such cost is seen,
// not folded into "dispatch": the faults of this process
// (getrusage(RUSAGE_SELF)), of its reaped children (RUSAGE_CHILDREN: a
// fork_map's workers), and of the live peers it names (/proc/<pid>/stat
// field 10: a pool's workers, a consumer process), which getrusage cannot
// see until they are reaped.
//
// Not thread-safe; one per benchmark run. start() and stop() read /proc and
// call getrusage: call them outside the timed region (before the loop, after
// it).
#ifndef MPBENCH_BENCH_FAULTS_H_
#define MPBENCH_BENCH_FAULTS_H_

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"

namespace mpbench {

// Minor faults so far of this process, its reaped children, and each pid of
// `peers` still alive (a peer that has exited counts through RUSAGE_CHILDREN
// once reaped, or not at all). Throws mp::OsError if getrusage fails.
std::uint64_t minor_faults_now(const std::vector<pid_t>& peers = {});

class MinorFaults {
 public:
  explicit MinorFaults(std::vector<pid_t> peers = {});
  // Starts counting (again).
  void start();
  // Sets state.counters["minor_faults"] to the faults since start() per
  // iteration of `state`.
  void report(benchmark::State& state) const;

 private:
  std::vector<pid_t> peers_;
  std::uint64_t start_ = 0;
};

}  // namespace mpbench

#endif  // MPBENCH_BENCH_FAULTS_H_
