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
// Errors: sending more than capacity() values throws mp::MessageTooLong and
// sends nothing. A wait fails with mp::PeerError once no process on the other
// side is alive (see lib/peers.h). A receiver killed in the middle of recv
// takes that message and its slot with it: use mp::Queue where consumers may
// die and be replaced.
#ifndef MPBENCH_LIB_CHANNEL_H_
#define MPBENCH_LIB_CHANNEL_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
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

 private:
  friend struct ChannelTestAccess;  // tests and fuzzers corrupt it
  ChannelShared& shared() const;
  std::byte* slot(std::uint64_t index) const;
  // Waits for a filled slot that holds a message; kEndOfStream once closed
  // and drained. On kDone the caller owns one "full" token.
  Outcome acquire_message(const Deadline& deadline, const char* what);

  Mapping memory_;
  // Geometry kept in this process (not read back from shared memory).
  std::size_t slots_ = 0;
  std::size_t slot_bytes_ = 0;
  WaitPolicy policy_;
  PeerRegistration registration_;
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
