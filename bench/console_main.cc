// main() for benchmark binaries whose rows carry many distribution counters
// (bench/ipc.cc's cdf_p<P>_ns): the same as Google Benchmark's
// benchmark_main, except that the console table leaves out every counter
// whose name starts with "cdf_". The JSON written by --benchmark_out (and
// --benchmark_format=json|csv on stdout) keeps them all: the run file is
// where scripts read them, the console is for a person.
//
// Google Benchmark 1.7.1 offers no per-counter display switch; a display
// reporter of our own is its documented extension point. Its output options
// follow the library's flags (--benchmark_color, --benchmark_counters_tabular
// and their BENCHMARK_* environment defaults), read here because the
// library does not export them.

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "benchmark/benchmark.h"

namespace {

constexpr std::string_view kHiddenPrefix = "cdf_";

class ConsoleWithoutDistributions : public benchmark::ConsoleReporter {
 public:
  using ConsoleReporter::ConsoleReporter;
  void ReportRuns(const std::vector<Run>& runs) override {
    std::vector<Run> shown = runs;
    for (Run& run : shown) {
      std::erase_if(run.counters, [](const auto& counter) {
        return counter.first.starts_with(kHiddenPrefix);
      });
    }
    ConsoleReporter::ReportRuns(shown);
  }
};

// The value of --name=V (last one wins) or else of the environment
// variable, as Google Benchmark reads its flags.
std::string flag(int argc, char** argv, std::string_view name, const char* env,
                 std::string fallback) {
  std::string value = fallback;
  if (const char* e = std::getenv(env)) value = e;
  const std::string prefix = "--" + std::string(name) + "=";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0)
      value = argv[i] + prefix.size();
  }
  return value;
}

bool truthy(const std::string& v) {
  return v == "true" || v == "yes" || v == "1" || v == "on" || v == "t" ||
         v == "y";
}

bool colour(const std::string& v) {
  if (v == "auto") {
    const char* term = std::getenv("TERM");
    return isatty(STDOUT_FILENO) && term != nullptr &&
           std::string_view(term) != "dumb";
  }
  return truthy(v);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string format =
      flag(argc, argv, "benchmark_format", "BENCHMARK_FORMAT", "console");
  int options = benchmark::ConsoleReporter::OO_None;
  if (colour(flag(argc, argv, "benchmark_color", "BENCHMARK_COLOR", "auto")))
    options |= benchmark::ConsoleReporter::OO_Color;
  if (truthy(flag(argc, argv, "benchmark_counters_tabular",
                  "BENCHMARK_COUNTERS_TABULAR", "false")))
    options |= benchmark::ConsoleReporter::OO_Tabular;

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (format == "console") {
    ConsoleWithoutDistributions console(
        static_cast<benchmark::ConsoleReporter::OutputOptions>(options));
    benchmark::RunSpecifiedBenchmarks(&console);
  } else {
    benchmark::RunSpecifiedBenchmarks();
  }
  benchmark::Shutdown();
  return 0;
}
