// Codec: how typed values become bytes for Pipe, Queue and Pool, and back.
//
// Supported out of the box: trivially copyable types (their object bytes),
// std::string, and of supported types std::vector, std::pair, std::tuple,
// std::optional, std::array, std::map, std::unordered_map, and plain structs
// (aggregates) of up to 8 fields. C arrays and string literals are refused
// at compile time (send a std::string). A
// variable-size value is written as a little-endian u64 length followed by its
// elements; a top-level message is exactly one encoded value.
//
// Decoding never trusts its input (the bytes come from another process):
// malformed or truncated input throws mp::DecodeError, never reads out of
// bounds, and never allocates more than the input could hold.
//
// Adding a type: specialise mp::Codec for it in namespace mp:
//
//   template <> struct mp::Codec<Point> {
//     static void encode(const Point& p, mp::Writer& out) {
//       mp::Codec<double>::encode(p.x, out);
//       mp::Codec<double>::encode(p.y, out);
//     }
//     static Point decode(mp::Reader& in) {
//       const double x = mp::Codec<double>::decode(in);
//       return {x, mp::Codec<double>::decode(in)};
//     }
//   };
//
// (A trivially copyable Point needs no specialisation at all.)
//
// A Codec may also say how many bytes a value takes, with
// `static std::size_t encoded_size(const T&)` (trivially copyable types,
// std::string and std::vector of trivially copyable elements do): Pool then
// encodes a chunk of such items straight into its ring (one copy) instead
// of into a buffer first.
//
// Typed messages (Queue::put/get, Connection::send/recv) are framed by
// encode_message/decode_message: an 8-byte type tag, then the value. The tag
// is a hash of the compiler's name for T, so a message read as another type
// (put<int64_t>, get<double>) throws mp::DecodeError instead of returning
// reinterpreted bytes. Both sides must be the same program (processes forked
// or started from one binary), which is how every mp primitive is shared.
#ifndef MPBENCH_LIB_CODEC_H_
#define MPBENCH_LIB_CODEC_H_

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lib/error.h"

namespace mp {

// Appends bytes to a buffer it does not own: a vector, which grows, or a
// fixed span, which a write past its end does not touch (std::length_error).
class Writer {
 public:
  explicit Writer(std::vector<std::byte>& out) : vector_(&out) {}
  explicit Writer(std::span<std::byte> out) : span_(out) {}
  void write(const void* data, std::size_t size) {
    const auto* bytes = static_cast<const std::byte*>(data);
    if (vector_ != nullptr) {
      vector_->insert(vector_->end(), bytes, bytes + size);
      return;
    }
    if (size > span_.size() - written_)
      throw std::length_error("codec: a value larger than its encoded_size");
    if (size != 0) std::memcpy(span_.data() + written_, bytes, size);
    written_ += size;
  }
  void write_length(std::uint64_t length) { write(&length, sizeof length); }
  // Bytes written into a fixed span.
  std::size_t written() const { return written_; }

 private:
  std::vector<std::byte>* vector_ = nullptr;
  std::span<std::byte> span_;
  std::size_t written_ = 0;
};

// Reads bytes from a span it does not own, checking every read.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  std::span<const std::byte> read(std::size_t size) {
    if (size > in_.size() - position_) {
      throw DecodeError("codec: truncated input: need " + std::to_string(size) +
                        " bytes at offset " + std::to_string(position_) +
                        " of " + std::to_string(in_.size()));
    }
    auto part = in_.subspan(position_, size);
    position_ += size;
    return part;
  }
  // Reads a length prefix for elements of `element_size` bytes and checks
  // that the rest of the input can hold that many.
  std::size_t read_length(std::size_t element_size) {
    std::uint64_t length;
    std::memcpy(&length, read(sizeof length).data(), sizeof length);
    const std::size_t left = in_.size() - position_;
    if (element_size != 0 && length > left / element_size) {
      throw DecodeError("codec: length " + std::to_string(length) +
                        " exceeds the " + std::to_string(left) + " bytes left");
    }
    return static_cast<std::size_t>(length);
  }
  std::size_t remaining() const { return in_.size() - position_; }
  void expect_end() const {
    if (position_ != in_.size()) {
      throw DecodeError("codec: " + std::to_string(in_.size() - position_) +
                        " unexpected trailing bytes");
    }
  }

 private:
  std::span<const std::byte> in_;
  std::size_t position_ = 0;
};

template <typename T, typename Enable = void>
struct Codec;  // no codec for this type: specialise mp::Codec (see above)

