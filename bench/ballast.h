// Ballast: resident memory held by the benchmark process, so that the cost of
// copying page tables at fork shows.
#ifndef MPBENCH_BENCH_BALLAST_H_
#define MPBENCH_BENCH_BALLAST_H_

#include <cstddef>

#include "lib/mapping.h"

namespace mp::bench {

// Maps `bytes` of private anonymous memory (rounded up to whole pages) with
// huge pages refused (MADV_NOHUGEPAGE) and every page written once, so that
// each page is resident with its own page-table entry when this returns.
// Throws mp::OsError when the memory cannot be mapped.
Mapping resident_pages(std::size_t bytes);

// Makes this process hold exactly `mib` MiB of private anonymous memory with
// every 4 KiB page written, in addition to what it already has. Huge pages are
// refused (MADV_NOHUGEPAGE) so each page has its own page-table entry, as in a
// heap built from small allocations. The memory is kept across calls with the
// same size and replaced when the size changes; 0 releases it. Throws
// mp::OsError when the memory cannot be mapped.
void hold_ballast(std::size_t mib);

}  // namespace mp::bench

#endif  // MPBENCH_BENCH_BALLAST_H_
