// Internal: a deliberate slowdown for checking the regression gate.
//
// With MPBENCH_INJECT_SLOWDOWN=<primitive> in the environment (pipe, queue,
// channel or process), that primitive's hot call takes about 10% longer: the
// call is timed and the thread then spins for a tenth of that time. It exists
// only so that `compare` can be shown to catch a 10% regression in one
// primitive (README: "Checking the gate"); unset, it costs one predictable
// branch on a value read once.
#ifndef MPBENCH_LIB_INJECT_H_
#define MPBENCH_LIB_INJECT_H_

#include <chrono>

namespace mp::internal {

enum class Primitive { kPipe, kQueue, kChannel, kProcess };

// The primitive MPBENCH_INJECT_SLOWDOWN names, or -1; read once at start.
extern const int g_injected_slowdown;

// Whether MPBENCH_INJECT_SLOWDOWN names `primitive`: one load and compare,
// on hot paths.
inline bool slowdown_injected(Primitive primitive) {
  return g_injected_slowdown == static_cast<int>(primitive);
}

// Stretches the scope it guards by 10% when the slowdown is injected.
class InjectedSlowdown {
 public:
  explicit InjectedSlowdown(Primitive primitive)
      : active_(slowdown_injected(primitive)),
        begin_(active_ ? std::chrono::steady_clock::now()
                       : std::chrono::steady_clock::time_point()) {}
  ~InjectedSlowdown() {
    if (!active_) return;
    const auto elapsed = std::chrono::steady_clock::now() - begin_;
    const auto until = std::chrono::steady_clock::now() + elapsed / 10;
    while (std::chrono::steady_clock::now() < until) {
    }
  }
  InjectedSlowdown(const InjectedSlowdown&) = delete;
  InjectedSlowdown& operator=(const InjectedSlowdown&) = delete;

 private:
  bool active_;
  std::chrono::steady_clock::time_point begin_;
};

}  // namespace mp::internal

#endif  // MPBENCH_LIB_INJECT_H_
