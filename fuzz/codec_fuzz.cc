// Fuzzes mp::decode<T>, which reads bytes that another process sent, for
// several T. The only exception allowed is mp::DecodeError; where decoding
// succeeds the value must encode back to exactly the input (every supported
// type has a single encoding). Sanitizers catch out-of-bounds reads, and
// -malloc_limit_mb allocations the input could not justify.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "lib/codec.h"

namespace {

template <typename T>
void round_trip(std::span<const std::byte> input) {
  T value;
  try {
    value = mp::decode<T>(input);
  } catch (const mp::DecodeError&) {
    return;
  }
  const std::vector<std::byte> again = mp::encode(value);
  FUZZ_CHECK(again.size() == input.size());
  FUZZ_CHECK(std::equal(again.begin(), again.end(), input.begin()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  const std::span<const std::byte> input(
      reinterpret_cast<const std::byte*>(data), size);
  round_trip<std::int64_t>(input);
  round_trip<bool>(input);
  round_trip<std::string>(input);
  round_trip<std::vector<double>>(input);
  round_trip<std::vector<std::string>>(input);
  round_trip<std::pair<std::string, std::vector<int>>>(input);
  round_trip<std::vector<std::vector<std::int32_t>>>(input);
  return 0;
}