// Trivially copyable types travel as their object bytes, so they should be
// types for which every byte pattern is a valid value (integers, floating
// point, structs of those). bool has its own checked codec below; pointers
// travel as addresses, which mean something only in a forked copy.
namespace internal {
template <typename T>
inline constexpr bool kIsOptional = false;
template <typename T>
inline constexpr bool kIsOptional<std::optional<T>> = true;
template <typename T>
inline constexpr bool kIsStdArray = false;
template <typename T, std::size_t N>
inline constexpr bool kIsStdArray<std::array<T, N>> = true;
}  // namespace internal

template <typename T>
struct Codec<T, std::enable_if_t<std::is_trivially_copyable_v<T> &&
                                 !std::is_same_v<T, bool> &&
                                 !internal::kIsOptional<T>>> {
  static_assert(!std::is_array_v<T>,
                "C arrays and string literals have no mp::Codec: send a "
                "std::string (std::string(\"hello\")), std::vector or "
                "std::array");
  static void encode(const T& value, Writer& out) {
    out.write(&value, sizeof(T));
  }
  static std::size_t encoded_size(const T&) { return sizeof(T); }
  static T decode(Reader& in) {
    T value;
    std::memcpy(&value, in.read(sizeof(T)).data(), sizeof(T));
    return value;
  }
};

template <>
struct Codec<bool> {
  static void encode(bool value, Writer& out) {
    const std::uint8_t byte = value ? 1 : 0;
    out.write(&byte, 1);
  }
  static bool decode(Reader& in) {
    const auto byte = std::to_integer<std::uint8_t>(in.read(1)[0]);
    if (byte > 1)
      throw DecodeError("codec: invalid bool byte " + std::to_string(byte));
    return byte == 1;
  }
};

template <>
struct Codec<std::string> {
  static void encode(const std::string& value, Writer& out) {
    out.write_length(value.size());
    out.write(value.data(), value.size());
  }
  static std::size_t encoded_size(const std::string& value) {
    return sizeof(std::uint64_t) + value.size();
  }
  static std::string decode(Reader& in) {
    const std::size_t length = in.read_length(1);
    const auto bytes = in.read(length);
    return std::string(reinterpret_cast<const char*>(bytes.data()),
                       bytes.size());
  }
};

template <typename T>
struct Codec<std::vector<T>> {
  static void encode(const std::vector<T>& value, Writer& out) {
    out.write_length(value.size());
    if constexpr (std::is_trivially_copyable_v<T> && !std::is_same_v<T, bool>) {
      out.write(value.data(), value.size() * sizeof(T));
    } else {
      for (const T& element : value) Codec<T>::encode(element, out);
    }
  }
  static std::size_t encoded_size(const std::vector<T>& value) requires(
      std::is_trivially_copyable_v<T> && !std::is_same_v<T, bool>) {
    return sizeof(std::uint64_t) + value.size() * sizeof(T);
  }
  static std::vector<T> decode(Reader& in) {
    // Every element takes at least one byte, except empty trivially copyable
    // types, which read_length(0) does not bound: cap those explicitly.
    constexpr std::size_t kMinElement =
        std::is_trivially_copyable_v<T> && !std::is_same_v<T, bool> ? sizeof(T)
                                                                    : 1;
    const std::size_t length = in.read_length(kMinElement);
    std::vector<T> value;
    if constexpr (std::is_trivially_copyable_v<T> && !std::is_same_v<T, bool> &&
                  alignof(T) == 1) {
      // Bytes: one copy, no zero-filling first (resize would write each
      // byte twice).
      const auto bytes = in.read(length * sizeof(T));
      const auto* first = reinterpret_cast<const T*>(bytes.data());
      value.assign(first, first + length);
    } else if constexpr (std::is_trivially_copyable_v<T> &&
                         !std::is_same_v<T, bool>) {
      value.resize(length);
      const auto bytes = in.read(length * sizeof(T));
      if (length != 0)  // an empty vector's data() is null: no memcpy
        std::memcpy(value.data(), bytes.data(), length * sizeof(T));
    } else {
      value.reserve(length);
      for (std::size_t i = 0; i < length; ++i)
        value.push_back(Codec<T>::decode(in));
    }
    return value;
  }
};

template <typename A, typename B>
struct Codec<std::pair<A, B>,
             std::enable_if_t<!std::is_trivially_copyable_v<std::pair<A, B>>>> {
  static void encode(const std::pair<A, B>& value, Writer& out) {
    Codec<A>::encode(value.first, out);
    Codec<B>::encode(value.second, out);
  }
  static std::pair<A, B> decode(Reader& in) {
    A first = Codec<A>::decode(in);
    return {std::move(first), Codec<B>::decode(in)};
  }
};

