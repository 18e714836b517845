#include "lib/testing/corrupt.h"

#include <algorithm>
#include <cstring>

#include "lib/channel.h"
#include "lib/channel_layout.h"
#include "lib/queue.h"
#include "lib/queue_layout.h"

namespace mp::internal {

void QueueTestAccess::overwrite(Queue& queue, std::uint64_t head_word,
                                std::uint64_t tail_word,
                                std::span<const std::byte> bytes) {
  const Ring ring = queue.ring();
  std::memcpy(ring.data, bytes.data(),
              std::min<std::size_t>(bytes.size(), ring.size));
  queue.shared().head.store(head_word);
  queue.shared().head_batched.store(head_word);
  queue.shared().tail.store(tail_word);
  // Each side's cached copy of the other's cursor, as a side that had just
  // read them would hold it.
  queue.shared().put_side.peer_cache.store(head_word);
  queue.shared().get_side.peer_cache.store(tail_word);
}

void QueueTestAccess::hold_lock(Queue& queue, bool consumers, pid_t pid) {
  QueueSide& side =
      consumers ? queue.shared().get_side : queue.shared().put_side;
  side.owner.store((std::uint64_t{static_cast<std::uint32_t>(pid)} << 32) | 1);
}

std::size_t QueueTestAccess::ring_size(const Queue& queue) {
  return queue.ring().size;
}

void ChannelTestAccess::overwrite_and_post(ChannelCore& channel,
                                           std::uint64_t index,
                                           std::span<const std::byte> bytes) {
  std::byte* target = channel.slot(index);
  const std::size_t room = sizeof(std::uint64_t) + channel.slot_bytes();
  std::memcpy(target, bytes.data(), std::min(bytes.size(), room));
  ChannelShared& c = channel.shared();
  c.written.fetch_add(1);
  c.full.post();
}

}  // namespace mp::internal
