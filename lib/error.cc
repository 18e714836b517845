#include "lib/error.h"

#include <cstring>

namespace mp {
namespace {

std::string describe(std::string_view call, std::string_view context) {
  std::string what(call);
  if (!context.empty()) {
    what += " (";
    what += context;
    what += ')';
  }
  return what;
}

}  // namespace

// std::system_error appends ": <strerror text>" to the message itself.
OsError::OsError(std::string_view call, int error_number,
                 std::string_view context)
    : std::system_error(error_number, std::generic_category(),
                        describe(call, context)),
      call_(call) {}

namespace internal {

void throw_os_error(std::string_view call, int error_number,
                    std::string_view context) {
  throw OsError(call, error_number, context);
}

}  // namespace internal
}  // namespace mp
