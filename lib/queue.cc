#include "lib/queue.h"

#include <sched.h>

#include <bit>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

#include "lib/queue_layout.h"
#include "lib/slowdown.h"

namespace mp {
namespace internal {

namespace {

constexpr std::size_t kRecordHeader = sizeof(std::uint32_t);
constexpr int kPositionBits = 40;
constexpr std::uint64_t kPositionMask = (std::uint64_t{1} << kPositionBits) - 1;
constexpr std::uint32_t kCountMask = (1u << 24) - 1;
constexpr std::uint64_t kMaxCapacity = std::uint64_t{1} << 39;
// How far ahead of its copies a side asks for the ring's cache lines
// (prefetch_lines), and at most how many lines per message.
constexpr std::uint64_t kPrefetchAhead = 1024;
constexpr int kPrefetchLines = 4;
// The room a producer that found the queue full waits for beyond its own
// record, while it spins (put_impl), capped at a quarter of the capacity.
constexpr std::uint64_t kBatchRoom = 4096;

struct Cursor {
  std::uint64_t position;  // modulo 2^40
  std::uint32_t count;     // modulo 2^24
  static Cursor unpack(std::uint64_t word) {
    return {word & kPositionMask,
            static_cast<std::uint32_t>(word >> kPositionBits)};
  }
  std::uint64_t pack() const {
    return (std::uint64_t{count & kCountMask} << kPositionBits) |
           (position & kPositionMask);
  }
  Cursor advanced(std::uint64_t bytes) const {
    return {(position + bytes) & kPositionMask, (count + 1) & kCountMask};
  }
};

std::uint64_t bytes_between(const Cursor& from, const Cursor& to) {
  return (to.position - from.position) & kPositionMask;
}
std::uint32_t messages_between(const Cursor& from, const Cursor& to) {
  return (to.count - from.count) & kCountMask;
}
Cursor load(const std::atomic<std::uint64_t>& word) {
  return Cursor::unpack(word.load(std::memory_order_acquire));
}

// An empty message may come with (or go to) a null pointer, which memcpy must
// not get even for zero bytes.
// Inline, with one plain copy when the bytes do not wrap round the ring's
// end (almost always): a record header becomes one 4-byte move instead of
// two library calls.
inline void copy_in(const Ring& ring, std::uint64_t position, const void* data,
                    std::size_t size) {
  if (size == 0) return;
  const std::size_t offset = position & (ring.size - 1);
  if (offset + size <= ring.size) [[likely]] {
    std::memcpy(ring.data + offset, data, size);
    return;
  }
  const std::size_t first = ring.size - offset;
  std::memcpy(ring.data + offset, data, first);
  std::memcpy(ring.data, static_cast<const std::byte*>(data) + first,
              size - first);
}

inline void copy_out(const Ring& ring, std::uint64_t position, void* data,
                     std::size_t size) {
  if (size == 0) return;
  const std::size_t offset = position & (ring.size - 1);
  if (offset + size <= ring.size) [[likely]] {
    std::memcpy(data, ring.data + offset, size);
    return;
  }
  const std::size_t first = ring.size - offset;
  std::memcpy(data, ring.data + offset, first);
  std::memcpy(static_cast<std::byte*>(data) + first, ring.data, size - first);
}

std::uint32_t record_length(const Ring& ring, std::uint64_t position) {
  std::uint32_t length;
  copy_out(ring, position, &length, sizeof length);
  return length;
}

// This thread's lock-owner word: its pid (a forked child gets its own) and
// a number unique among the threads of the process.
std::uint64_t owner_word() {
  static std::atomic<std::uint32_t> threads{0};
  thread_local const std::uint32_t thread =
      threads.fetch_add(1, std::memory_order_relaxed) + 1;
  return (std::uint64_t{static_cast<std::uint32_t>(current_pid())} << 32) |
         thread;
}

// A side's light lock (QueueSide), released on destruction. It is held for
// one copy only, so a waiter spins (pause, then sched_yield) and, past the
// policy's spin budget, naps in short sleeps; every liveness_check it checks
// whether the owner's process is still alive and, if not, takes the lock
// over. Waits at most until `deadline`, but always a few hundred pauses
// first, so that a try_ form is not refused for another's copy in progress.
class SideLock {
 public:
  SideLock(QueueSide& side, const WaitPolicy& policy, const Deadline& deadline)
      : side_(side), self_(owner_word()) {
    std::uint64_t seen = 0;
    if (side_.owner.compare_exchange_strong(
            seen, self_, std::memory_order_acquire)) [[likely]] {
      locked_ = true;
      return;
    }
    locked_ = acquire_slowly(policy, deadline);
  }
  ~SideLock() { unlock(); }
  SideLock(const SideLock&) = delete;
  SideLock& operator=(const SideLock&) = delete;

