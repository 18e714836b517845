// Queue and JoinableQueue: multiprocessing.Queue for processes made by fork.
//
// A bounded multi-producer multi-consumer queue of byte messages (and of
// typed values through mp::Codec) in anonymous MAP_SHARED memory. Create it
// before starting the processes that use it; every forked child shares it.
// Nothing is left in /dev/shm, and the memory goes with the last process.
//
//   mp::Queue q({.capacity_bytes = 1 << 20});
//   mp::Process consumer([&] {
//     while (auto item = q.get<std::string>()) handle(*item);  // until closed
//   });
//   consumer.start();
//   q.put(std::string("work"));
//   q.close();            // consumers drain what is left, then see the end
//   consumer.join();
//
// Design: a byte ring in shared memory with one cursor per side (producers
// publish `tail`, consumers `head`), each side serialised by a light lock
// held only for one record's copy (one compare-and-swap on a line that stays
// with the side that uses it; never held while waiting), and each side
// keeping a cached copy of the other's cursor, so a busy 1x1 pair touches
// the other side's line only when its cache runs out. A message is published
// only when completely written (a producer killed mid-copy leaves nothing
// half-written), and taken only when completely read (a consumer killed
// mid-copy leaves the message for the next consumer). A wait for room or
// messages spins, then sleeps on a futex that the other side wakes only when
// a sleeper has announced itself and no wake-up is already on its way
// (mp::WaitPolicy), so a busy pair makes no system call, and a waking one
// makes one per sleep rather than one per message. Where membarrier(2) is
// available the wake-up check costs no locked instruction (as in
// mp::SpscRing): a put or get makes one, the side's lock. Each side asks for
// the ring's cache lines a little ahead of its copies (within the room or
// the records it owns), so that its stores and loads do not wait for lines
// one at a time. A producer that finds the queue full waits, while it
// spins, for room for a few KiB more than its message (then writes a batch
// without sharing lines with the consumer reading just ahead of it); once
// the spin is over, or for a try_ or a timeout that ends first, room for the
// message is enough. While it spins it polls a copy of the consumers' cursor
// that they publish every few KiB, not the cursor each get writes, so a
// full queue's producer does not slow its consumers down; before it sleeps
// or gives up it reads the exact cursor, so no room a get made is missed. A
// message of n bytes occupies n + 4 bytes of capacity; a queue holds at most
// 2^24 - 1 messages at once.
//
// Ending a stream: close() (consumers drain, then get() returns nullopt), or
// the seeds' sentinel pattern (put a value the consumer recognises, once per
// consumer); both work.
//
// Dead peers: a call blocked for lack of room or of messages fails with
// mp::PeerError once no process that could end the wait is alive (see
// lib/peers.h: the processes that have taken that role, and the queue's
// creator), instead of hanging forever. A process killed while holding a
// side's lock (in the middle of a copy) is found dead by the next process
// that waits for that lock (within WaitPolicy::liveness_check), which takes
// the lock over; the cursors make whatever the dead one left a valid state.
//
// Thread safety: all calls may be made concurrently from any thread of any
// process sharing the queue. The Queue object itself may be moved but not
// copied; each process has its own copy of it after fork.
#ifndef MPBENCH_LIB_QUEUE_H_
#define MPBENCH_LIB_QUEUE_H_

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "lib/codec.h"
#include "lib/error.h"
#include "lib/mapping.h"
#include "lib/peers.h"
#include "lib/wait.h"

namespace mp {

struct QueueOptions {
  // Bytes of messages the queue holds (each message takes its size + 4).
  std::size_t capacity_bytes = 1 << 20;
  // Most messages the queue holds; 0 means no limit but capacity_bytes
  // (Python's maxsize <= 0).
  std::size_t max_items = 0;
  WaitPolicy wait = {};
};

namespace internal {
struct QueueShared;
struct Ring;
struct QueueTestAccess;
}  // namespace internal

class Queue {
 public:
  // Maps the shared memory. Throws mp::OsError("mmap"), or
  // std::invalid_argument for a capacity under 8 bytes or over 2^39 or
  // max_items of 2^24 or more.
  explicit Queue(QueueOptions options = {});
  Queue(Queue&&) noexcept = default;
  Queue& operator=(Queue&&) noexcept = default;
  ~Queue();

  // --- Bytes ---------------------------------------------------------------
  // Appends a message, blocking while the queue is full. Throws
  // mp::MessageTooLong if it could never fit, mp::ClosedError after close(),
  // mp::PeerError when no consumer is left alive to make room.
  void put_bytes(std::span<const std::byte> message);
  // Same, but throws mp::Full if there is no room within `timeout`.
  void put_bytes(std::span<const std::byte> message,
                 std::chrono::nanoseconds timeout);
  // Never blocks (beyond another producer's copy); false when full.
  bool try_put_bytes(std::span<const std::byte> message);

  // Takes the oldest message, blocking while the queue is empty. nullopt
  // means end of stream: the queue was closed and everything in it taken.
  // Throws mp::PeerError when no producer is left alive and it is not closed.
  std::optional<std::vector<std::byte>> get_bytes();
  // Same, but throws mp::Empty if nothing arrives within `timeout`.
  std::optional<std::vector<std::byte>> get_bytes(
      std::chrono::nanoseconds timeout);
  // Never blocks; nullopt when nothing is there now (end_of_stream() tells
  // whether anything ever will be).
  std::optional<std::vector<std::byte>> try_get_bytes();
  // Like get_bytes() but copies into `buffer` and returns the length. A
  // message longer than `buffer` stays in the queue and mp::MessageTooLong
  // tells its length.
  std::optional<std::size_t> get_bytes_into(std::span<std::byte> buffer);
  // Same; throws mp::Empty if nothing arrives within `timeout`.
  std::optional<std::size_t> get_bytes_into(std::span<std::byte> buffer,
                                            std::chrono::nanoseconds timeout);
  // Never blocks; nullopt when nothing is there now (see end_of_stream()).
  std::optional<std::size_t> try_get_bytes_into(std::span<std::byte> buffer);

