// Helpers shared by the fuzz targets: reading fuzz input as parameters, and
// failing loudly when a harness's property does not hold.
#ifndef MPBENCH_FUZZ_FUZZ_INPUT_H_
#define MPBENCH_FUZZ_FUZZ_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>

// A property of the code under test failed: report and abort, which libFuzzer
// (and the replay test) reports as a crash with this input.
#define FUZZ_CHECK(condition)                                          \
  do {                                                                 \
    if (!(condition)) {                                                \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, \
                   __LINE__, #condition);                              \
      std::abort();                                                    \
    }                                                                  \
  } while (0)

namespace mp::fuzz {

// Takes parameters from the front of the input; what is left is the payload.
// Reading past the end yields zeros, so every input is valid.
class FuzzInput {
 public:
  FuzzInput(const std::uint8_t* data, std::size_t size)
      : data_(data), size_(size) {}

  std::uint8_t byte() {
    if (size_ == 0) return 0;
    --size_;
    return *data_++;
  }
  std::uint64_t u64() {
    std::uint64_t value = 0;
    const std::size_t n = size_ < 8 ? size_ : 8;
    std::memcpy(&value, data_, n);
    data_ += n;
    size_ -= n;
    return value;
  }
  // Up to `n` bytes (fewer at the end of the input).
  std::span<const std::byte> bytes(std::size_t n) {
    if (n > size_) n = size_;
    std::span<const std::byte> part(reinterpret_cast<const std::byte*>(data_),
                                    n);
    data_ += n;
    size_ -= n;
    return part;
  }
  std::span<const std::byte> rest() { return bytes(size_); }
  std::size_t remaining() const { return size_; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
};

}  // namespace mp::fuzz

#endif  // MPBENCH_FUZZ_FUZZ_INPUT_H_