  bool locked() const { return locked_; }
  void unlock() {
    if (locked_) side_.owner.store(0, std::memory_order_release);
    locked_ = false;
  }

 private:
  bool try_take(std::uint64_t& seen) {
    return seen == 0 && side_.owner.compare_exchange_strong(
                            seen, self_, std::memory_order_acquire);
  }
  bool acquire_slowly(const WaitPolicy& policy, const Deadline& deadline) {
    const auto start = Clock::now();
    auto next_check = start + policy.liveness_check;
    for (unsigned i = 1;; ++i) {
      std::uint64_t seen = side_.owner.load(std::memory_order_relaxed);
      if (try_take(seen)) return true;
      if (i < 512) {
        cpu_relax();
        if ((i & 63) == 0) sched_yield();
        continue;
      }
      const auto now = Clock::now();
      if (deadline.passed()) return false;
      if (now >= next_check) {
        next_check = now + policy.liveness_check;
        const auto pid = static_cast<pid_t>(seen >> 32);
        if (seen != 0 && pid != current_pid() && !process_alive(pid) &&
            side_.owner.compare_exchange_strong(seen, self_,
                                                std::memory_order_acquire)) {
          return true;  // its owner died holding it
        }
      }
      if (now - start < policy.spin) {
        cpu_relax();
        if ((i & 63) == 0) sched_yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
    }
  }

  QueueSide& side_;
  const std::uint64_t self_;
  bool locked_ = false;
};

// After publishing a cursor: wakes the other side's sleepers, if any and if
// no wake-up is already on its way to them. The test of sleepers is a
// read-modify-write, not a load: a sleeper announces itself with one on the
// same word (and then its sequence in `announced`) before it checks the
// cursor again (sleep_until_ready), so either that check comes after this
// and sees the new cursor, or this comes after the announcement and sees it.
// A sleeper sleeps only while the event's sequence is the one it announced
// (FUTEX_WAIT on it), so once the sequence has moved past the newest
// announcement every sleeper is awake or on its way: no system call then.
// Without that test a side would make one futex call per message for as
// long as the woken one takes to be scheduled back in. The words are written
// by the waking side only while nobody sleeps, so their lines stay with it.
void wake_sleepers(SharedEvent& event,
                   const std::atomic<std::uint32_t>& announced, bool light) {
  if (light) {
    // The sleeper's heavy_fence orders this load after the cursor's store
    // (lib/spsc_ring.cc, "light"): no locked instruction per message.
    std::atomic_signal_fence(std::memory_order_seq_cst);
    if (event.sleepers.load(std::memory_order_relaxed) == 0) return;
  } else if (event.sleepers.fetch_add(0, std::memory_order_seq_cst) == 0) {
    return;
  }
  if (announced.load(std::memory_order_seq_cst) !=
      event.sequence.load(std::memory_order_seq_cst))
    return;
  event.notify_all();
}

// Whether this process publishes with light fences (wait.h,
// enable_light_fences): registered once per process, again after fork.
bool light_fences() {
  static std::atomic<std::uint64_t> state{0};  // pid << 1 | light
  const std::uint64_t self = static_cast<std::uint32_t>(current_pid());
  const std::uint64_t seen = state.load(std::memory_order_relaxed);
  if ((seen >> 1) == self) [[likely]]
    return (seen & 1) != 0;
  const bool light = enable_light_fences();
  state.store((self << 1) | (light ? 1 : 0), std::memory_order_relaxed);
  return light;
}

// Asks for the cache lines of the `bytes` bytes of the ring from position
// `from`, at most kPrefetchLines of them, ahead of the copies that will need
// them: the side's next locked instruction waits for its earlier stores, and
// a store to a line that the other side holds waits for that line to come
// over, so without this a side moves its lines one at a time at the speed
// of a round trip between cores. Callers ask only for lines they own (free
// room for a producer, published records for a consumer), so the other side
// is never robbed of a line it is using. A hint: never faults, never throws.
void prefetch_lines(const Ring& ring, std::uint64_t from, std::uint64_t bytes,
                    bool for_write) {
  const std::uint64_t end = from + bytes;
  from &= ~std::uint64_t{63};
  for (int i = 0; i < kPrefetchLines && from < end; ++i, from += 64) {
    const std::byte* line = ring.data + (from & (ring.size - 1));
    if (for_write)
      __builtin_prefetch(line, 1, 3);
    else
      __builtin_prefetch(line, 0, 3);
  }
}

// The part of the `bytes` bytes that end kPrefetchAhead past a side's new
// cursor which lies within the `owned` bytes past that cursor, as an offset
// from the cursor and a length (prefetch_lines).
struct Window {
  std::uint64_t offset, bytes;
};
Window ahead_window(std::uint64_t bytes, std::uint64_t owned) {
  const std::uint64_t end = std::min(kPrefetchAhead, owned);
  const std::uint64_t begin = kPrefetchAhead - std::min(bytes, kPrefetchAhead);
  return {begin, end > begin ? end - begin : 0};
}

// The sleeper's half: records the sequence it is about to sleep on (the
// newest wins, modulo 2^32) after announcing itself, before it checks its
// condition again.
void announce_sequence(const SharedEvent& event,
                       std::atomic<std::uint32_t>& announced) {
  const std::uint32_t sequence = event.sequence.load(std::memory_order_seq_cst);
  std::uint32_t seen = announced.load(std::memory_order_seq_cst);
  while (static_cast<std::int32_t>(sequence - seen) > 0 &&
         !announced.compare_exchange_weak(seen, sequence,
                                          std::memory_order_seq_cst)) {
  }
}

// A Queue's wait for the other side: spins (WaitPolicy::spin) until
// `spin_ready()`, then sleeps on `event` until `ready()`, in slices between
// which the peers' liveness is checked (wait_while_peers_live). `ready()`
// must follow from `spin_ready()`. Returns false once `deadline` passes.
// `light_wakers`: whether the other side may wake with light fences
// (Queue::wakes_with_light_fences), which a sleeper must then complete with
// a heavy one.
template <typename SpinReady, typename Ready, typename What>
bool wait_for_other_side(SharedEvent& event,
                         std::atomic<std::uint32_t>& announced,
                         const WaitPolicy& policy, const Deadline& deadline,
                         bool light_wakers, SpinReady&& spin_ready,
                         Ready&& ready, const PeerTable& peers,
                         PeerTable::Role role, What&& what) {
  auto block = [&](std::chrono::nanoseconds slice) {
    return ready() || sleep_until_ready(event, slice, ready, [&] {
             announce_sequence(event, announced);
             if (light_wakers) heavy_fence();
           });
  };
  return wait_while_peers_live(
      [&] { return wait_slice(policy, deadline, spin_ready, block); }, peers,
      role, what);
}

}  // namespace
}  // namespace internal

using internal::Deadline;
using internal::Outcome;
using internal::PeerTable;
using internal::QueueShared;

Queue::Queue(QueueOptions options) : policy_(options.wait) {
  if (options.capacity_bytes < 8 ||
      options.capacity_bytes > internal::kMaxCapacity) {
    throw std::invalid_argument(
        "Queue: capacity_bytes must be in [8, 2^39], got " +
        std::to_string(options.capacity_bytes));
  }
  if (options.max_items > internal::kCountMask) {
    throw std::invalid_argument("Queue: max_items must be below 2^24, got " +
                                std::to_string(options.max_items));
  }
  const std::uint64_t ring_size =
      std::bit_ceil(std::uint64_t{options.capacity_bytes});
  memory_ = Mapping::shared(QueueShared::ring_offset() + ring_size);
  auto* q = new (memory_.data()) QueueShared();
  capacity_ = options.capacity_bytes;
  ring_size_ = ring_size;
  max_items_ =
      options.max_items == 0 ? internal::kCountMask : options.max_items;
  // An eighth of the limits, so a producer waiting for its batch room
  // (put_impl) sees it after a few publications.
  publish_bytes_ = std::max<std::uint64_t>(
      1, std::min<std::uint64_t>(internal::kBatchRoom, capacity_ / 8));
  publish_items_ = std::max<std::uint32_t>(1, max_items_ / 8);
  q->peers.set_creator(internal::current_pid());
}

// The shared state lives on in the other processes; this only unmaps.
Queue::~Queue() = default;

bool Queue::wakes_with_light_fences() const {
  return spins() && internal::light_fences();
}

QueueShared& Queue::shared() const {
  return *static_cast<QueueShared*>(memory_.data());
}

Outcome Queue::put_impl(std::span<const std::byte> message,
                        const Deadline& deadline) {
  [[maybe_unused]] const internal::InjectedSlowdown<internal::Primitive::kQueue>
      slowdown;
  QueueShared& q = shared();
  const std::uint64_t need = internal::kRecordHeader + message.size();
  if (need > capacity_) {
    throw MessageTooLong(
        "Queue::put: message of " + std::to_string(message.size()) +
            " bytes exceeds the queue's capacity of " +
            std::to_string(capacity_) + " bytes (" +
            std::to_string(capacity_ - internal::kRecordHeader) +
            " per message)",
        message.size(), capacity_ - internal::kRecordHeader);
  }
  registration_.ensure(q.peers, PeerTable::kProducer);
  auto fits = [&](const internal::Cursor& head, const internal::Cursor& tail,
                  std::uint64_t bytes) {
    return internal::bytes_between(head, tail) + bytes <= capacity_ &&
           internal::messages_between(head, tail) < max_items_;
  };
  // A producer that finds the queue full and then a consumer freeing one
  // record at a time would write each message into the cache lines that
  // consumer is reading (records are not line-aligned), and both would stall
  // on every message. So a producer that had to look at the consumers'
  // cursor waits first, for at most the policy's spin, for room for a batch
  // of records; past the spin (or when it cannot wait) any room will do.
  const std::uint64_t batch_need =
      need <= capacity_ / 4
          ? need + std::min<std::uint64_t>(capacity_ / 4, internal::kBatchRoom)
          : need;
  // The consumers' cursor that this producer polls: the batched copy when
  // the policy spins (QueueShared), the exact one when it does not (then
  // consumers keep no batched copy: the policy is the queue's, the same in
  // every process).
  const std::atomic<std::uint64_t>& polled = spins() ? q.head_batched : q.head;
  bool waited = false, timed_out = false;
  for (;;) {
    if (q.closed.load(std::memory_order_acquire))
      throw ClosedError("Queue::put: queue is closed");
    internal::SideLock lock(q.put_side, policy_, deadline);
    if (!lock.locked()) return Outcome::kTimedOut;
    const internal::Cursor tail = internal::load(q.tail);
    // The cached head first: the consumers' lines are read only when it
    // shows no room.
    internal::Cursor head = internal::Cursor::unpack(
        q.put_side.peer_cache.load(std::memory_order_relaxed));
    bool room = fits(head, tail, need);
    if (!room) {
      // The polled cursor, then the exact one if they differ and this
      // producer will not wait for a batch (it has waited, or it cannot).
      const bool any_room = waited || deadline.passed();
      head = internal::load(polled);
      room =
          fits(head, tail, need) && (any_room || fits(head, tail, batch_need));
      if (!room && any_room && &polled != &q.head) {
        head = internal::load(q.head);
        room = fits(head, tail, need);
      }
      q.put_side.peer_cache.store(head.pack(), std::memory_order_relaxed);
    }
    if (room) {
      const auto length = static_cast<std::uint32_t>(message.size());
      internal::copy_in(ring(), tail.position, &length, sizeof length);
      internal::copy_in(ring(), tail.position + internal::kRecordHeader,
                        message.data(), message.size());
      const internal::Cursor next = tail.advanced(need);
      q.tail.store(next.pack(), std::memory_order_release);  // publish
      // The next records' lines, within the room known to be free.
      const internal::Window ahead = internal::ahead_window(
          need, capacity_ - internal::bytes_between(head, next));
      internal::prefetch_lines(ring(), next.position + ahead.offset,
                               ahead.bytes, true);
      lock.unlock();
      internal::wake_sleepers(q.not_empty, q.not_empty_announced,
                              wakes_with_light_fences());
      return Outcome::kDone;
    }
    lock.unlock();
    if (timed_out) return Outcome::kTimedOut;
    // Full: wait for room without the lock, so other producers' try_ forms
    // and timeouts are not held up, then try again (once more after the
    // deadline: the spin may have ended there with room for this message).
    // Spinning polls `polled`; sleeping needs the exact cursor too (the
    // consumers wake sleepers after each get, not each batch), but only
    // when the polled one shows no room.
    auto room_for = [&](const std::atomic<std::uint64_t>& head,
                        std::uint64_t bytes) {
      return fits(internal::load(head), internal::load(q.tail), bytes) ||
             q.closed.load(std::memory_order_acquire) != 0;
    };
    waited = true;
    timed_out = !internal::wait_for_other_side(
        q.not_full, q.not_full_announced, policy_, deadline, spins(),
        [&] { return room_for(polled, batch_need); },
        [&] {
          return room_for(polled, need) ||
                 (&polled != &q.head && room_for(q.head, need));
        },
        q.peers, PeerTable::kConsumer,
        [] {
          return "Queue::put: the queue is full and no process that could "
                 "take from it is alive";
        });
  }
}

template <typename Sink>
Outcome Queue::get_impl(const Deadline& deadline, Sink&& sink) {
  [[maybe_unused]] const internal::InjectedSlowdown<internal::Primitive::kQueue>
      slowdown;
  QueueShared& q = shared();
  registration_.ensure(q.peers, PeerTable::kConsumer);
  for (;;) {
    internal::SideLock lock(q.get_side, policy_, deadline);
    if (!lock.locked()) return Outcome::kTimedOut;
    const std::uint64_t head_word = q.head.load(std::memory_order_relaxed);
    const internal::Cursor head = internal::Cursor::unpack(head_word);
    // The cached tail first: the producers' line is read only when the
    // cache shows nothing more.
    std::uint64_t tail_word =
        q.get_side.peer_cache.load(std::memory_order_relaxed);
    if (tail_word == head_word) {
      tail_word = q.tail.load(std::memory_order_acquire);
      q.get_side.peer_cache.store(tail_word, std::memory_order_relaxed);
    }
    if (tail_word != head_word) {
      const std::uint32_t length =
          internal::record_length(ring(), head.position);
      // The ring is shared with other processes: never trust a length that
      // the published bytes cannot hold.
      const std::uint64_t published =
          internal::bytes_between(head, internal::Cursor::unpack(tail_word));
      if (published > capacity_ ||
          internal::kRecordHeader + std::uint64_t{length} > published) {
        throw PeerError(
            "Queue::get: corrupt queue: a record of " + std::to_string(length) +
            " bytes with " + std::to_string(published) +
            " bytes published (shared memory overwritten by a peer?)");
      }
      std::byte* destination = sink(length);  // may throw: nothing consumed
      internal::copy_out(ring(), head.position + internal::kRecordHeader,
                         destination, length);
      const internal::Cursor next =
          head.advanced(internal::kRecordHeader + length);
      q.head.store(next.pack(), std::memory_order_release);  // take
      // Published to the producers' polling copy every publish_bytes_ or
      // publish_items_, and when this side has caught up with what it knows
      // of the producers (QueueShared). Only producers that spin poll it, and
      // the policy is the queue's, the same in every process.
      if (spins()) {
        const internal::Cursor batched = internal::load(q.head_batched);
        if (next.pack() == tail_word ||
            internal::bytes_between(batched, next) >= publish_bytes_ ||
            internal::messages_between(batched, next) >= publish_items_) {
          q.head_batched.store(next.pack(), std::memory_order_release);
        }
      }
      // The next records' lines, within what is published.
      const internal::Window ahead =
          internal::ahead_window(internal::kRecordHeader + length,
                                 published - internal::kRecordHeader - length);
      internal::prefetch_lines(ring(), next.position + ahead.offset,
                               ahead.bytes, false);
      lock.unlock();
      internal::wake_sleepers(q.not_full, q.not_full_announced,
                              wakes_with_light_fences());
      return Outcome::kDone;
    }
    lock.unlock();
    if (q.closed.load(std::memory_order_acquire)) {
      // Closed: a put still in progress when close() came may publish
      // after it; look once more before ending the stream.
      if (q.tail.load(std::memory_order_acquire) == head_word)
        return Outcome::kEndOfStream;
      continue;
    }
    // Empty: wait without the lock (other consumers' try_ forms and
    // timeouts are not held up), then try again.
    auto ready = [&] {
      return q.tail.load(std::memory_order_acquire) != head_word ||
             q.closed.load(std::memory_order_acquire) != 0;
    };
    if (!internal::wait_for_other_side(
            q.not_empty, q.not_empty_announced, policy_, deadline, spins(),
            ready, ready, q.peers, PeerTable::kProducer, [] {
              return "Queue::get: the queue is empty, not closed, and no "
                     "process that could put into it is alive";
            }))
      return Outcome::kTimedOut;
  }
}

void Queue::put_bytes(std::span<const std::byte> message) {
  put_impl(message, Deadline());
}

void Queue::put_bytes(std::span<const std::byte> message,
                      std::chrono::nanoseconds timeout) {
  if (put_impl(message, Deadline::after(timeout)) == Outcome::kTimedOut) {
    throw Full("Queue::put: no room within the timeout");
  }
}

bool Queue::try_put_bytes(std::span<const std::byte> message) {
  // A passed deadline spins not at all (internal::spin_until_ready).
  return put_impl(message, Deadline::now()) == Outcome::kDone;
}

template <typename Sink>
bool Queue::get_with(const Deadline& deadline, bool throw_on_timeout,
                     Sink&& sink) {
  switch (get_impl(deadline, std::forward<Sink>(sink))) {
    case Outcome::kDone:
      return true;
    case Outcome::kTimedOut:
      if (throw_on_timeout)
        throw Empty("Queue::get: nothing arrived within the timeout");
      return false;
    case Outcome::kEndOfStream:
      return false;
  }
  return false;
}

std::optional<std::vector<std::byte>> Queue::get_vector(
    const Deadline& deadline, bool throw_on_timeout) {
  std::vector<std::byte> message;
  if (!get_with(deadline, throw_on_timeout, [&](std::size_t length) {
        message.resize(length);
        return message.data();
      }))
    return std::nullopt;
  return message;
}

std::optional<std::vector<std::byte>> Queue::get_bytes() {
  return get_vector(Deadline(), true);
}

std::optional<std::vector<std::byte>> Queue::get_bytes(
    std::chrono::nanoseconds timeout) {
  return get_vector(Deadline::after(timeout), true);
}

std::optional<std::vector<std::byte>> Queue::try_get_bytes() {
  return get_vector(Deadline::now(), false);
}

std::optional<std::size_t> Queue::get_into(std::span<std::byte> buffer,
                                           const Deadline& deadline,
                                           bool throw_on_timeout) {
  std::size_t got = 0;
  const bool took =
      get_with(deadline, throw_on_timeout, [&](std::size_t length) {
        if (length > buffer.size()) {
          throw MessageTooLong(
              "Queue::get_bytes_into: message of " + std::to_string(length) +
                  " bytes does not fit the " + std::to_string(buffer.size()) +
                  "-byte buffer; it stays in the queue",
              length, buffer.size());
        }
        got = length;
        return buffer.data();
      });
  if (!took) return std::nullopt;
  return got;
}

std::optional<std::size_t> Queue::get_bytes_into(std::span<std::byte> buffer) {
  return get_into(buffer, Deadline(), true);
}

std::optional<std::size_t> Queue::get_bytes_into(
    std::span<std::byte> buffer, std::chrono::nanoseconds timeout) {
  return get_into(buffer, Deadline::after(timeout), true);
}

std::optional<std::size_t> Queue::try_get_bytes_into(
    std::span<std::byte> buffer) {
  return get_into(buffer, Deadline::now(), false);
}

void Queue::close() {
  QueueShared& q = shared();
  q.closed.store(1, std::memory_order_release);
  q.not_empty.notify_all();
  q.not_full.notify_all();
}

bool Queue::closed() const {
  return shared().closed.load(std::memory_order_acquire) != 0;
}

bool Queue::end_of_stream() const { return closed() && qsize() == 0; }

std::size_t Queue::qsize() const {
  QueueShared& q = shared();
  const internal::Cursor head = internal::load(q.head);
  return internal::messages_between(head, internal::load(q.tail));
}

std::size_t Queue::capacity_bytes() const { return capacity_; }

internal::Ring Queue::ring() const { return {shared().ring(), ring_size_}; }

// --- JoinableQueue -----------------------------------------------------------
// Unfinished tasks are messages ever put minus task_done calls, both modulo
// 2^24: derived, never stored, so a process killed mid-call cannot leave a
// phantom task behind.

JoinableQueue::JoinableQueue(QueueOptions options) : Queue(options) {}

std::int64_t JoinableQueue::unfinished_tasks() const {
  QueueShared& q = shared();
  const std::uint32_t puts = internal::load(q.tail).count;
  return (puts - q.done.load(std::memory_order_acquire)) & internal::kCountMask;
}

void JoinableQueue::task_done() {
  QueueShared& q = shared();
  std::uint32_t done = q.done.load(std::memory_order_relaxed);
  do {
    const std::uint32_t puts = internal::load(q.tail).count;
    if (((puts - done) & internal::kCountMask) == 0) {
      throw std::logic_error(
          "JoinableQueue::task_done: called more times than items were put");
    }
  } while (!q.done.compare_exchange_weak(
      done, (done + 1) & internal::kCountMask, std::memory_order_acq_rel));
  if (unfinished_tasks() == 0) q.all_done.notify_all();
}

bool JoinableQueue::join_until(const internal::Deadline& deadline) {
  QueueShared& q = shared();
  auto ready = [&] { return unfinished_tasks() == 0; };
  return internal::wait_on_event(
      q.all_done, policy(), deadline, ready, q.peers, PeerTable::kConsumer,
      [&] {
        return "JoinableQueue::join: " + std::to_string(unfinished_tasks()) +
               " tasks pending and no process that could finish them is alive";
      });
}

void JoinableQueue::join() { join_until(Deadline()); }

bool JoinableQueue::join(std::chrono::nanoseconds timeout) {
  return join_until(Deadline::after(timeout));
}

}  // namespace mp
