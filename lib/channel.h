// SemaphoreChannel and RingChannel: the seeds' FloatChannel, made right.
//
// Seed 002 builds a channel from a shared RawArray, a shared length and two
// semaphores ("empty" and "full"): send waits for empty, copies the values and
// the length in, posts full; recv waits for full, copies out, posts empty.
// (The published send assigns the length to the Python attribute instead of
// the shared Value, so every message arrives empty; here the length lives in
// shared memory next to the data and the tests check it.)
//
//   mp::SemaphoreChannel<double> channel(100'000);     // up to 100 000 values
//   mp::Process consumer([&] {
//     std::vector<double> values(100'000);
//     while (auto n = channel.recv_into(values)) use(values.data(), *n);
//   });
//   consumer.start();
//   channel.send(values);   // blocks until the previous message was taken
//   channel.close();        // after the last send: the receiver sees the end
//
// SemaphoreChannel has one slot, as in the seed, so sender and receiver take
// turns. RingChannel<T>(capacity, slots) keeps N slots with the same two
// semaphores counting free and filled slots, so the sender fills one slot
// while the receiver drains another.
//
// The semaphores are boost::interprocess::interprocess_semaphore (POSIX
// sem_t on Linux) in anonymous MAP_SHARED memory: create the channel before
// forking the processes that use it. Waits follow mp::WaitPolicy: spin on
// try_wait for the policy's budget, then sleep in sem_timedwait.
//
// Concurrency: SemaphoreChannel (one slot) allows any number of senders and
// receivers, since the semaphores admit one of each at a time. A RingChannel
// with more than one slot takes one sending thread and one receiving thread
// at a time (in any processes), like the seed's producer and consumer.
//
// Zero copy (large messages): loan(n) lends the next free slot, the sender
// writes its values in place and send()s it; recv_view() hands the receiver
// the message in its slot, given back when the view is destroyed. A message
// then costs the one write that fills the slot. A process holds at most one
// loan and one view at a time; a copying send while it holds a loan (a
// receive while it holds a view) throws std::logic_error.
//
// Errors: sending more than capacity() values throws mp::MessageTooLong and
// sends nothing. A wait fails with mp::PeerError once no process on the other
// side is alive (see lib/peers.h). A receiver killed in the middle of recv
// takes that message and its slot with it: use mp::Queue where consumers may
// die and be replaced.
#ifndef MPBENCH_LIB_CHANNEL_H_
#define MPBENCH_LIB_CHANNEL_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "lib/error.h"
#include "lib/mapping.h"
#include "lib/peers.h"
#include "lib/wait.h"

namespace mp {
namespace internal {

struct ChannelShared;
struct ChannelTestAccess;

// The byte-level channel behind RingChannel<T>.
class ChannelCore {
 public:
  ChannelCore(std::size_t slots, std::size_t slot_bytes, WaitPolicy policy);
  ChannelCore(ChannelCore&&) noexcept = default;
  ChannelCore& operator=(ChannelCore&&) noexcept = default;

  // Throws MessageTooLong, ClosedError, PeerError (`what` names the caller).
  Outcome send(const void* data, std::size_t bytes, const Deadline& deadline,
               const char* what);
  // Where a received message goes: called with its length, returns the
  // destination. It may throw (for example MessageTooLong); the message then
  // stays in its slot.
  using Destination = void* (*)(std::size_t length, void* context);
  // Takes the next message; *bytes receives its length.
  Outcome recv(Destination destination, void* context, std::size_t* bytes,
               const Deadline& deadline, const char* what);
  void close();
  bool closed() const;
  std::size_t slots() const;
  std::size_t slot_bytes() const;

  // Loans: the next free slot, written in place. loan_slot() checks and
  // waits as send() does and, on kDone, sets *data to the slot's payload
  // (slot_bytes() long). Exactly one of commit_slot() (publishes `bytes`,
  // at most what was loaned) or abandon_slot() (gives the slot back) follows.
  // std::logic_error for a second loan held at once.
  Outcome loan_slot(std::size_t bytes, const Deadline& deadline,
                    const char* what, std::byte** data);
  void commit_slot(std::size_t bytes) noexcept;
  void abandon_slot() noexcept;
  // Views: the next message, read in place. On kDone sets *data and *bytes;
  // release_view() gives the slot back. `unit`: the value size a length must
  // be a multiple of (else PeerError, the message left in place).
  // std::logic_error for a second view held at once.
  Outcome view_slot(const Deadline& deadline, const char* what,
                    std::size_t unit, const std::byte** data,
                    std::size_t* bytes);
  void release_view() noexcept;

