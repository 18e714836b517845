#include "lib/inject.h"

#include <cstdlib>
#include <cstring>

namespace mp::internal {
namespace {

int read_injected_slowdown() {
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
}

}  // namespace

const int g_injected_slowdown = read_injected_slowdown();

}  // namespace mp::internal
