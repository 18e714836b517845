// Internal: the machinery behind lib/pool.h and lib/fork_map.h — how a chunk
// of items runs in a worker, how a call's chunks are produced, and the entry
// points the public templates call. Not part of the API.
#ifndef MPBENCH_LIB_POOL_INTERNAL_H_
#define MPBENCH_LIB_POOL_INTERNAL_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "lib/codec.h"
#include "lib/wait.h"

namespace mp {

class Queue;

namespace internal {

template <typename F, typename T>
using result_of = std::decay_t<std::invoke_result_t<F&, const T&>>;

// What Pool accepts as `fn` (see lib/pool.h): something that converts to a
// plain function pointer (a function or a captureless lambda), callable with
// a const T& and returning a value. A capturing lambda fails here, with this
// concept's name in the one error the compiler gives.
template <typename F, typename T>
concept PoolFunction = std::is_invocable_v<F&, const T&> && requires(F f) {
  {+f};
} && std::is_pointer_v<decltype(+std::declval<F&>())> &&
    !std::is_void_v<std::invoke_result_t<F&, const T&>>;

// Any contiguous range of items: a std::vector<T>, std::array, a
// std::span<T> (const or not), a C array.
template <typename Range>
concept ItemRange =
    std::ranges::contiguous_range<Range> && std::ranges::sized_range<Range>;

// A range an iterator may keep pointing into: not a temporary container.
template <typename Range>
concept OutlivesTheCall =
    std::is_lvalue_reference_v<Range> || std::ranges::borrowed_range<Range>;

template <ItemRange Range>
using item_of = std::remove_cvref_t<std::ranges::range_reference_t<Range>>;

template <ItemRange Range>
std::span<const item_of<Range>> as_items(Range&& items) {
  return {std::ranges::data(items), std::ranges::size(items)};
}

// Why a chunk failed in a worker: the item (offset in the chunk) whose call
// threw, and the exception's text.
struct ChunkFailure {
  std::uint64_t item = 0;
  std::string what;
};

// Runs call(i) for i in [0, count), stopping at the first exception of any
// kind (`throw 42;` included) and describing it in `failure`. Returns
// whether every call returned.
template <typename Call>
bool run_chunk(std::uint64_t count, ChunkFailure& failure, Call&& call) {
  for (std::uint64_t i = 0; i < count; ++i) {
    try {
      call(i);
    } catch (const std::exception& e) {
      failure = {i, e.what()};
      return false;
    } catch (...) {
      failure = {i, "an exception not derived from std::exception"};
      return false;
    }
  }
  return true;
}

// Whether T travels as its object bytes (mp::Codec's rule for trivially
// copyable types other than bool), so that its encoded size is sizeof(T).
template <typename T>
inline constexpr bool kFlat =
    std::is_trivially_copyable_v<T> && !std::is_same_v<T, bool>;

// Runs `fn` over the `count` items encoded in `items`. The results go to
// `flat_out` (room for count * sizeof(R), reserved in the result ring by the
// caller) when it is given and R is flat, else they are encoded into
// `results`. On an exception, returns false and says why in `failure`.
using Invoker = bool (*)(void* fn, std::span<const std::byte> items,
                         std::uint64_t count, std::byte* flat_out,
                         std::vector<std::byte>& results,
                         ChunkFailure& failure);

// Calls fn: a captureless lambda is called through its type, so that the
// compiler inlines it into the chunk loop; a function through its pointer.
template <typename F, typename Arg>
decltype(auto) call_fn(void* fn, const Arg& item) {
  if constexpr (std::is_empty_v<F> && std::is_default_constructible_v<F>) {
    (void)fn;
    return F{}(item);
  } else {
    return reinterpret_cast<decltype(+std::declval<F&>())>(fn)(item);
  }
}

// Items of type std::vector<E>, E flat, reach a function that takes a
// std::span<const E> as a view of the task message, where the worker reads
// them in place: no vector is allocated and no element copied (a vector
// would be both, for every item). kView<F, T> says when.
template <typename F, typename T>
inline constexpr bool kView = false;
template <typename F, typename E>
inline constexpr bool kView<F, std::vector<E>> =
    kFlat<E>&& std::is_invocable_v<F&, std::span<const E>>;

// Reads one std::vector<E> item as a span of the message when its elements
// lie aligned for E there; otherwise (elements wider than a byte, at an
// offset the codec does not align) copies them into `scratch`, which is
// reused from item to item. Throws DecodeError as Codec's decode would.
template <typename E>
std::span<const E> read_view(Reader& reader, std::vector<E>& scratch) {
  const std::size_t length = reader.read_length(sizeof(E));
  const auto bytes = reader.read(length * sizeof(E));
  if (reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(E) == 0)
    return {reinterpret_cast<const E*>(bytes.data()), length};
  scratch.resize(length);
  if (length != 0) std::memcpy(scratch.data(), bytes.data(), bytes.size());
  return scratch;
}

template <typename F, typename T>
bool invoke_chunk(void* fn, std::span<const std::byte> items,
                  std::uint64_t count, std::byte* flat_out,
                  std::vector<std::byte>& results, ChunkFailure& failure) {
  using R = result_of<F, T>;
  if constexpr (kFlat<T> && kFlat<R>) {
    // Plain loops over the bytes: no decoder, no growing vector.
    if (items.size() == count * sizeof(T)) {
      std::byte* to = flat_out;
      if (to == nullptr) {
        results.resize(count * sizeof(R));
        to = results.data();
      }
      return run_chunk(count, failure, [&](std::uint64_t i) {
        T item;
        std::memcpy(&item, items.data() + i * sizeof(T), sizeof(T));
        const R result = call_fn<F, T>(fn, item);
        std::memcpy(to + i * sizeof(R), &result, sizeof(R));
      });
    }
  }
  Reader reader(items);
  Writer writer(results);
  bool ok;
  if constexpr (kView<F, T>) {
    using E = typename T::value_type;
    std::vector<E> scratch;
    ok = run_chunk(count, failure, [&](std::uint64_t) {
      const std::span<const E> item = read_view(reader, scratch);
      Codec<R>::encode(call_fn<F, std::span<const E>>(fn, item), writer);
    });
  } else {
    ok = run_chunk(count, failure, [&](std::uint64_t) {
      const T item = Codec<T>::decode(reader);
      Codec<R>::encode(call_fn<F, T>(fn, item), writer);
    });
  }
  if constexpr (kFlat<R>) {
    // count * sizeof(R) bytes, where the caller reserved them.
    if (ok && flat_out != nullptr && !results.empty())
      std::memcpy(flat_out, results.data(), results.size());
  }
  return ok;
}

// A call's code, as the workers receive it: the invoker, and the bytes of
// one result when results travel as their object bytes (0 when not).
struct ChunkCode {
  Invoker invoker;
  std::size_t result_bytes;
};

template <typename F, typename T>
ChunkCode chunk_code() {
  using R = result_of<F, T>;
  return {&invoke_chunk<F, T>, kFlat<R> ? sizeof(R) : 0};
}

// Produces a job's chunks, encoded, on demand (so imap holds only a bounded
// number of them).
class ChunkSource {
 public:
  virtual ~ChunkSource() = default;
  // Appends the next chunk's encoded items to `out`; false when none is left.
  virtual bool next(std::vector<std::byte>& out, std::uint64_t& first_item,
                    std::uint64_t& count) = 0;
  // The encoded size of the next `chunks` chunks (fewer when fewer are
  // left) when it is known without encoding them (items whose Codec knows
  // their size), so that they can be encoded in place; nullopt otherwise or
  // when none is left. More than one chunk only for flat_item_bytes() != 0.
  virtual std::optional<std::size_t> next_size(std::uint64_t chunks) const {
    (void)chunks;
    return std::nullopt;
  }
  // Encodes those chunks, next_size(chunks) bytes, at `out`; `count` items
  // from `first_item`.
  virtual void next_into(std::byte* out, std::uint64_t chunks,
                         std::uint64_t& first_item, std::uint64_t& count) {
    (void)out, (void)chunks, (void)first_item, (void)count;
  }
  // Items per chunk (the last chunk may hold fewer).
  virtual std::uint64_t chunksize() const = 0;
  // The bytes of one item when items travel as their object bytes (so that
  // a frame of several chunks can be cut into chunks), else 0.
  virtual std::size_t flat_item_bytes() const { return 0; }
  // Items not yet taken into a chunk, when known.
  virtual std::optional<std::uint64_t> items_left() const {
    return std::nullopt;
  }
};

template <typename T>
class SpanSource final : public ChunkSource {
 public:
  SpanSource(std::span<const T> items, std::size_t chunksize)
      : items_(items), chunksize_(chunksize) {}
  bool next(std::vector<std::byte>& out, std::uint64_t& first_item,
            std::uint64_t& count) override {
    if (position_ >= items_.size()) return false;
    const std::size_t n = std::min(chunksize_, items_.size() - position_);
    Writer writer(out);
    for (std::size_t i = 0; i < n; ++i)
      Codec<T>::encode(items_[position_ + i], writer);
    first_item = position_;
    count = n;
    position_ += n;
    return true;
  }
  std::optional<std::uint64_t> items_left() const override {
    return items_.size() - position_;
  }
  std::uint64_t chunksize() const override { return chunksize_; }
  std::size_t flat_item_bytes() const override { return kFlat ? sizeof(T) : 0; }
  std::optional<std::size_t> next_size(std::uint64_t chunks) const override {
    if (position_ >= items_.size()) return std::nullopt;
    const std::size_t n = items_in(chunks);
    if constexpr (kFlat) {
      return n * sizeof(T);
    } else if constexpr (kSized) {
      std::size_t bytes = 0;
      for (std::size_t i = 0; i < n; ++i)
        bytes += Codec<T>::encoded_size(items_[position_ + i]);
      return bytes;
    } else {
      return std::nullopt;
    }
  }
  void next_into(std::byte* out, std::uint64_t chunks,
                 std::uint64_t& first_item, std::uint64_t& count) override {
    const std::size_t n = items_in(chunks);
    if constexpr (kFlat) {
      std::memcpy(out, items_.data() + position_, n * sizeof(T));
    } else if constexpr (kSized) {
      // Exactly next_size() bytes: the sizes were just summed.
      std::size_t bytes = 0;
      for (std::size_t i = 0; i < n; ++i)
        bytes += Codec<T>::encoded_size(items_[position_ + i]);
      Writer writer(std::span<std::byte>(out, bytes));
      for (std::size_t i = 0; i < n; ++i)
        Codec<T>::encode(items_[position_ + i], writer);
    } else {
      return;
    }
    first_item = position_;
    count = n;
    position_ += n;
  }

