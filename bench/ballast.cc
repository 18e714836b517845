#include "bench/ballast.h"

#include <sys/mman.h>
#include <unistd.h>

#include "lib/error.h"
#include "lib/mapping.h"

namespace mp::bench {

Mapping resident_pages(std::size_t bytes) {
  Mapping pages = Mapping::private_anonymous(bytes);
  // Not fatal where THP is compiled out: the pages are small already.
  ::madvise(pages.data(), pages.size(), MADV_NOHUGEPAGE);
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  volatile char* p = reinterpret_cast<volatile char*>(pages.bytes());
  for (std::size_t offset = 0; offset < pages.size(); offset += page)
    p[offset] = 1;
  return pages;
}

void hold_ballast(std::size_t mib) {
  static Mapping ballast;
  const std::size_t bytes = mib << 20;
  if (ballast.size() == bytes || (bytes == 0 && !ballast)) return;
  ballast.reset();
  if (bytes == 0) return;
  ballast = resident_pages(bytes);
}

}  // namespace mp::bench
