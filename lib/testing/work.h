// Test-only: the small work functions and inputs the pool, fork_map and
// graceful-shutdown tests share. Each is a plain function, as Pool needs.
#ifndef MPBENCH_LIB_TESTING_WORK_H_
#define MPBENCH_LIB_TESTING_WORK_H_

#include <signal.h>

#include <cstddef>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

namespace mp::testing {

inline std::int64_t twice(const std::int64_t& x) { return 2 * x; }

inline std::int64_t fail_on_17(const std::int64_t& x) {
  if (x == 17) throw std::runtime_error("seventeen is unlucky");
  return x;
}

// Throws something that is not a std::exception.
inline std::int64_t throw_42_on_13(const std::int64_t& x) {
  if (x == 13) throw 42;
  return x;
}

// Kills the worker that runs item 7 / item 5.
inline std::int64_t die_on_7(const std::int64_t& x) {
  if (x == 7) ::raise(SIGKILL);
  return x;
}
inline std::int64_t die_on_5(const std::int64_t& x) {
  if (x == 5) ::raise(SIGKILL);
  return x;
}

// A result of 1 MiB, for result-queue limits.
inline std::vector<char> mebibyte(const std::int64_t&) {
  return std::vector<char>(1 << 20, 'x');
}

// 0, 1, ..., n - 1.
inline std::vector<std::int64_t> iota(std::size_t n) {
  std::vector<std::int64_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

}  // namespace mp::testing

#endif  // MPBENCH_LIB_TESTING_WORK_H_