 private:
  friend struct ChannelTestAccess;  // tests and fuzzers corrupt it
  ChannelShared& shared() const;
  std::byte* slot(std::uint64_t index) const;
  // Waits for a filled slot that holds a message; kEndOfStream once closed
  // and drained. On kDone the caller owns one "full" token.
  Outcome acquire_message(const Deadline& deadline, const char* what);
  // Checks a message of `bytes` and waits for a free slot (the one at
  // `written`); on kDone the caller owns one "empty" token.
  Outcome acquire_slot(std::size_t bytes, const Deadline& deadline,
                       const char* what);
  // Writes the length into the slot at `written` and hands it over.
  void publish_slot(std::size_t bytes) noexcept;
  // acquire_message, then the message at `taken`, checked (its length a
  // multiple of `unit` within the slot); the caller then either posts the
  // "full" token back (the message stays) or calls finish_message().
  Outcome take_message(const Deadline& deadline, const char* what,
                       std::size_t unit, const std::byte** data,
                       std::size_t* bytes);
  void finish_message() noexcept;

  // A flag that moves with its channel (a moved-from channel is not used).
  struct Held {
    std::atomic<bool> held{false};
    Held() = default;
    Held(Held&&) noexcept {}
    Held& operator=(Held&&) noexcept { return *this; }
  };

  Mapping memory_;
  // Geometry kept in this process (not read back from shared memory).
  std::size_t slots_ = 0;
  std::size_t slot_bytes_ = 0;
  WaitPolicy policy_;
  PeerRegistration registration_;
  // A loan's or a view's slot is found from the shared counters, so this
  // process may hold one of each at a time (the semaphores would hand a
  // second loan another token but the same slot).
  Held loaned_;
  Held viewing_;
};

}  // namespace internal

template <typename T>
class RingChannel {
  static_assert(std::is_trivially_copyable_v<T>,
                "channel values are copied as bytes");

 public:
  // `capacity`: most values in one message. `slots`: messages in flight.
  // Throws std::invalid_argument for zero sizes, mp::OsError("mmap").
  RingChannel(std::size_t capacity, std::size_t slots, WaitPolicy policy = {})
      : core_(slots, capacity * sizeof(T), policy) {}

  // Blocks until a slot is free, then copies `values` in. Throws
  // mp::MessageTooLong when values.size() > capacity() (nothing is sent),
  // mp::ClosedError after close(), mp::PeerError when no receiver is left.
  void send(std::span<const T> values) {
    send_until(values, internal::Deadline(), "send");
  }
  // Same; throws mp::Full when no slot frees up within `timeout`.
  void send(std::span<const T> values, std::chrono::nanoseconds timeout) {
    if (!send_until(values, internal::Deadline::after(timeout), "send")) {
      throw Full("RingChannel::send: no free slot within the timeout");
    }
  }
  // Never blocks; false when every slot is full.
  bool try_send(std::span<const T> values) {
    return send_until(values, internal::Deadline::now(), "try_send");
  }

