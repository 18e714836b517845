#include "bench/ballast.h"

#include <sys/mman.h>
#include <unistd.h>

#include "lib/error.h"
#include "lib/mapping.h"

namespace mp::bench {

void hold_ballast(std::size_t mib) {
  static Mapping ballast;
  const std::size_t bytes = mib << 20;
  if (ballast.size() == bytes || (bytes == 0 && !ballast)) return;
  ballast.reset();
  if (bytes == 0) return;
  ballast = Mapping::private_anonymous(bytes);
  // Not fatal where THP is compiled out: the pages are small already.
  ::madvise(ballast.data(), bytes, MADV_NOHUGEPAGE);
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  volatile char* p = reinterpret_cast<volatile char*>(ballast.bytes());
  for (std::size_t offset = 0; offset < bytes; offset += page) p[offset] = 1;
}

}  // namespace mp::bench
