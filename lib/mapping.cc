#include "lib/mapping.h"

#include <sys/mman.h>
#include <unistd.h>

#include <stdexcept>
#include <string>

#include "lib/error.h"

namespace mp {
namespace {

Mapping map_anonymous(std::size_t bytes, int visibility) {
  if (bytes == 0) throw std::invalid_argument("Mapping: size must be > 0");
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t rounded = (bytes + page - 1) / page * page;
  void* address = ::mmap(nullptr, rounded, PROT_READ | PROT_WRITE,
                         visibility | MAP_ANONYMOUS, -1, 0);
  if (address == MAP_FAILED) {
    internal::throw_os_error("mmap", errno, std::to_string(rounded) + " bytes");
  }
  return Mapping(address, rounded);
}

}  // namespace

Mapping Mapping::shared(std::size_t bytes) {
  return map_anonymous(bytes, MAP_SHARED);
}

Mapping Mapping::private_anonymous(std::size_t bytes) {
  return map_anonymous(bytes, MAP_PRIVATE);
}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    reset();
    address_ = std::exchange(other.address_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void Mapping::reset() noexcept {
  if (address_ != nullptr) ::munmap(address_, size_);
  address_ = nullptr;
  size_ = 0;
}

}  // namespace mp
