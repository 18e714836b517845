// SpscRing: a lock-free single-producer single-consumer byte-message ring in
// process-shared memory, the transport that Queue, the channels and Pool are
// to be built on.
//
//   mp::SpscRing ring({.capacity_bytes = 1 << 20});
//   mp::Process consumer([&] {
//     while (auto view = ring.recv_view()) handle(view->bytes());  // in place
//   });
//   consumer.start();
//   auto slot = ring.loan(64);          // reserve in the ring
//   fill(slot.bytes());                 // write in place
//   slot.commit();                      // publish (or commit(n) for n <= 64)
//   ring.send_bytes(message);           // or copy in
//   ring.close();                       // consumer drains, then sees the end
//   consumer.join();
//
// Memory: anonymous MAP_SHARED (mp::Mapping::shared), zero-filled; create the
// ring before forking, every child shares it; nothing in /dev/shm. The
// object is move-only and unmaps on destruction (the memory lives on in
// other processes that map it); loans and views point into it, so the ring
// must not be moved or destroyed while one is held.
//
// Roles: at any time one thread of one process produces (send_bytes, loan,
// flush, close) and one consumes (recv_*); both may be the same process.
// Each side keeps its own cursor and a cached copy of the peer's in this
// object (so each process uses its own copy after fork). Calls on one side
// are not thread-safe.
//
// Costs: on the fast path a send is a memcpy (or the caller's own writes into
// a loan) and one store of the tail cursor; a receive is one load of the
// tail (only when the cached copy is used up), the copy (or none, for a
// view) and one store of the head. No locked instruction where membarrier(2)
// is available (one locked exchange per publication where it is not). A side
// makes a system call only to wake a peer that has announced that it sleeps
// (lib/spsc_ring.cc documents the protocol). Batching: send_bytes(m,
// Publish::kDeferred) and Loan::commit(n, Publish::kDeferred) write without
// publishing; flush() (or the next publishing send, a wait for room, a try_
// that finds none, or close()) publishes them all with one store. A message
// that does not fit before the end of the ring waits for the consumer to pass
// that end (so a try_ form can find no room in a ring that is nearly empty).
// Waits follow mp::WaitPolicy: spin, then futex.
//
// Messages: a message of n bytes takes n rounded up to 8, plus 8, of the
// ring (frames never wrap: the rest of the ring's end is skipped when a frame
// does not fit there). max_message() = capacity - 8 is the largest message
// that travels in one piece (loans, views, try_ and timed sends); the
// blocking send_bytes streams a larger one (and any over a quarter of the
// ring, so that copying in and copying out overlap) in pieces, which
// recv_bytes and recv_bytes_into reassemble. A streamed message cannot be
// viewed in place: recv_view throws mp::MessageTooLong for it, leaving it in
// the ring.
//
// End of stream: close() (producer) publishes what was written; the consumer
// receives everything, then nullopt. Dead peers: a wait that cannot end
// because the other side's process died throws mp::PeerError naming its pid
// (lib/peers.h: who took the role, and the ring's creator, who may take
// either); what was published before the death is still delivered first; a
// producer that dies mid-message (a loan not committed, a stream not
// finished) leaves nothing half-received: the receive that would need the
// rest throws mp::PeerError. Before any process has taken the other role, a
// wait cannot tell a slow start from a death: timeouts bound that case. A
// corrupt frame (a length, kind or cursor the ring cannot hold, written by a
// buggy or hostile process) throws mp::PeerError ("corrupt ring") and leaves
// that frame where it is (so it is refused again): a reader never reads or
// writes outside the ring.
//
// Timeouts: timed forms throw mp::Full (send, loan) or mp::Empty (recv);
// try_ forms never block. Once a streamed message has begun to arrive, a
// timed receive waits for its end (the producer is in the middle of it; its
// death still ends the wait).
#ifndef MPBENCH_LIB_SPSC_RING_H_
#define MPBENCH_LIB_SPSC_RING_H_

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "lib/error.h"
#include "lib/mapping.h"
#include "lib/peers.h"
#include "lib/wait.h"

namespace mp {

struct SpscRingOptions {
  // Bytes of frames the ring holds: rounded up to a power of two, at least
  // 256, at most 2^32.
  std::size_t capacity_bytes = 1 << 20;
  WaitPolicy wait = {};
};

// Whether a send or commit makes its message visible now or at the next
// publication point (flush, a publishing send, a wait for room, close).
enum class Publish { kNow, kDeferred };

namespace internal {
struct SpscShared;
struct SpscRingTestAccess;
}  // namespace internal

class SpscRing {
 public:
  // Space reserved in the ring for one message; the producer writes into
  // bytes() and commit()s. Destroyed uncommitted: nothing is published and
  // the space is reused. Move-only; valid until committed or destroyed, and
  // while the ring lives. One loan at a time.
  class Loan {
   public:
    Loan(Loan&& other) noexcept;
    Loan& operator=(Loan&&) = delete;
    ~Loan();
    std::span<std::byte> bytes() const { return {data_, size_}; }
    std::byte* data() const { return data_; }
    std::size_t size() const { return size_; }
    // Publishes the first `length` bytes (all, by default) as one message.
    // Throws std::logic_error if length > size() or already committed.
    void commit(Publish publish = Publish::kNow) { commit(size_, publish); }
    void commit(std::size_t length, Publish publish = Publish::kNow);