template <typename... Ts>
struct Codec<
    std::tuple<Ts...>,
    std::enable_if_t<!std::is_trivially_copyable_v<std::tuple<Ts...>>>> {
  static void encode(const std::tuple<Ts...>& value, Writer& out) {
    std::apply(
        [&](const Ts&... element) { (Codec<Ts>::encode(element, out), ...); },
        value);
  }
  static std::tuple<Ts...> decode(Reader& in) {
    // Braced initialisation evaluates left to right, as the bytes are laid out.
    return std::tuple<Ts...>{Codec<Ts>::decode(in)...};
  }
};

// A presence byte (0 or 1), then the value if present.
template <typename T>
struct Codec<std::optional<T>> {
  static void encode(const std::optional<T>& value, Writer& out) {
    Codec<bool>::encode(value.has_value(), out);
    if (value) Codec<T>::encode(*value, out);
  }
  static std::optional<T> decode(Reader& in) {
    if (!Codec<bool>::decode(in)) return std::nullopt;
    return Codec<T>::decode(in);
  }
};

// Arrays of trivially copyable values travel as bytes (above); others
// element by element.
template <typename T, std::size_t N>
struct Codec<
    std::array<T, N>,
    std::enable_if_t<!std::is_trivially_copyable_v<std::array<T, N>>>> {
  static void encode(const std::array<T, N>& value, Writer& out) {
    for (const T& element : value) Codec<T>::encode(element, out);
  }
  static std::array<T, N> decode(Reader& in) {
    std::array<T, N> value;
    for (T& element : value) element = Codec<T>::decode(in);
    return value;
  }
};

namespace internal {

// A length, then the (key, value) pairs in iteration order. A repeated key
// in the input is malformed (it could not have been encoded from a map).
template <typename Map>
struct MapCodec {
  using K = typename Map::key_type;
  using V = typename Map::mapped_type;
  static void encode(const Map& value, Writer& out) {
    out.write_length(value.size());
    for (const auto& [key, mapped] : value) {
      Codec<K>::encode(key, out);
      Codec<V>::encode(mapped, out);
    }
  }
  static Map decode(Reader& in) {
    const std::size_t length = in.read_length(1);
    Map value;
    for (std::size_t i = 0; i < length; ++i) {
      K key = Codec<K>::decode(in);
      if (!value.emplace(std::move(key), Codec<V>::decode(in)).second)
        throw DecodeError("codec: a map with a repeated key");
    }
    return value;
  }
};

// Aggregates (plain structs) of codable fields that are not trivially
// copyable (a std::string among them): field by field, up to kMaxFields.
struct AnyField {
  template <typename U>
  operator U() const;  // never defined: only for counting fields
};

template <typename T, typename... Fields>
constexpr std::size_t field_count() {
  if constexpr (requires { T{Fields{}..., AnyField{}}; })
    return field_count<T, Fields..., AnyField>();
  else
    return sizeof...(Fields);
}

inline constexpr std::size_t kMaxFields = 8;

template <typename T, typename F>
void for_each_field(T& value, F&& f) {
  constexpr std::size_t n = field_count<std::remove_const_t<T>>();
  if constexpr (n == 1) {
    auto& [a] = value;
    f(a);
  } else if constexpr (n == 2) {
    auto& [a, b] = value;
    f(a), f(b);
  } else if constexpr (n == 3) {
    auto& [a, b, c] = value;
    f(a), f(b), f(c);
  } else if constexpr (n == 4) {
    auto& [a, b, c, d] = value;
    f(a), f(b), f(c), f(d);
  } else if constexpr (n == 5) {
    auto& [a, b, c, d, e] = value;
    f(a), f(b), f(c), f(d), f(e);
  } else if constexpr (n == 6) {
    auto& [a, b, c, d, e, g] = value;
    f(a), f(b), f(c), f(d), f(e), f(g);
  } else if constexpr (n == 7) {
    auto& [a, b, c, d, e, g, h] = value;
    f(a), f(b), f(c), f(d), f(e), f(g), f(h);
  } else if constexpr (n == 8) {
    auto& [a, b, c, d, e, g, h, i] = value;
    f(a), f(b), f(c), f(d), f(e), f(g), f(h), f(i);
  }
}

template <typename T>
concept CodableAggregate =
    std::is_class_v<T> && std::is_aggregate_v<T> && !kIsStdArray<T> &&
    !std::is_trivially_copyable_v<T> && std::is_default_constructible_v<T> &&
    field_count<T>() >= 1 && field_count<T>() <= kMaxFields;

}  // namespace internal

