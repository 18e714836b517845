#include "lib/inject.h"

#include <cstdlib>
#include <cstring>

namespace mp::internal {

bool slowdown_injected(Primitive primitive) {
  static const int injected = [] {
    const char* value = std::getenv("MPBENCH_INJECT_SLOWDOWN");
    if (value == nullptr) return -1;
    if (std::strcmp(value, "pipe") == 0)
      return static_cast<int>(Primitive::kPipe);
    if (std::strcmp(value, "queue") == 0)
      return static_cast<int>(Primitive::kQueue);
    if (std::strcmp(value, "channel") == 0)
      return static_cast<int>(Primitive::kChannel);
    if (std::strcmp(value, "process") == 0)
      return static_cast<int>(Primitive::kProcess);
    return -1;
  }();
  return injected == static_cast<int>(primitive);
}

}  // namespace mp::internal
