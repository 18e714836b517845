// A process pool mapping your own function over your data: mp::Pool, the
// C++ counterpart of Python's
//
//   with multiprocessing.Pool(2) as pool:
//       steps = pool.map(collatz_steps, range(1, 200001), chunksize=1024)
//
// Copy this file, replace collatz_steps with your function (one argument,
// one result, a plain function or a captureless lambda: the workers are
// forked copies of this program and receive a reference to the code, as
// Python pickles a function by name) and the items with your data. Items
// and results travel between processes through mp::Codec: numbers, plain
// structs, std::string, std::vector and std::pair work as they are.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <numeric>
#include <span>
#include <vector>

#include "lib/pool.h"

namespace {

// The work: steps of the Collatz sequence from n down to 1.
std::uint64_t collatz_steps(const std::uint64_t& n) {
  std::uint64_t steps = 0;
  for (std::uint64_t x = n; x != 1; ++steps)
    x = (x % 2 == 0) ? x / 2 : 3 * x + 1;
  return steps;
}

int run() {
  std::vector<std::uint64_t> items(200000);
  std::iota(items.begin(), items.end(), std::uint64_t{1});

  mp::Pool pool(2);  // two worker processes (mp::PoolOptions for more)

  // map: results in the order of the items. A chunk of 1024 items travels
  // as one message: the larger the chunk, the less the pool costs per item.
  std::vector<std::uint64_t> steps =
      pool.map(collatz_steps, std::span<const std::uint64_t>(items), 1024);

  // imap_unordered: results as workers finish them, in any order.
  std::uint64_t total = 0;
  for (std::uint64_t s : pool.imap_unordered(
           collatz_steps, std::span<const std::uint64_t>(items), 1024)) {
    total += s;
  }
  pool.close();
  pool.join();

  // The same answers as a plain loop in this process.
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (steps[i] != collatz_steps(items[i])) {
      std::fprintf(stderr, "pool_map: item %zu: pool %llu, loop %llu\n", i,
                   static_cast<unsigned long long>(steps[i]),
                   static_cast<unsigned long long>(collatz_steps(items[i])));
      return 1;
    }
  }
  const std::uint64_t expected =
      std::accumulate(steps.begin(), steps.end(), std::uint64_t{0});
  if (total != expected) {
    std::fprintf(stderr, "pool_map: imap_unordered total %llu, map %llu\n",
                 static_cast<unsigned long long>(total),
                 static_cast<unsigned long long>(expected));
    return 1;
  }
  const auto longest = std::max_element(steps.begin(), steps.end());
  std::printf(
      "pool_map: %zu items on %d workers; longest chain: %llu (%llu steps)\n",
      items.size(), pool.workers(),
      static_cast<unsigned long long>(items[longest - steps.begin()]),
      static_cast<unsigned long long>(*longest));
  return 0;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const std::exception& e) {  // mp::TaskError, mp::WorkerLost, ...
    std::fprintf(stderr, "pool_map: %s\n", e.what());
    return 1;
  }
}
