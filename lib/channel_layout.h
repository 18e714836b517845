// Internal: the layout of a channel's shared memory, for lib/channel.cc and
// the testonly corruption writers (lib/testing/corrupt.h). Not part of the
// API.
#ifndef MPBENCH_LIB_CHANNEL_LAYOUT_H_
#define MPBENCH_LIB_CHANNEL_LAYOUT_H_

#include <atomic>
#include <boost/interprocess/sync/interprocess_semaphore.hpp>
#include <cstddef>
#include <cstdint>

#include "lib/peers.h"

namespace mp::internal {

namespace bip = boost::interprocess;

// Shared state, laid out for the hand-off's cache traffic: the sender alone
// writes `written`, the receiver alone `taken`, each on its own line;
// `closed` is read-mostly. The first slot starts right after
// the "full" semaphore, in the same cache line, so a small message, its
// length and the post that announces it travel to the receiver as one line.
// `written - taken` counts filled slots, so a "full" token with no message
// behind it (the one close() posts) is recognised as the end of the stream;
// the receiver compares them only once `closed` is set. The geometry is not
// here: each process keeps its own copy (ChannelCore), so a corrupted peer
// cannot steer copies out of bounds.
struct ChannelShared {
  std::atomic<std::uint32_t> closed{0};
  alignas(64) std::atomic<std::uint64_t> written{0};
  alignas(64) std::atomic<std::uint64_t> taken{0};
  alignas(64) PeerTable peers;
  alignas(64) bip::interprocess_semaphore empty;  // free slots
  alignas(
      64) bip::interprocess_semaphore full;  // filled slots (+1 after close)
  // Slots follow `full` directly: see slots_offset().

  explicit ChannelShared(std::size_t n)
      : empty(static_cast<unsigned>(n)), full(0) {}

  // Each slot is a u64 length and the data, padded to whole cache lines.
  static constexpr std::size_t stride_for(std::size_t bytes) {
    return (sizeof(std::uint64_t) + bytes + 63) / 64 * 64;
  }
  static constexpr std::size_t slots_offset() {
    return offsetof(ChannelShared, full) + sizeof(bip::interprocess_semaphore);
  }
  static constexpr std::size_t size_for(std::size_t n, std::size_t bytes) {
    return slots_offset() + n * stride_for(bytes);
  }
};

static_assert(ChannelShared::slots_offset() % 8 == 0,
              "slot lengths and data stay 8-byte aligned");

}  // namespace mp::internal

#endif  // MPBENCH_LIB_CHANNEL_LAYOUT_H_