  // Blocks until a message arrives and returns it; nullopt once the channel
  // is closed and drained. Throws mp::PeerError when no sender is left.
  std::optional<std::vector<T>> recv() {
    std::optional<std::vector<T>> message;
    recv_vector(internal::Deadline(), "recv", message);
    return message;
  }
  // Same; throws mp::Empty when nothing arrives within `timeout`.
  std::optional<std::vector<T>> recv(std::chrono::nanoseconds timeout) {
    std::optional<std::vector<T>> message;
    if (recv_vector(internal::Deadline::after(timeout), "recv", message) ==
        Outcome::kTimedOut) {
      throw Empty("RingChannel::recv: nothing arrived within the timeout");
    }
    return message;
  }
  // Never blocks; nullopt when no message is waiting (or at end of stream).
  std::optional<std::vector<T>> try_recv() {
    std::optional<std::vector<T>> message;
    recv_vector(internal::Deadline::now(), "try_recv", message);
    return message;
  }
  // Copies the next message into `out` and returns how many values it has;
  // nullopt at end of stream. A message longer than out.size() throws
  // mp::MessageTooLong and stays queued.
  std::optional<std::size_t> recv_into(std::span<T> out) {
    std::size_t bytes = 0;
    const auto into = [](std::size_t length, void* context) -> void* {
      auto* target = static_cast<std::span<T>*>(context);
      check_whole_values(length);
      if (length > target->size_bytes()) {
        throw MessageTooLong(
            "RingChannel::recv_into: message of " +
                std::to_string(length / sizeof(T)) + " values does not fit " +
                std::to_string(target->size()) + "; it stays queued",
            length / sizeof(T), target->size());
      }
      return target->data();
    };
    if (core_.recv(into, &out, &bytes, internal::Deadline(), "recv_into") !=
        Outcome::kDone) {
      return std::nullopt;
    }
    return bytes / sizeof(T);
  }

  // --- Zero copy ------------------------------------------------------------
  // A slot lent to the sender: write up to the loaned count of values into
  // values(), then send() (or send(n) for the first n). Destroyed unsent, the
  // slot goes back unused. Move-only; valid while the channel lives; one
  // loan per process at a time (a second throws std::logic_error).
  class Loan {
   public:
    Loan(Loan&& other) noexcept
        : core_(std::exchange(other.core_, nullptr)),
          data_(other.data_),
          size_(other.size_) {}
    Loan& operator=(Loan&&) = delete;
    ~Loan() {
      if (core_ != nullptr) core_->abandon_slot();
    }
    std::span<T> values() const { return {data_, size_}; }
    T* data() const { return data_; }
    std::size_t size() const { return size_; }
    // Publishes the first `count` values (all, by default) as one message.
    // Throws std::logic_error if count > size() or already sent. Never
    // blocks: the slot was reserved by loan().
    void send() { send(size_); }
    void send(std::size_t count) {
      if (core_ == nullptr)
        throw std::logic_error("RingChannel::Loan::send: already sent");
      if (count > size_)
        throw std::logic_error(
            "RingChannel::Loan::send: " + std::to_string(count) +
            " values, loaned " + std::to_string(size_));
      std::exchange(core_, nullptr)->commit_slot(count * sizeof(T));
    }

   private:
    friend class RingChannel;
    Loan(internal::ChannelCore* core, T* data, std::size_t size)
        : core_(core), data_(data), size_(size) {}
    internal::ChannelCore* core_;
    T* data_;
    std::size_t size_;
  };

  // A received message read in place in its slot; destruction gives the slot
  // back to the sender. Move-only; valid while the channel lives; one view
  // per process at a time (a second throws std::logic_error).
  class View {
   public:
    View(View&& other) noexcept
        : core_(std::exchange(other.core_, nullptr)),
          data_(other.data_),
          size_(other.size_) {}
    View& operator=(View&&) = delete;
    ~View() { release(); }
    std::span<const T> values() const { return {data_, size_}; }
    const T* data() const { return data_; }
    std::size_t size() const { return size_; }
    // Never throws.
    void release() noexcept {
      if (core_ != nullptr) std::exchange(core_, nullptr)->release_view();
    }

   private:
    friend class RingChannel;
    View(internal::ChannelCore* core, const T* data, std::size_t size)
        : core_(core), data_(data), size_(size) {}
    internal::ChannelCore* core_;
    const T* data_;
    std::size_t size_;
  };

  // Blocks until a slot is free and lends it for `count` values. Throws as
  // send() does (mp::MessageTooLong over capacity(), nothing reserved).
  Loan loan(std::size_t count) {
    return *loan_until(count, internal::Deadline(), "loan");
  }
  // Same; throws mp::Full when no slot frees up within `timeout`.
  Loan loan(std::size_t count, std::chrono::nanoseconds timeout) {
    auto slot = loan_until(count, internal::Deadline::after(timeout), "loan");
    if (!slot) throw Full("RingChannel::loan: no free slot within the timeout");
    return std::move(*slot);
  }
  // Never blocks; nullopt when every slot is full.
  std::optional<Loan> try_loan(std::size_t count) {
    return loan_until(count, internal::Deadline::now(), "try_loan");
  }