 private:
  std::size_t items_in(std::uint64_t chunks) const {
    return static_cast<std::size_t>(std::min<std::uint64_t>(
        chunks * chunksize_, items_.size() - position_));
  }

  static constexpr bool kFlat = internal::kFlat<T>;
  // The Codec says how large an item is (lib/codec.h's encoded_size).
  static constexpr bool kSized = requires(const T& item) {
    { Codec<T>::encoded_size(item) } -> std::convertible_to<std::size_t>;
  };
  std::span<const T> items_;
  std::size_t chunksize_;
  std::size_t position_ = 0;
};

// The items' mean encoded size, for the default chunksize's byte budget
// (mp::kDefaultChunkBytes); 0 for no items, or where the Codec cannot tell
// a size before encoding. Sums sizes (a vector's is its length), copies
// nothing.
template <typename T>
std::size_t mean_encoded_bytes(std::span<const T> items) {
  if (items.empty()) return 0;
  if constexpr (kFlat<T>) {
    return sizeof(T);
  } else if constexpr (requires(const T& item) {
                         {
                           Codec<T>::encoded_size(item)
                           } -> std::convertible_to<std::size_t>;
                       }) {
    std::size_t total = 0;
    for (const T& item : items) total += Codec<T>::encoded_size(item);
    return (total + items.size() - 1) / items.size();
  } else {
    return 0;
  }
}

// Decodes a chunk's `count` encoded results from `payload` into
// out[first .. first + count) of the caller's buffer (Pool::map_into).
// Throws mp::DecodeError when the payload does not hold exactly that.
using ResultSink = void (*)(void* out, std::uint64_t first, std::uint64_t count,
                            std::span<const std::byte> payload);

template <typename R>
void decode_into(void* out, std::uint64_t first, std::uint64_t count,
                 std::span<const std::byte> payload) {
  R* to = static_cast<R*>(out) + first;
  if constexpr (kFlat<R>) {
    if (payload.size() != count * sizeof(R)) {
      throw DecodeError("Pool: a chunk of " + std::to_string(count) +
                        " results in " + std::to_string(payload.size()) +
                        " bytes");
    }
    if (count != 0) std::memcpy(to, payload.data(), payload.size());
  } else {
    Reader reader(payload);
    for (std::uint64_t i = 0; i < count; ++i) to[i] = Codec<R>::decode(reader);
    reader.expect_end();
  }
}

struct ChunkResult {
  std::uint64_t first_item = 0;
  std::uint64_t count = 0;
  std::vector<std::byte> payload;  // `count` encoded results
};

// The smallest result queue (Pool, fork_map): it must at least carry the
// report that a chunk's results did not fit.
inline constexpr std::size_t kMinResultQueueBytes = 4096;

// The pool's state (lib/pool.cc).
class PoolCore;

// The job's next chunk of results (in chunk order if ordered), nullopt when
// all have been delivered, or the job's error. Throws TimeoutError when
// `deadline` passes first.
std::optional<ChunkResult> next_chunk(PoolCore& core, std::uint64_t job,
                                      const Deadline& deadline);
// Waits until every chunk of a job started with a ResultSink has been
// delivered to it, then forgets the job; throws the job's error.
void finish_job(PoolCore& core, std::uint64_t job);
// Drops a job whose results are no longer wanted.
void forget_job(PoolCore& core, std::uint64_t job) noexcept;

// "exited with code 1", "was killed by signal 9 (Killed)", or, for nullopt,
// "exited, exit status unavailable (reaped elsewhere)".
std::string describe_exit(std::optional<int> exitcode);

// Takes one message from `queue` into `buffer`, growing the buffer when a
// message does not fit (it waits in the queue meanwhile), so steady traffic
// allocates nothing. Waits up to `wait` (none: only what is there now).
// Returns the message, or nullopt when none came in time or at end of
// stream. Throws what Queue throws, but not Empty.
std::optional<std::span<const std::byte>> take(
    Queue& queue, std::vector<std::byte>& buffer,
    std::optional<std::chrono::nanoseconds> wait);

}  // namespace internal
}  // namespace mp

#endif  // MPBENCH_LIB_POOL_INTERNAL_H_
