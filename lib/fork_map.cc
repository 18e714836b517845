#include "lib/fork_map.h"

#include <atomic>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>

#include "lib/mapping.h"
#include "lib/process.h"
#include "lib/queue.h"
#include "lib/start_method.h"

namespace mp::internal {
namespace {

// How often the caller checks that the workers still live.
constexpr auto kHealthInterval = std::chrono::milliseconds(20);

enum class ChunkKind : std::uint64_t { kResults, kError, kTooLong };

// Leads every message a worker sends back.
struct ChunkHeader {
  std::uint64_t chunk;
  ChunkKind kind;
  std::uint64_t detail;  // kError: offset of the failing item; kTooLong: bytes
  std::uint64_t limit;   // kTooLong: the queue's limit per message
};

std::string items_text(std::uint64_t first, std::uint64_t count) {
  return "items " + std::to_string(first) + ".." +
         std::to_string(first + count - 1);
}

}  // namespace

std::vector<std::vector<std::byte>> fork_map_chunks(
    std::size_t items, const ForkMapOptions& options,
    const ForkMapRunner& run) {
  if (get_start_method() != StartMethod::fork) {
    throw std::logic_error(
        "fork_map: its workers inherit the items by fork, which the "
        "process-wide start method (" +
        std::string(to_string(get_start_method())) +
        ") does not do; use mp::Pool with PoolOptions::start, whose workers "
        "receive the items, or set_start_method(StartMethod::fork)");
  }
  if (options.result_queue_bytes < kMinResultQueueBytes) {
    throw std::invalid_argument(
        "fork_map: result_queue_bytes must be at least " +
        std::to_string(kMinResultQueueBytes) + ", got " +
        std::to_string(options.result_queue_bytes));
  }
  const std::size_t chunksize = options.chunksize;
  const std::size_t chunks =
      items == 0 ? 0 : (items + chunksize - 1) / chunksize;
  std::vector<std::vector<std::byte>> payloads(chunks);
  if (chunks == 0) return payloads;
  struct Shared {
    std::atomic<std::uint64_t> next{0};
    std::atomic<std::uint32_t> abort{0};
  };
  Mapping memory = Mapping::shared(sizeof(Shared));
  auto* shared = new (memory.data()) Shared();
  QueueOptions queue_options;
  queue_options.capacity_bytes = options.result_queue_bytes;
  queue_options.wait = options.wait;
  Queue results(queue_options);
  auto chunk_first = [&](std::uint64_t chunk) { return chunk * chunksize; };
  auto chunk_count = [&](std::uint64_t chunk) {
    return std::min<std::uint64_t>(chunksize, items - chunk_first(chunk));
  };

  std::vector<Process> processes;
  const std::size_t workers = std::min(options.workers, chunks);
  processes.reserve(workers);
  for (std::size_t w = 0; w < workers; ++w) {
    processes.emplace_back([&] {
      std::vector<std::byte> message;
      ChunkFailure failure;
      for (;;) {
        if (shared->abort.load(std::memory_order_relaxed)) return 0;
        const std::uint64_t chunk = shared->next.fetch_add(1);
        if (chunk >= chunks) return 0;
        message.assign(sizeof(ChunkHeader), std::byte{0});
        ChunkHeader header{chunk, ChunkKind::kResults, 0, 0};
        if (!run(chunk_first(chunk), chunk_count(chunk), message, failure)) {
          header.kind = ChunkKind::kError;
          header.detail = failure.item;
          message.resize(sizeof header);
          const auto text = std::as_bytes(std::span(failure.what));
          message.insert(message.end(), text.begin(), text.end());
        }
        std::memcpy(message.data(), &header, sizeof header);
        try {
          results.put_bytes(message);
        } catch (const MessageTooLong& e) {
          // Tell the caller instead of dying: the results cannot travel.
          header = {chunk, ChunkKind::kTooLong, message.size() - sizeof header,
                    e.limit() - sizeof header};
          results.put_bytes(std::as_bytes(std::span(&header, 1)));
        }
      }
    });
    processes.back().set_daemon(true);
    processes.back().start();
  }

  std::exception_ptr failure;
  std::size_t received = 0;
  std::vector<bool> done(chunks, false);
  std::vector<std::byte> buffer;
  auto handle = [&](std::span<const std::byte> message) {
    ChunkHeader header;
    std::memcpy(&header, message.data(), sizeof header);
    const std::uint64_t chunk = header.chunk;
    const auto payload = message.subspan(sizeof header);
    ++received;
    done[chunk] = true;
    if (failure) return;
    if (header.kind == ChunkKind::kError) {
      const std::uint64_t item = chunk_first(chunk) + header.detail;
      failure = std::make_exception_ptr(TaskError(
          "fork_map: item " + std::to_string(item) + " (chunk " +
              std::to_string(chunk) + ") raised: " +
              std::string(reinterpret_cast<const char*>(payload.data()),
                          payload.size()),
          item));
    } else if (header.kind == ChunkKind::kTooLong) {
      failure = std::make_exception_ptr(MessageTooLong(
          "fork_map: the results of chunk " + std::to_string(chunk) + " (" +
              items_text(chunk_first(chunk), chunk_count(chunk)) + ") take " +
              std::to_string(header.detail) +
              " bytes, more than one message of the result queue holds (" +
              std::to_string(header.limit) +
              " bytes): raise ForkMapOptions::result_queue_bytes or lower "
              "chunksize",
          header.detail, header.limit));
    } else {
      payloads[chunk].assign(payload.begin(), payload.end());
      return;
    }
    shared->abort.store(1);
  };
  while (received < chunks && !failure) {
    try {
      if (auto message = take(results, buffer, kHealthInterval))
        handle(*message);
    } catch (const PeerError&) {
      // No worker is alive: the check below sees it.
    }
    bool any_alive = false;
    for (Process& p : processes) any_alive = p.is_alive() || any_alive;
    if (!any_alive) break;
  }
  for (Process& p : processes) p.join();
  // Everything the workers published is in the queue now.
  while (received < chunks && !failure) {
    auto message = take(results, buffer, std::nullopt);
    if (!message) break;
    handle(*message);
  }
  if (failure) std::rethrow_exception(failure);
  for (std::size_t chunk = 0; chunk < chunks; ++chunk) {
    if (done[chunk]) continue;
    std::string who;
    for (Process& p : processes) {
      if (p.exitcode() != 0)
        who += " pid " + std::to_string(p.pid()) + " " +
               describe_exit(p.exitcode()) + ";";
    }
    throw WorkerLost("fork_map: chunk " + std::to_string(chunk) + " (" +
                         items_text(chunk_first(chunk), chunk_count(chunk)) +
                         ") was lost: a worker died:" + who,
                     chunk_first(chunk), chunk_count(chunk));
  }
  return payloads;
}

}  // namespace mp::internal