  // The next message in place; nullopt once closed and drained. Throws
  // mp::PeerError as recv() does.
  std::optional<View> recv_view() {
    return view_until(internal::Deadline(), "recv_view");
  }
  // Same; throws mp::Empty when nothing arrives within `timeout`.
  std::optional<View> recv_view(std::chrono::nanoseconds timeout) {
    Outcome outcome;
    auto view =
        view_until(internal::Deadline::after(timeout), "recv_view", &outcome);
    if (outcome == Outcome::kTimedOut)
      throw Empty("RingChannel::recv_view: nothing arrived within the timeout");
    return view;
  }
  // Never blocks; nullopt when no message is waiting (or at end of stream).
  std::optional<View> try_recv_view() {
    return view_until(internal::Deadline::now(), "try_recv_view");
  }

  // No more sends; the receiver drains what was sent, then sees the end.
  // Call it from the sending side after its last send. Idempotent.
  void close() { core_.close(); }
  bool closed() const { return core_.closed(); }
  std::size_t capacity() const { return core_.slot_bytes() / sizeof(T); }
  std::size_t slots() const { return core_.slots(); }

 private:
  using Outcome = internal::Outcome;

  bool send_until(std::span<const T> values, const internal::Deadline& deadline,
                  const char* what) {
    return core_.send(values.data(), values.size_bytes(), deadline, what) ==
           Outcome::kDone;
  }
  std::optional<Loan> loan_until(std::size_t count,
                                 const internal::Deadline& deadline,
                                 const char* what) {
    std::byte* data = nullptr;
    if (count > capacity()) {
      throw MessageTooLong(std::string("RingChannel::") + what + ": " +
                               std::to_string(count) +
                               " values exceed the channel's capacity of " +
                               std::to_string(capacity()),
                           count, capacity());
    }
    if (core_.loan_slot(count * sizeof(T), deadline, what, &data) !=
        Outcome::kDone) {
      return std::nullopt;
    }
    return Loan(&core_, reinterpret_cast<T*>(data), count);
  }
  std::optional<View> view_until(const internal::Deadline& deadline,
                                 const char* what,
                                 Outcome* outcome_out = nullptr) {
    const std::byte* data = nullptr;
    std::size_t bytes = 0;
    const Outcome outcome =
        core_.view_slot(deadline, what, sizeof(T), &data, &bytes);
    if (outcome_out != nullptr) *outcome_out = outcome;
    if (outcome != Outcome::kDone) return std::nullopt;
    return View(&core_, reinterpret_cast<const T*>(data), bytes / sizeof(T));
  }

  Outcome recv_vector(const internal::Deadline& deadline, const char* what,
                      std::optional<std::vector<T>>& message) {
    std::vector<T> values;
    std::size_t bytes = 0;
    const auto into = [](std::size_t length, void* context) -> void* {
      auto* target = static_cast<std::vector<T>*>(context);
      check_whole_values(length);
      target->resize(length / sizeof(T));
      return target->data();
    };
    const Outcome outcome = core_.recv(into, &values, &bytes, deadline, what);
    if (outcome == Outcome::kDone) message = std::move(values);
    return outcome;
  }

  // A slot's length comes from shared memory: one that is not a whole
  // number of values was not written by send(), and copying it would overrun
  // the values it is received into. Thrown from a destination, so the
  // message stays in its slot, like any corrupt one.
  static void check_whole_values(std::size_t length) {
    if (length % sizeof(T) != 0) {
      throw PeerError("RingChannel: corrupt channel: a message of " +
                      std::to_string(length) +
                      " bytes is not a whole number of " +
                      std::to_string(sizeof(T)) +
                      "-byte values (shared memory overwritten by a peer?)");
    }
  }

  friend struct internal::ChannelTestAccess;
  internal::ChannelCore core_;
};

// The seed's channel: one slot, so sender and receiver take turns.
template <typename T>
class SemaphoreChannel : public RingChannel<T> {
 public:
  explicit SemaphoreChannel(std::size_t capacity, WaitPolicy policy = {})
      : RingChannel<T>(capacity, 1, policy) {}
};

}  // namespace mp

#endif  // MPBENCH_LIB_CHANNEL_H_
