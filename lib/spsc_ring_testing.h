// Test-only: write into an mp::SpscRing's shared memory what a buggy or
// hostile producer could, so that tests and fuzzers check that the reader
// refuses what it cannot trust.
#ifndef MPBENCH_LIB_SPSC_RING_TESTING_H_
#define MPBENCH_LIB_SPSC_RING_TESTING_H_

#include <algorithm>
#include <cstdint>
#include <span>

#include "lib/spsc_ring.h"
#include "lib/spsc_ring_internal.h"

namespace mp::internal {

struct SpscRingTestAccess {
  // Copies `bytes` (truncated to the ring) to the ring's start and sets the
  // consumer's cursor to `head` and the published tail to `tail`.
  static void overwrite(SpscRing& ring, std::uint64_t head, std::uint64_t tail,
                        std::span<const std::byte> bytes) {
    std::copy_n(bytes.begin(), std::min(bytes.size(), ring.capacity_bytes()),
                ring.data());
    ring.shared().head.store(head);
    ring.shared().tail.store(tail);
    ring.read_ = head;
    ring.tail_cache_ = head;
  }
  // The ring's bytes (capacity_bytes() of them).
  static std::byte* bytes(SpscRing& ring) { return ring.data(); }
  // The producer's published cursor.
  static std::uint64_t tail(const SpscRing& ring) {
    return ring.shared().tail.load();
  }
  static void set_tail(SpscRing& ring, std::uint64_t tail) {
    ring.shared().tail.store(tail);
  }
};

}  // namespace mp::internal

#endif  // MPBENCH_LIB_SPSC_RING_TESTING_H_