template <typename K, typename V, typename... Rest>
struct Codec<std::map<K, V, Rest...>>
    : internal::MapCodec<std::map<K, V, Rest...>> {};

template <typename K, typename V, typename... Rest>
struct Codec<std::unordered_map<K, V, Rest...>>
    : internal::MapCodec<std::unordered_map<K, V, Rest...>> {};

template <typename T>
struct Codec<T, std::enable_if_t<internal::CodableAggregate<T>>> {
  static void encode(const T& value, Writer& out) {
    internal::for_each_field(value, [&](const auto& field) {
      Codec<std::remove_cvref_t<decltype(field)>>::encode(field, out);
    });
  }
  static T decode(Reader& in) {
    T value{};
    internal::for_each_field(value, [&](auto& field) {
      field = Codec<std::remove_cvref_t<decltype(field)>>::decode(in);
    });
    return value;
  }
};

// Appends the encoding of `value` to `out`.
template <typename T>
void encode_into(const T& value, std::vector<std::byte>& out) {
  Writer writer(out);
  Codec<T>::encode(value, writer);
}

template <typename T>
std::vector<std::byte> encode(const T& value) {
  std::vector<std::byte> out;
  encode_into(value, out);
  return out;
}

// Decodes exactly one T that must span all of `bytes`.
template <typename T>
T decode(std::span<const std::byte> bytes) {
  Reader reader(bytes);
  T value = Codec<T>::decode(reader);
  reader.expect_end();
  return value;
}

namespace internal {

template <typename T>
constexpr std::string_view pretty_function() {
  return __PRETTY_FUNCTION__;  // "... [with T = double; ...]" or "[T = double]"
}

}  // namespace internal

// The compiler's name for T ("double", "std::vector<int>"), for messages.
template <typename T>
constexpr std::string_view type_name() {
  constexpr std::string_view text = internal::pretty_function<T>();
  constexpr std::size_t begin = text.find("T = ") + 4;
  constexpr std::size_t end = text.find_first_of(";]", begin);
  return text.substr(begin, end - begin);
}

// FNV-1a of type_name<T>(): the tag that typed messages carry.
template <typename T>
constexpr std::uint64_t type_tag() {
  std::uint64_t hash = 14695981039346656037ull;
  for (const char c : type_name<T>()) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 1099511628211ull;
  }
  return hash;
}

inline constexpr std::size_t kTypeTagSize = sizeof(std::uint64_t);

// Appends a typed message: T's tag, then its encoding.
template <typename T>
void encode_message(const T& value, std::vector<std::byte>& out) {
  constexpr std::uint64_t tag = type_tag<T>();
  Writer writer(out);
  writer.write(&tag, sizeof tag);
  Codec<T>::encode(value, writer);
}

// Decodes a typed message made by encode_message<T>. Throws mp::DecodeError
// when the tag is another type's, or the value is malformed; `where` names
// the caller in the message ("Queue::get").
template <typename T>
T decode_message(std::span<const std::byte> message, const char* where) {
  std::uint64_t tag = 0;
  if (message.size() < sizeof tag) {
    throw DecodeError(std::string(where) + ": a message of " +
                      std::to_string(message.size()) +
                      " bytes has no type tag (sent with put_bytes/"
                      "send_bytes?), expected a " +
                      std::string(type_name<T>()));
  }
  std::memcpy(&tag, message.data(), sizeof tag);
  if (tag != type_tag<T>()) {
    throw DecodeError(std::string(where) + ": the message is not a " +
                      std::string(type_name<T>()) +
                      " (it was sent as another type)");
  }
  try {
    return decode<T>(message.subspan(sizeof tag));
  } catch (const DecodeError& e) {
    throw DecodeError(std::string(where) + ": " + e.what());
  }
}

// decode_message for a message already taken from a queue or connection:
// on mp::DecodeError the message is handed back in the error's message()
// (its bytes after the tag), so a reader that cannot decode it loses nothing.
template <typename T>
T decode_taken_message(std::vector<std::byte>&& message, const char* where) {
  try {
    return decode_message<T>(message, where);
  } catch (const DecodeError& e) {
    message.erase(message.begin(),
                  message.begin() + static_cast<std::ptrdiff_t>(std::min(
                                        message.size(), kTypeTagSize)));
    throw DecodeError(e.what(), std::move(message));
  }
}

// A buffer for encoding on the calling thread: lets typed sends avoid an
// allocation per message without sharing a buffer between threads.
inline std::vector<std::byte>& thread_scratch() {
  thread_local std::vector<std::byte> scratch;
  scratch.clear();
  return scratch;
}

}  // namespace mp

#endif  // MPBENCH_LIB_CODEC_H_
