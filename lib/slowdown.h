// Internal: a deliberate slowdown, compiled in only by the regression gate's
// test build.
//
//   bazel build --define=mpbench_inject=pipe
//   --define=mpbench_inject_factor=1.05
//
// (what `scripts/gate --inject pipe=1.05` passes) compiles
// MPBENCH_INJECT_PIPE=1.05 into the library, and every scope guarded by
// InjectedSlowdown<Primitive::kPipe> then takes 1.05 times as long: the scope
// is timed and the thread spins for the excess. It exists so that the gate
// can be shown to catch a 5% regression in one primitive.
//
// Without those defines (every normal build, the library users link) each
// guard is an empty object: no environment read, no branch, no code.
#ifndef MPBENCH_LIB_SLOWDOWN_H_
#define MPBENCH_LIB_SLOWDOWN_H_

#include <chrono>

namespace mp::internal {

enum class Primitive { kPipe, kQueue, kChannel, kProcess, kPool };

// The factor compiled in for each primitive (1: none).
template <Primitive P>
inline constexpr double kSlowdownFactor = 1.0;
#ifdef MPBENCH_INJECT_PIPE
template <>
inline constexpr double kSlowdownFactor<Primitive::kPipe> = MPBENCH_INJECT_PIPE;
#endif
#ifdef MPBENCH_INJECT_QUEUE
template <>
inline constexpr double kSlowdownFactor<Primitive::kQueue> =
    MPBENCH_INJECT_QUEUE;
#endif
#ifdef MPBENCH_INJECT_CHANNEL
template <>
inline constexpr double kSlowdownFactor<Primitive::kChannel> =
    MPBENCH_INJECT_CHANNEL;
#endif
#ifdef MPBENCH_INJECT_PROCESS
template <>
inline constexpr double kSlowdownFactor<Primitive::kProcess> =
    MPBENCH_INJECT_PROCESS;
#endif
#ifdef MPBENCH_INJECT_POOL
template <>
inline constexpr double kSlowdownFactor<Primitive::kPool> = MPBENCH_INJECT_POOL;
#endif

// Stretches the scope it guards by kSlowdownFactor<P>; empty when that is 1.
// Never throws.
template <Primitive P, bool kActive = (kSlowdownFactor<P> > 1.0)>
class InjectedSlowdown {
 public:
  InjectedSlowdown() = default;
  InjectedSlowdown(const InjectedSlowdown&) = delete;
  InjectedSlowdown& operator=(const InjectedSlowdown&) = delete;
};

template <Primitive P>
class InjectedSlowdown<P, true> {
 public:
  InjectedSlowdown() : begin_(std::chrono::steady_clock::now()) {}
  ~InjectedSlowdown() {
    const auto now = std::chrono::steady_clock::now();
    const auto until =
        now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                  (now - begin_) * (kSlowdownFactor<P> - 1.0));
    while (std::chrono::steady_clock::now() < until) {
    }
  }
  InjectedSlowdown(const InjectedSlowdown&) = delete;
  InjectedSlowdown& operator=(const InjectedSlowdown&) = delete;

 private:
  std::chrono::steady_clock::time_point begin_;
};

}  // namespace mp::internal

#endif  // MPBENCH_LIB_SLOWDOWN_H_
