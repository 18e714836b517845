// For tests and fuzzers only (a testonly target: the shipped library has no
// such hook): write arbitrary bytes into the shared memory of a Queue or a
// channel, as a buggy or hostile peer process could, to check that readers
// refuse what they cannot trust instead of reading or writing out of bounds.
#ifndef MPBENCH_LIB_TESTING_CORRUPT_H_
#define MPBENCH_LIB_TESTING_CORRUPT_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>

namespace mp {
class Queue;
template <typename T>
class RingChannel;
}  // namespace mp

namespace mp::internal {

class ChannelCore;

struct QueueTestAccess {
  // Overwrites the ring from its start with `bytes` (truncated to the ring)
  // and sets the consumers' and producers' cursors to the given raw words.
  static void overwrite(Queue& queue, std::uint64_t head_word,
                        std::uint64_t tail_word,
                        std::span<const std::byte> bytes);
  static std::size_t ring_size(const Queue& queue);
  // Marks the producers' or consumers' lock as held by `pid`, as if that
  // process had been killed in the middle of a copy.
  static void hold_lock(Queue& queue, bool consumers, pid_t pid);
};

struct ChannelTestAccess {
  // Overwrites slot `index`'s length and data with `bytes` (truncated to the
  // slot) and marks one more message as sent.
  static void overwrite_and_post(ChannelCore& channel, std::uint64_t index,
                                 std::span<const std::byte> bytes);
  template <typename T>
  static ChannelCore& core(RingChannel<T>& channel) {
    return channel.core_;
  }
};

}  // namespace mp::internal

#endif  // MPBENCH_LIB_TESTING_CORRUPT_H_
