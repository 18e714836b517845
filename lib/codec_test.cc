#include "lib/codec.h"

#include <cstdint>
#include <string>
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

template <typename T>
T round_trip(const T& value) {
  return decode<T>(encode(value));
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
