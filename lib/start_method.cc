#include "lib/start_method.h"

#include <atomic>

namespace mp {
namespace {

std::atomic<StartMethod> g_default{StartMethod::fork};

}  // namespace

void set_start_method(StartMethod method) noexcept {
  g_default.store(method, std::memory_order_relaxed);
}

StartMethod get_start_method() noexcept {
  return g_default.load(std::memory_order_relaxed);
}

std::string_view to_string(StartMethod method) noexcept {
  switch (method) {
    case StartMethod::fork:
      return "fork";
    case StartMethod::forkserver:
      return "forkserver";
    case StartMethod::spawn:
      return "spawn";
  }
  return "unknown";
}

std::optional<StartMethod> start_method_from_string(
    std::string_view name) noexcept {
  for (StartMethod method :
       {StartMethod::fork, StartMethod::forkserver, StartMethod::spawn}) {
    if (name == to_string(method)) return method;
  }
  return std::nullopt;
}

}  // namespace mp
