// Fuzzes the RingChannel reader against slots written by a buggy or hostile
// peer: fuzz bytes are written into slots (length word and data) with
// mp::internal::ChannelTestAccess::overwrite_and_post, interleaved with the
// real readers, try_recv, try_recv_view and recv_into, on a
// RingChannel<std::byte> or a RingChannel<int>. Acceptable outcomes: messages,
// nullopt (nothing there, or end of stream), mp::MessageTooLong (recv_into's
// buffer too small; nothing taken) and mp::PeerError (corrupt slot; nothing
// taken). Each is checked against a model of the slots; ASan catches copies out
// of bounds.
//
// Input: [flags][capacity][buffer][commands...]
//   flags bit 0: RingChannel<int> (else std::byte); bits 1-2: slots - 1;
//     bit 3: close() before the final drain (which may then use recv_into).
//   capacity: 1 + value % 64 values a message; buffer: recv_into's buffer,
//     value % (capacity + 3) values.
//   command: even byte: post [slot index][n][n bytes]; odd: receive, with
//     recv_into if bit 1 is set and a message is known to be there, else
//     with try_recv_view (read in place) if bit 2 is set.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "lib/channel.h"
#include "lib/error.h"
#include "lib/testing/corrupt.h"

namespace {

using mp::fuzz::FuzzInput;
using Access = mp::internal::ChannelTestAccess;

template <typename T>
class Harness {
 public:
  Harness(std::size_t capacity, std::size_t slots, std::size_t buffer_values)
      : channel_(capacity, slots, mp::WaitPolicy::block_only()),
        slot_bytes_(capacity * sizeof(T)),
        model_(slots, std::vector<std::byte>(8 + capacity * sizeof(T))),
        buffer_(buffer_values) {}

  void post(std::uint64_t index, std::span<const std::byte> bytes) {
    Access::overwrite_and_post(Access::core(channel_), index, bytes);
    std::vector<std::byte>& slot = model_[index % model_.size()];
    std::copy_n(bytes.begin(), std::min(bytes.size(), slot.size()),
                slot.begin());
    ++pending_;
  }

  // One receive; false once nothing more will come (or the channel refuses).
  bool receive(bool want_into, bool view = false) {
    const bool into = want_into && (pending_ > 0 || closed_);
    const std::vector<std::byte>& slot = model_[taken_ % model_.size()];
    std::uint64_t length = 0;
    std::memcpy(&length, slot.data(), sizeof length);
    const bool corrupt =
        pending_ > 0 && (length > slot_bytes_ || length % sizeof(T) != 0);
    try {
      std::optional<std::size_t> got_values;
      const T* got = nullptr;
      std::optional<std::vector<T>> message;
      if (into) {
        got_values = channel_.recv_into(buffer_);
        got = buffer_.data();
      } else if (view) {
        // Read in place, compared while held, then given back.
        auto in_place = channel_.try_recv_view();
        if (in_place) {
          message.emplace(in_place->values().begin(), in_place->values().end());
          got_values = in_place->size();
          FUZZ_CHECK(length == 0 || std::memcmp(in_place->data(),
                                                slot.data() + 8, length) == 0);
          got = message->data();
        }
      } else {
        message = channel_.try_recv();
        if (message) {
          got_values = message->size();
          got = message->data();
        }
      }
      if (!got_values) {
        FUZZ_CHECK(pending_ == 0);
        return false;
      }
      FUZZ_CHECK(!corrupt);
      FUZZ_CHECK(*got_values * sizeof(T) == length);
      FUZZ_CHECK(length == 0 || std::memcmp(got, slot.data() + 8, length) == 0);
      ++taken_;
      --pending_;
      return true;
    } catch (const mp::MessageTooLong& e) {
      FUZZ_CHECK(into && !corrupt && pending_ > 0);
      FUZZ_CHECK(length > buffer_.size() * sizeof(T));
      FUZZ_CHECK(e.length() == length / sizeof(T));
      return true;  // nothing taken: a later call may take it
    } catch (const mp::PeerError&) {
      FUZZ_CHECK(corrupt);
      return false;  // nothing taken: it stays refused until overwritten
    }
  }

  void close() {
    channel_.close();
    closed_ = true;
  }
  std::size_t pending() const { return pending_; }

 private:
  mp::RingChannel<T> channel_;
  std::size_t slot_bytes_;
  std::vector<std::vector<std::byte>> model_;  // length word + data
  std::vector<T> buffer_;
  std::uint64_t taken_ = 0;
  std::size_t pending_ = 0;
  bool closed_ = false;
};

template <typename T>
void run(FuzzInput& in, std::uint8_t flags, std::size_t capacity,
         std::size_t buffer_values) {
  Harness<T> harness(capacity, ((flags >> 1) & 3) + 1, buffer_values);
  for (int step = 0; step < 256 && in.remaining() > 0; ++step) {
    const std::uint8_t command = in.byte();
    if ((command & 1) == 0) {
      const std::uint8_t index = in.byte();
      const std::uint8_t n = in.byte();
      harness.post(index, in.bytes(n));
    } else {
      harness.receive((command & 2) != 0, (command & 4) != 0);
    }
  }
  if (flags & 8) harness.close();
  // Drain: every call takes a message, ends, or is refused for good; each
  // refused-as-too-long is followed by a try_recv that takes it.
  const std::size_t max_calls = 2 * harness.pending() + 2;
  bool into = (flags & 8) != 0;
  for (std::size_t call = 0; harness.receive(into); ++call) {
    FUZZ_CHECK(call <= max_calls);
    into = !into && (flags & 8) != 0;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  FuzzInput in(data, size);
  const std::uint8_t flags = in.byte();
  const std::size_t capacity = 1 + in.byte() % 64;
  const std::size_t buffer_values = in.byte() % (capacity + 3);
  if (flags & 1) {
    run<int>(in, flags, capacity, buffer_values);
  } else {
    run<std::byte>(in, flags, capacity, buffer_values);
  }
  return 0;
}
