#include "lib/codec.h"

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace mp {
namespace {

struct Point {
  double x;
  double y;
  bool operator==(const Point&) const = default;
};

struct Person {  // not trivially copyable: field by field
  std::string name;
  std::vector<int> scores;
  std::optional<double> height;
  bool operator==(const Person&) const = default;
};

template <typename T>
T round_trip(const T& value) {
  return decode<T>(encode(value));
}

// encoded_size, where a Codec has it, is what encode writes; a Writer over
// a span of exactly that size takes the value and refuses one byte more.
template <typename T>
void expect_sized(const T& value) {
  std::vector<std::byte> grown;
  Writer to_vector(grown);
  Codec<T>::encode(value, to_vector);
  ASSERT_EQ(Codec<T>::encoded_size(value), grown.size());
  std::vector<std::byte> fixed(grown.size());
  Writer to_span{std::span<std::byte>(fixed)};
  Codec<T>::encode(value, to_span);
  EXPECT_EQ(to_span.written(), fixed.size());
  EXPECT_EQ(fixed, grown);
  if (!fixed.empty()) {
    std::vector<std::byte> short_by_one(fixed.size() - 1);
    Writer too_small{std::span<std::byte>(short_by_one)};
    EXPECT_THROW(Codec<T>::encode(value, too_small), std::length_error);
  }
}

TEST(CodecTest, EncodedSizeIsWhatEncodeWrites) {
  expect_sized(std::int64_t{42});
  expect_sized(Point{1.5, -2});
  expect_sized(std::string());
  expect_sized(std::string("seventeen bytes!!"));
  expect_sized(std::vector<std::uint8_t>(65536, 7));
  expect_sized(std::vector<double>{1, 2, 3});
  expect_sized(std::vector<Point>{});
}

TEST(CodecTest, RoundTripsEverySupportedType) {
  EXPECT_EQ(round_trip(std::int64_t{-42}), -42);
  EXPECT_EQ(round_trip(3.25), 3.25);
  EXPECT_EQ(round_trip(true), true);
  EXPECT_EQ(round_trip(Point{1.5, -2}), (Point{1.5, -2}));
  EXPECT_EQ(round_trip(std::string()), "");
  EXPECT_EQ(round_trip(std::string("hello\0world", 11)),
            std::string("hello\0world", 11));
  EXPECT_EQ(round_trip(std::vector<int>{1, 2, 3}), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(round_trip(std::vector<std::string>{"a", "", "ccc"}),
            (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(round_trip(std::vector<bool>{true, false, true}),
            (std::vector<bool>{true, false, true}));
  const std::pair<std::string, std::vector<double>> pair{"k", {1.0, 2.0}};
  EXPECT_EQ(round_trip(pair), pair);
}

TEST(CodecTest, RoundTripsStandardContainersAndStructs) {
  const std::tuple<int, std::string, double> tuple{1, "two", 3.0};
  EXPECT_EQ(round_trip(tuple), tuple);
  EXPECT_EQ(round_trip(std::optional<std::string>()), std::nullopt);
  EXPECT_EQ(round_trip(std::optional<std::string>("x")), "x");
  EXPECT_EQ(round_trip(std::optional<int>(5)), 5);
  const std::array<std::string, 2> strings{"a", "bc"};
  EXPECT_EQ(round_trip(strings), strings);
  const std::array<int, 3> ints{1, 2, 3};
  EXPECT_EQ(round_trip(ints), ints);
  const std::map<std::string, int> map{{"a", 1}, {"b", 2}};
  EXPECT_EQ(round_trip(map), map);
  const std::unordered_map<int, std::vector<int>> hashed{{1, {2}}, {3, {}}};
  EXPECT_EQ(round_trip(hashed), hashed);
  const Person person{"Ada", {1, 2}, 1.7};
  EXPECT_EQ(round_trip(person), person);
  EXPECT_EQ(round_trip(std::vector<Person>{person, {}}),
            (std::vector<Person>{person, {}}));
}

TEST(CodecTest, MalformedContainersThrowDecodeError) {
  // An optional's presence byte must be 0 or 1.
  EXPECT_THROW(decode<std::optional<int>>(std::vector<std::byte>{std::byte{2}}),
               DecodeError);
  // A map whose input repeats a key.
  std::vector<std::byte> twice_a;
  Writer writer(twice_a);
  writer.write_length(2);
  for (int i = 0; i < 2; ++i) {
    Codec<std::string>::encode("a", writer);
    Codec<int>::encode(i, writer);
  }
  EXPECT_THROW((decode<std::map<std::string, int>>(twice_a)), DecodeError);
}

TEST(CodecTest, TrivialTypesTravelAsTheirBytes) {
  EXPECT_EQ(encode(std::int32_t{7}).size(), 4u);
  EXPECT_EQ(encode(std::vector<std::int32_t>{1, 2}).size(), 8u + 8u);
}

TEST(CodecTest, MalformedInputThrowsDecodeError) {
  const std::vector<std::byte> three(3);
  EXPECT_THROW(decode<std::int32_t>(three), DecodeError);  // truncated
  EXPECT_THROW(decode<std::int32_t>(std::vector<std::byte>(5)),
               DecodeError);  // trailing
  std::vector<std::byte> huge =
      encode(std::uint64_t{1} << 60);  // length prefix only
  EXPECT_THROW(decode<std::string>(huge), DecodeError);
  EXPECT_THROW(decode<std::vector<double>>(huge), DecodeError);
  EXPECT_THROW(decode<std::vector<std::string>>(huge), DecodeError);
  EXPECT_THROW(decode<bool>(std::vector<std::byte>{std::byte{2}}), DecodeError);
  try {
    decode<std::int64_t>(three);
  } catch (const DecodeError& e) {
    EXPECT_STREQ(e.what(),
                 "codec: truncated input: need 8 bytes at offset 0 of 3");
  }
}

}  // namespace
}  // namespace mp