   private:
    friend class SpscRing;
    Loan(SpscRing* ring, std::byte* data, std::size_t size)
        : ring_(ring), data_(data), size_(size) {}
    SpscRing* ring_;
    std::byte* data_;
    std::size_t size_;
  };

  // A received message read in place. Destruction (or release()) gives its
  // space back to the producer. Move-only; one view at a time; valid while
  // the ring lives.
  class View {
   public:
    View(View&& other) noexcept;
    View& operator=(View&&) = delete;
    ~View() { release(); }
    std::span<const std::byte> bytes() const { return {data_, size_}; }
    const std::byte* data() const { return data_; }
    std::size_t size() const { return size_; }
    // Never throws.
    void release() noexcept;

   private:
    friend class SpscRing;
    View(SpscRing* ring, const std::byte* data, std::size_t size,
         std::uint64_t frame)
        : ring_(ring), data_(data), size_(size), frame_(frame) {}
    SpscRing* ring_;
    const std::byte* data_;
    std::size_t size_;
    std::uint64_t frame_;
  };

  // Maps the shared memory. Throws mp::OsError("mmap"), or
  // std::invalid_argument for a capacity over 2^32.
  explicit SpscRing(SpscRingOptions options = {});
  // The ring in `memory`, shared memory the caller mapped (a memfd handed to
  // a process that is not a fork of this one, lib/pool.cc), of at least
  // memory_bytes(options.capacity_bytes). kCreate lays a new ring out in it
  // (zero-filled memory); kAttach takes the ring another process created
  // there, with the same options, at position 0: this side must be the first
  // to take its role (a new consumer of a ring not read yet, a new producer
  // of one not written yet). Throws std::invalid_argument when `memory` is
  // too small or the capacity over 2^32.
  enum class In { kCreate, kAttach };
  SpscRing(SpscRingOptions options, Mapping memory, In in);
  // Bytes of shared memory a ring of `capacity_bytes` takes.
  static std::size_t memory_bytes(std::size_t capacity_bytes);
  SpscRing(SpscRing&&) noexcept = default;
  SpscRing& operator=(SpscRing&&) noexcept = default;
  ~SpscRing();

  // --- Producer -------------------------------------------------------------
  // Copies `message` in, blocking while there is no room; streams it in
  // pieces when it is over max_message() or a quarter of the ring (pieces
  // are always published at once). Throws mp::ClosedError after close(),
  // mp::PeerError when the consumer died while this waits for room, or
  // std::logic_error while a loan is outstanding.
  void send_bytes(std::span<const std::byte> message,
                  Publish publish = Publish::kNow);
  // One piece only: mp::MessageTooLong over max_message(); mp::Full if there
  // is no room within `timeout`.
  void send_bytes(std::span<const std::byte> message,
                  std::chrono::nanoseconds timeout);
  // One piece only (mp::MessageTooLong over max_message()); false when there
  // is no room now. Never blocks.
  bool try_send_bytes(std::span<const std::byte> message);

  // Reserves `size` bytes for one message (at most max_message(), else
  // mp::MessageTooLong), blocking while there is no room. Same errors as
  // send_bytes.
  Loan loan(std::size_t size);
  // mp::Full if there is no room within `timeout`.
  Loan loan(std::size_t size, std::chrono::nanoseconds timeout);
  // nullopt when there is no room now. Never blocks.
  std::optional<Loan> try_loan(std::size_t size);

  // Publishes every message written with Publish::kDeferred. Never blocks.
  void flush();
  // Producer: wakes `event` (a SharedEvent in memory the consumer shares,
  // at its address in this process) instead of the ring's own, for a
  // consumer that sleeps on one event for several rings (lib/pool.cc). Every
  // publication wakes it, those made inside a send or loan that waits for
  // room included; that consumer must check readable() after announcing
  // itself there (lib/spsc_ring.cc's protocol). Not owned; nullptr restores
  // the ring's own. Call before producing.
  void set_consumer_event(internal::SharedEvent* event) {
    consumer_event_ = event;
  }
  // Publishes what was written and ends the stream: the consumer drains it,
  // then sees nullopt; sends throw mp::ClosedError. Idempotent. An
  // outstanding loan is abandoned.
  void close();

