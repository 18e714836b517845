// Mapping: sole owner of an mmap'd region.
//
// Mapping::shared(n) is the library's default shared memory: anonymous,
// MAP_SHARED, zero-filled, and inherited by every child forked afterwards, so
// it needs no name, leaves nothing in /dev/shm and disappears with the last
// process that maps it. Move-only; the destructor unmaps and never throws.
#ifndef MPBENCH_LIB_MAPPING_H_
#define MPBENCH_LIB_MAPPING_H_

#include <cstddef>
#include <utility>

namespace mp {

class Mapping {
 public:
  // Anonymous MAP_SHARED memory of at least `bytes` (rounded up to whole
  // pages), zero-filled. Throws mp::OsError("mmap") and std::invalid_argument
  // for bytes == 0.
  static Mapping shared(std::size_t bytes);
  // Anonymous MAP_PRIVATE memory (copy-on-write across fork).
  static Mapping private_anonymous(std::size_t bytes);

  Mapping() noexcept = default;
  // Adopts a region returned by mmap.
  Mapping(void* address, std::size_t bytes) noexcept
      : address_(address), size_(bytes) {}
  Mapping(Mapping&& other) noexcept
      : address_(std::exchange(other.address_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  void* data() const noexcept { return address_; }
  std::byte* bytes() const noexcept {
    return static_cast<std::byte*>(address_);
  }
  std::size_t size() const noexcept { return size_; }
  explicit operator bool() const noexcept { return address_ != nullptr; }

  // Unmaps now (errors ignored).
  void reset() noexcept;

 private:
  void* address_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace mp

#endif  // MPBENCH_LIB_MAPPING_H_
