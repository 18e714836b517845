// Internal: the layout of a Queue's shared memory, for lib/queue.cc and the
// testonly corruption writers (lib/testing/corrupt.h). Not part of the API.
#ifndef MPBENCH_LIB_QUEUE_LAYOUT_H_
#define MPBENCH_LIB_QUEUE_LAYOUT_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "lib/peers.h"
#include "lib/wait.h"

namespace mp::internal {

// One side of the queue (producers or consumers): a light lock, held only
// while one record is copied in or out (never while waiting), and that
// side's cached copy of the other side's cursor, valid under the lock.
// `owner` is 0 when free, else (pid << 32) | a per-thread number, so a
// waiter can tell a dead owner (its pid gone) and take the lock over: the
// cursors leave every state the owner can have died in a valid one. The
// cached cursor is always a value the other side really published, so a
// stale one is conservative (less room, fewer messages than there are).
struct QueueSide {
  alignas(64) std::atomic<std::uint64_t> owner{0};
  std::atomic<std::uint64_t> peer_cache{0};
};

// The queue's shared state. Each side publishes its position in the ring and
// its message count in one atomic word (a cursor), so a process killed at any
// instant leaves both consistent: a put is either fully published or not at
// all, likewise a get. Positions are bytes modulo 2^40 and counts messages
// modulo 2^24, which bounds capacity at 2^39 bytes and a queue at 2^24 - 1
// messages (differences stay exact). Producers write `tail`, consumers
// `head`; each sits on its own cache line, as does each side's lock.
//
// When the queue's policy spins, the consumers also publish a copy of `head`
// in batches (`head_batched`: after an eighth of the capacity or of
// max_items, at most 4 KiB, and whenever they catch up with the producers).
// Producers that spin poll that copy while they wait for room, so a waiting
// producer does not pull away the line that consumers write on every get (which
// stalled each get for a round trip between cores). It is never ahead of
// `head`: a producer that reads it sees less room than there is, never more,
// and one that finds no room there reads `head` itself before it sleeps or
// gives up.
struct QueueShared {
  QueueSide put_side;  // producers: owner, cached head
  QueueSide get_side;  // consumers: owner, cached tail

  alignas(64) std::atomic<std::uint64_t> tail{0};  // producers' cursor
  alignas(64) std::atomic<std::uint64_t> head{0};  // consumers' cursor
  alignas(64) std::atomic<std::uint64_t> head_batched{0};
  alignas(64) std::atomic<std::uint32_t> closed{0};
  alignas(64) std::atomic<std::uint32_t> done{0};  // task_done calls, mod 2^24

  SharedEvent not_empty;
  SharedEvent not_full;
  // The newest event sequence a sleeper on not_empty / not_full announced
  // (modulo 2^32): a waker that finds the event's sequence already past it
  // knows every sleeper has been woken (their FUTEX_WAIT on an older value
  // fails), so a wake-up in flight costs one system call, not one per
  // message while the sleeper is being scheduled back in.
  alignas(64) std::atomic<std::uint32_t> not_empty_announced{0};
  std::atomic<std::uint32_t> not_full_announced{0};
  SharedEvent all_done;
  PeerTable peers;

  std::byte* ring() {
    return reinterpret_cast<std::byte*>(this) + ring_offset();
  }
  static constexpr std::size_t ring_offset() {
    return (sizeof(QueueShared) + 63) / 64 * 64;
  }
};

// The ring as this process mapped it. Its size comes from the Queue object,
// never from shared memory, so a corrupted peer cannot steer copies out of
// bounds.
struct Ring {
  std::byte* data;
  std::uint64_t size;  // power of two
};

}  // namespace mp::internal

#endif  // MPBENCH_LIB_QUEUE_LAYOUT_H_