  // --- Typed values, through mp::Codec -------------------------------------
  // A typed message carries T's type tag (lib/codec.h): it is meant for
  // get<T> with the same T. Throws what put_bytes throws.
  template <typename T>
  void put(const T& value) {
    put_bytes(encoded(value));
  }
  template <typename T>
  void put(const T& value, std::chrono::nanoseconds timeout) {
    put_bytes(encoded(value), timeout);
  }
  template <typename T>
  bool try_put(const T& value) {
    return try_put_bytes(encoded(value));
  }
  // Takes the next message and decodes it as a T. Throws mp::DecodeError if
  // it is not a T (another type's tag, or malformed bytes): the message has
  // been taken from the queue by then, and is not lost: the error's
  // message() holds its bytes (without the tag). Otherwise as get_bytes.
  template <typename T>
  std::optional<T> get() {
    return decoded<T>(get_bytes());
  }
  template <typename T>
  std::optional<T> get(std::chrono::nanoseconds timeout) {
    return decoded<T>(get_bytes(timeout));
  }
  template <typename T>
  std::optional<T> try_get() {
    return decoded<T>(try_get_bytes());
  }

  // --- State ---------------------------------------------------------------
  // No more puts; blocked consumers drain and then see end of stream;
  // blocked producers throw mp::ClosedError. Idempotent.
  void close();
  bool closed() const;
  // Closed and empty: get() would return nullopt.
  bool end_of_stream() const;
  // Messages in the queue now (approximate while others use it).
  std::size_t qsize() const;
  bool empty() const { return qsize() == 0; }
  std::size_t capacity_bytes() const;

 protected:
  friend struct internal::QueueTestAccess;  // tests and fuzzers corrupt it
  internal::QueueShared& shared() const;
  internal::Ring ring() const;
  const WaitPolicy& policy() const { return policy_; }

 private:
  using Outcome = internal::Outcome;
  Outcome put_impl(std::span<const std::byte> message,
                   const internal::Deadline& deadline);
  // Copies the next message out through `sink(length) -> destination`.
  template <typename Sink>
  Outcome get_impl(const internal::Deadline& deadline, Sink&& sink);
  // get_impl, reported as the get calls do: true when a message was taken;
  // false at end of stream, or on a timeout unless `throw_on_timeout`
  // (then mp::Empty).
  template <typename Sink>
  bool get_with(const internal::Deadline& deadline, bool throw_on_timeout,
                Sink&& sink);
  std::optional<std::size_t> get_into(std::span<std::byte> buffer,
                                      const internal::Deadline& deadline,
                                      bool throw_on_timeout);
  std::optional<std::vector<std::byte>> get_vector(
      const internal::Deadline& deadline, bool throw_on_timeout);

  // One buffer per thread, not per Queue: threads share the Queue object.
  template <typename T>
  static std::span<const std::byte> encoded(const T& value) {
    std::vector<std::byte>& scratch = thread_scratch();
    encode_message(value, scratch);
    return scratch;
  }
  template <typename T>
  static std::optional<T> decoded(std::optional<std::vector<std::byte>> bytes) {
    if (!bytes) return std::nullopt;
    return decode_taken_message<T>(std::move(*bytes), "Queue::get");
  }

  Mapping memory_;
  // Geometry kept in this process (not read back from shared memory).
  std::uint64_t capacity_ = 0;
  std::uint64_t ring_size_ = 0;
  std::uint64_t max_items_ = 0;
  // Whether the policy spins. It is the queue's, the same in every process
  // (a Queue is shared by fork only), so every side follows the same rules:
  // consumers publish QueueShared::head_batched only for spinning
  // producers, and only a spinning queue's wakers use light fences (whose
  // sleepers pay a membarrier, an IPI to every CPU: microseconds in a VM)
  // instead of a locked instruction a message. A queue that never spins
  // has sleepers often (a producer at every full ring), and a membarrier
  // each time cost more than the locked instructions it saved (64 B
  // messages, 2-vCPU Intel Xeon VM: a third of the producer's time).
  bool spins() const { return policy_.spin.count() > 0; }
  bool wakes_with_light_fences() const;
  // How far the consumers' cursor runs ahead of its batched copy at most.
  std::uint64_t publish_bytes_ = 1;
  std::uint32_t publish_items_ = 1;
  WaitPolicy policy_;
  internal::PeerRegistration registration_;
};

// JoinableQueue: a Queue whose producers can wait until every message put
// has been marked done by a consumer (task_done), as in the seeds.
class JoinableQueue : public Queue {
 public:
  explicit JoinableQueue(QueueOptions options = {});

  // Marks one message taken from the queue as processed. Throws
  // std::logic_error if called more times than messages were put.
  void task_done();
  // Blocks until every message put so far has been marked done. Throws
  // mp::PeerError when messages are pending and no consumer is left alive.
  void join();
  // Same with a timeout; false if messages were still pending.
  bool join(std::chrono::nanoseconds timeout);
  // Messages put but not yet marked done.
  std::int64_t unfinished_tasks() const;

 private:
  bool join_until(const internal::Deadline& deadline);
};

}  // namespace mp

#endif  // MPBENCH_LIB_QUEUE_H_
