// Internal: the shared-memory layout of mp::SpscRing, for lib/spsc_ring.cc
// and the testonly corruption writer (lib/spsc_ring_testing.h). Not API.
//
// [SpscShared][ring: capacity bytes, a power of two]
//
// Cursors are byte counts since creation (64-bit, never wrap in practice);
// a frame starts at position p, at ring offset p & (capacity - 1), and p is
// a multiple of 8. A frame is
//   [u32 length][u32 kind][payload: length bytes, zero-padded to 8]
// and never wraps: when it does not fit before the end of the ring, a kPad
// frame covers the rest. A streamed message is a kFirst frame, whose payload
// starts with the u64 length of the whole message, then kMiddle frames, then
// a kLast frame; a message sent in one piece is a kWhole frame.
#ifndef MPBENCH_LIB_SPSC_RING_INTERNAL_H_
#define MPBENCH_LIB_SPSC_RING_INTERNAL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "lib/peers.h"
#include "lib/wait.h"

namespace mp::internal {

enum SpscFrameKind : std::uint32_t {
  kSpscWhole = 1,
  kSpscFirst = 2,
  kSpscMiddle = 3,
  kSpscLast = 4,
  kSpscPad = 5,
};

inline constexpr std::uint64_t spsc_frame_bytes(std::uint64_t length) {
  return 8 + ((length + 7) & ~std::uint64_t{7});
}

// Each cursor on its own cache line: the producer writes `tail`, the
// consumer `head`; each reads the other's only when its cached copy runs
// out. The events sit on lines of their own, written only by a side about
// to sleep and by the side that wakes it.
struct SpscShared {
  alignas(64) std::atomic<std::uint64_t> tail{0};
  alignas(64) std::atomic<std::uint64_t> head{0};
  SharedEvent data;   // the consumer sleeps here for frames
  SharedEvent space;  // the producer sleeps here for room
  alignas(64) std::atomic<std::uint32_t> closed{0};
  PeerTable peers;
};

inline constexpr std::size_t kSpscDataOffset =
    (sizeof(SpscShared) + 63) / 64 * 64;

}  // namespace mp::internal

#endif  // MPBENCH_LIB_SPSC_RING_INTERNAL_H_