  // --- Consumer -------------------------------------------------------------
  // The next message, copied out; nullopt at end of stream (closed and
  // drained). Blocks while empty. Throws mp::PeerError (dead producer,
  // corrupt frame; nothing consumed), std::logic_error while a view is held.
  std::optional<std::vector<std::byte>> recv_bytes();
  // mp::Empty if nothing arrives within `timeout`.
  std::optional<std::vector<std::byte>> recv_bytes(
      std::chrono::nanoseconds timeout);
  // nullopt when nothing is there now (end_of_stream() tells whether more
  // ever will be). Never blocks, unless a streamed message is under way.
  std::optional<std::vector<std::byte>> try_recv_bytes();

  // Copies the next message into `buffer`; returns its length. A message
  // longer than `buffer` throws mp::MessageTooLong and stays in the ring.
  std::optional<std::size_t> recv_bytes_into(std::span<std::byte> buffer);
  std::optional<std::size_t> recv_bytes_into(std::span<std::byte> buffer,
                                             std::chrono::nanoseconds timeout);
  std::optional<std::size_t> try_recv_bytes_into(std::span<std::byte> buffer);

  // The next message in place (zero copy). A streamed message throws
  // mp::MessageTooLong (length, max_message()) and stays in the ring.
  std::optional<View> recv_view();
  std::optional<View> recv_view(std::chrono::nanoseconds timeout);
  std::optional<View> try_recv_view();

  // --- State ----------------------------------------------------------------
  // Consumer: whether a receive would find a message (or the end of the
  // stream) now. Changes nothing and never blocks, so that one consumer can
  // wait on several rings (lib/pool.cc). A seq_cst load of the producer's
  // cursor: it pairs with the wake-up protocol of lib/spsc_ring.cc.
  bool readable() const;
  bool closed() const;
  // Closed and everything published received: recv would return nullopt.
  bool end_of_stream() const;
  std::size_t capacity_bytes() const { return capacity_; }
  std::size_t max_message() const { return capacity_ - kFrameHeader; }

  static constexpr std::size_t kFrameHeader = 8;

 private:
  friend struct internal::SpscRingTestAccess;
  enum class Outcome { kReady, kTimedOut, kEndOfStream };
  struct Frame;

  internal::SpscShared& shared() const;
  std::byte* data() const;
  // Producer.
  bool has_room(std::uint64_t frame_bytes);
  Outcome wait_for_room(std::uint64_t frame_bytes,
                        const internal::Deadline& deadline);
  std::byte* reserve(std::uint64_t payload, const internal::Deadline& deadline,
                     bool* timed_out);
  void finish_frame(std::uint32_t length, std::uint32_t kind, Publish publish);
  void publish();
  void send_streamed(std::span<const std::byte> message);
  void require_producer(const char* call);
  // Consumer.
  Outcome wait_for_frame(const internal::Deadline& deadline,
                         std::uint64_t stream_length, std::uint64_t received);
  Outcome next_frame(const internal::Deadline& deadline, Frame* frame,
                     std::uint64_t stream_length = 0,
                     std::uint64_t received = 0);
  void release_frame(std::uint64_t frame_bytes) noexcept;
  void require_consumer(const char* call);
  template <typename Sink>
  std::optional<std::size_t> receive(const internal::Deadline& deadline,
                                     std::size_t limit, Sink&& sink);
  std::optional<std::vector<std::byte>> recv_bytes_until(
      const internal::Deadline& deadline);
  std::optional<std::size_t> recv_into_until(
      std::span<std::byte> buffer, const internal::Deadline& deadline);
  std::optional<View> recv_view_until(const internal::Deadline& deadline);
  [[noreturn]] void throw_corrupt(const std::string& what) const;
  // Whether this process publishes with light fences (lib/spsc_ring.cc);
  // registers it on first use, and again after fork. One per side, so that a
  // producer thread and a consumer thread never write the same member.
  struct Fences {
    bool light = false;
    pid_t pid = 0;
  };
  static bool light_fences(Fences& fences) noexcept;

  Mapping memory_;
  std::size_t capacity_ = 0;
  std::uint64_t mask_ = 0;
  WaitPolicy policy_;
  // Producer's side: next frame position, last published tail, cached head.
  // Each side on its own cache line: with a producer thread and a consumer
  // thread in one process, neither writes the other's line.
  alignas(64) std::uint64_t write_ = 0;
  std::uint64_t published_ = 0;
  std::uint64_t head_cache_ = 0;
  bool loaned_ = false;
  internal::SharedEvent* consumer_event_ = nullptr;
  Fences producer_fences_;
  internal::PeerRegistration producer_registration_;
  // Consumer's side: next frame position, cached tail.
  alignas(64) std::uint64_t read_ = 0;
  std::uint64_t tail_cache_ = 0;
  bool viewing_ = false;
  Fences consumer_fences_;
  internal::PeerRegistration consumer_registration_;
};

}  // namespace mp

#endif  // MPBENCH_LIB_SPSC_RING_H_
