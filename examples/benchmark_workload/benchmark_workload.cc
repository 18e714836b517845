// Benchmarking your own function as a serial loop, mp::Pool::map,
// imap_unordered, mp::fork_map and a thread pool, with one call
// (bench/workload.h). Build and run:
//
//   bazel run //examples/benchmark_workload -- --benchmark_filter=collatz
//
// Every row is a Google Benchmark (real time, items_per_second, speedup
// over the serial loop, minor_faults per iteration); the usual flags apply
// (--benchmark_out=run.json --benchmark_repetitions=5 ...).
#include <cstdint>
#include <numeric>
#include <vector>

#include "bench/workload.h"

namespace {

// The work: a plain function (a pool sends code references, not closures).
std::int64_t collatz_steps(const std::int64_t& start) {
  std::int64_t steps = 0;
  for (std::int64_t x = start + 1; x != 1; ++steps)
    x = (x % 2 == 0) ? x / 2 : 3 * x + 1;
  return steps;
}

// The items for a map of n items (made once per size, before any worker of
// that size starts, so workers inherit whatever this sets up).
std::vector<std::int64_t> starts(std::size_t n) {
  std::vector<std::int64_t> items(n);
  std::iota(items.begin(), items.end(), 0);
  return items;
}

const bool registered = [] {
  mp::bench::MapGrid grid;
  grid.items = {10'000};
  grid.chunksizes = {64};
  grid.default_chunksize = false;
  grid.workers = {2};
  mp::bench::register_map_benchmarks<collatz_steps>("collatz", starts, grid);
  return true;
}();

}  // namespace
