// Makes the seed corpus, fuzz/corpus/<target>/seed-*: small, valid inputs
// for each fuzz target, so that fuzzing starts from the formats the library
// really produces instead of from nothing.
//
//   bazel run //fuzz:make_seeds           (re)writes the seeds in the tree
//   make_seeds --check DIR                exit 1 if DIR's seeds differ (the
//                                         //fuzz:seeds_test target)
//
// Pipe streams are captured from a real Connection's send calls and codec
// seeds come from mp::encode. SpscRing images are captured from a real
// ring's sends and read back through a real ring. Queue rings and channel slots
// are laid out as lib/queue.cc and lib/channel.cc write them, and each is
// checked here by reading it back through a real Queue or RingChannel.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "lib/channel.h"
#include "lib/codec.h"
#include "lib/error.h"
#include "lib/pipe.h"
#include "lib/queue.h"
#include "lib/spsc_ring.h"
#include "lib/spsc_ring_testing.h"
#include "lib/testing/corrupt.h"

namespace {

using Bytes = std::vector<std::byte>;

void require(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "make_seeds: self-check failed: %s\n", what.c_str());
    std::exit(2);
  }
}

Bytes str(const std::string& s) {
  Bytes out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

class Builder {
 public:
  Builder& u8(std::uint8_t v) { return raw(&v, 1); }
  Builder& u16(std::uint16_t v) { return raw(&v, 2); }
  Builder& u32(std::uint32_t v) { return raw(&v, 4); }
  Builder& u64(std::uint64_t v) { return raw(&v, 8); }
  Builder& bytes(std::span<const std::byte> b) {
    return raw(b.data(), b.size());
  }
  Builder& raw(const void* p, std::size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    out.insert(out.end(), b, b + n);
    return *this;
  }
  Bytes out;
};

// The bytes a real sending Connection writes for `send`.
template <typename Send>
Bytes captured_stream(Send&& send) {
  auto [reader, writer] = mp::Pipe(false);
  send(writer);
  writer.close();
  Bytes stream;
  std::byte chunk[4096];
  for (;;) {
    const ssize_t n = ::read(reader.fileno(), chunk, sizeof chunk);
    require(n >= 0, "read");
    if (n == 0) break;
    stream.insert(stream.end(), chunk, chunk + n);
  }
  return stream;
}

// [flags][op script][limit][stream]: see pipe_frame_fuzz.cc.
Bytes pipe_seed(std::uint8_t flags, std::uint16_t script, std::uint16_t limit,
                const Bytes& stream) {
  return Builder().u8(flags).u16(script).u16(limit).bytes(stream).out;
}

void pipe_seeds(std::map<std::string, Bytes>& seeds) {
  const std::string dir = "pipe_frame_fuzz/";
  // Three frames read with recv_bytes() (flags bit 1: no limit).
  seeds[dir + "seed-three-frames"] =
      pipe_seed(2, 0x0000, 0, captured_stream([](mp::Connection& c) {
                  c.send_bytes(str("hello"));
                  c.send_bytes({});
                  c.send_bytes(Bytes(100, std::byte{0x5a}));
                }));
  // A socketpair read with every call in turn (recv_bytes(64) twice,
  // recv_bytes_into(64 bytes), skip_message): the 200-byte frame is too long
  // for the limit and gets skipped.
  seeds[dir + "seed-all-calls-with-limit"] =
      pipe_seed(1, 0xe4e4, 64, captured_stream([](mp::Connection& c) {
                  c.send_bytes(Bytes(10, std::byte{1}));
                  c.send_bytes(Bytes(200, std::byte{2}));
                  c.send_bytes(Bytes(64, std::byte{3}));
                  c.send_bytes(Bytes(65, std::byte{4}));
                  c.send_bytes({});
                }));
  // Typed values (mp::Codec frames) read with recv_bytes_into.
  seeds[dir + "seed-typed-values"] =
      pipe_seed(0, 0xaaaa, 4096, captured_stream([](mp::Connection& c) {
                  c.send(std::string("mpbench"));
                  c.send(std::vector<double>{1.0, 2.5, -3.0});
                  c.send(std::int64_t{42});
                }));
  // Large frames read with recv_bytes_into into a 65,535-byte buffer, so
  // that each is read with its header in one readv sized by the last
  // (Connection::recv_large_into): one shorter than the last (the read
  // takes the next frame's first bytes too), a small one, one too long for
  // the buffer (skipped), and a large one cut short.
  Bytes large = captured_stream([](mp::Connection& c) {
    c.send_bytes(Bytes(40000, std::byte{1}));
    c.send_bytes(Bytes(33000, std::byte{2}));
    c.send_bytes(Bytes(10, std::byte{3}));
    c.send_bytes(Bytes(40000, std::byte{4}));
    c.send_bytes(Bytes(70000, std::byte{5}));
    c.send_bytes(Bytes(40000, std::byte{6}));
    c.send_bytes(Bytes(40000, std::byte{7}));
  });
  large.resize(large.size() - 1000);
  seeds[dir + "seed-large-frames"] = pipe_seed(0, 0xaaaa, 65535, large);
  // A frame cut short by the peer: PeerError, then end of file.
  Bytes cut = captured_stream([](mp::Connection& c) {
    c.send_bytes(str("whole"));
    c.send_bytes(Bytes(50, std::byte{7}));
  });
  cut.resize(cut.size() - 30);
  seeds[dir + "seed-truncated-frame"] = pipe_seed(0, 0x0000, 4096, cut);
  // CPython's long form (-1, then an 8-byte big-endian length) for a short
  // payload, a frame as send_bytes writes it, then a malformed header (-5):
  // PeerError, then end of file.
  Bytes odd = Builder()
                  .u8(0xff)
                  .u8(0xff)
                  .u8(0xff)
                  .u8(0xff)
                  .u8(0)
                  .u8(0)
                  .u8(0)
                  .u8(0)
                  .u8(0)
                  .u8(0)
                  .u8(0)
                  .u8(5)
                  .bytes(str("hello"))
                  .out;
  const Bytes plain =
      captured_stream([](mp::Connection& c) { c.send_bytes(str("plain")); });
  odd.insert(odd.end(), plain.begin(), plain.end());
  const Bytes malformed = Builder().u8(0xff).u8(0xff).u8(0xff).u8(0xfb).out;
  odd.insert(odd.end(), malformed.begin(), malformed.end());
  seeds[dir + "seed-long-form-and-malformed"] = pipe_seed(0, 0x0000, 4096, odd);
}

void codec_seeds(std::map<std::string, Bytes>& seeds) {
  const std::string dir = "codec_fuzz/";
  seeds[dir + "seed-int64"] = mp::encode(std::int64_t{-42});
  seeds[dir + "seed-bool"] = mp::encode(true);
  seeds[dir + "seed-string"] = mp::encode(std::string("mpbench"));
  seeds[dir + "seed-vector-double"] =
      mp::encode(std::vector<double>{1.5, -2.0, 3.25});
  seeds[dir + "seed-vector-string"] =
      mp::encode(std::vector<std::string>{"a", "", "ccc"});
  seeds[dir + "seed-pair"] =
      mp::encode(std::pair<std::string, std::vector<int>>{"key", {1, 2, 3}});
  seeds[dir + "seed-nested-vector"] =
      mp::encode(std::vector<std::vector<std::int32_t>>{{1, 2}, {}, {3}});
}

// Queue cursor word: 24-bit message count, 40-bit byte position.
std::uint64_t cursor(std::uint64_t count, std::uint64_t position) {
  return (count << 40) | position;
}

struct QueueSeed {
  std::uint64_t head, tail;
  std::uint16_t capacity;  // the queue's capacity_bytes (>= 8)
  std::uint8_t flags, script;
  std::uint16_t buffer;
  Bytes ring;
  std::vector<Bytes> expect;  // messages a reader takes, in order
  bool corrupt;               // then it refuses
};

// [head][tail][capacity choice][flags][script][buffer][ring]: see
// queue_reader_fuzz.cc. Checked through a real Queue first.
Bytes queue_seed(const QueueSeed& s) {
  mp::QueueOptions options;
  options.capacity_bytes = s.capacity;
  mp::Queue queue(options);
  mp::internal::QueueTestAccess::overwrite(queue, s.head, s.tail, s.ring);
  if (s.flags & 1) queue.close();
  for (const Bytes& want : s.expect) {
    const auto got = queue.try_get_bytes();
    require(got && *got == want, "queue seed message");
  }
  bool refused = false;
  try {
    require(!queue.try_get_bytes().has_value(), "queue seed drained");
  } catch (const mp::PeerError&) {
    refused = true;
  }
  require(refused == s.corrupt, "queue seed corruption");
  return Builder()
      .u64(s.head)
      .u64(s.tail)
      .u16(static_cast<std::uint16_t>(s.capacity - 8))
      .u8(s.flags)
      .u8(s.script)
      .u16(s.buffer)
      .bytes(s.ring)
      .out;
}

void queue_seeds(std::map<std::string, Bytes>& seeds) {
  const std::string dir = "queue_reader_fuzz/";
  {
    // Two records, read with try_get_bytes.
    const Bytes ring =
        Builder().u32(5).bytes(str("hello")).u32(3).bytes(str("abc")).out;
    seeds[dir + "seed-two-records"] = queue_seed({cursor(0, 0),
                                                  cursor(2, ring.size()),
                                                  64,
                                                  0,
                                                  0x00,
                                                  0,
                                                  ring,
                                                  {str("hello"), str("abc")},
                                                  false});
  }
  {
    // A 10-byte record that wraps around a 32-byte ring (header at 28),
    // on a closed queue read with get_bytes_into.
    Builder b;
    Bytes ring(32);
    const std::uint32_t length = 10;
    std::memcpy(ring.data() + 28, &length, 4);
    for (int i = 0; i < 10; ++i) ring[i] = std::byte(0x30 + i);
    const Bytes want = str("0123456789");
    seeds[dir + "seed-wrapping-record"] = queue_seed({cursor(7, 28),
                                                      cursor(8, 28 + 4 + 10),
                                                      32,
                                                      1,
                                                      0xff,
                                                      16,
                                                      ring,
                                                      {want},
                                                      false});
  }
  {
    // A length the published bytes cannot hold (lib/queue_test.cc's
    // CorruptRecordIsRefusedNotFollowed): refused as a corrupt queue.
    const Bytes ring = Builder().u32(1'000'000).bytes(Bytes(12)).out;
    seeds[dir + "seed-corrupt-length"] = queue_seed(
        {cursor(0, 0), cursor(1, 16), 1024, 0, 0x00, 0, ring, {}, true});
  }
  {
    // Closed and empty: end of stream.
    seeds[dir + "seed-closed-empty"] = queue_seed(
        {cursor(3, 40), cursor(3, 40), 64, 1, 0xff, 8, Bytes(64), {}, false});
  }
}

// A channel slot as ChannelCore::send writes it: u64 length, then the data.
Bytes slot(std::span<const std::byte> data) {
  return Builder().u64(data.size()).bytes(data).out;
}

template <typename T>
Bytes values(std::initializer_list<T> list) {
  Bytes out(list.size() * sizeof(T));
  std::memcpy(out.data(), std::data(list), out.size());
  return out;
}

// Checks, through a real RingChannel, that each slot image posted and
// received comes back as its data.
template <typename T>
void check_slots(std::size_t capacity, const std::vector<Bytes>& datas) {
  mp::RingChannel<T> channel(capacity, 1);
  auto& core = mp::internal::ChannelTestAccess::core(channel);
  for (const Bytes& data : datas) {
    mp::internal::ChannelTestAccess::overwrite_and_post(core, 0, slot(data));
    const auto got = channel.try_recv();
    require(got && got->size() * sizeof(T) == data.size() &&
                std::memcmp(got->data(), data.data(), data.size()) == 0,
            "channel seed slot");
  }
}

void channel_seeds(std::map<std::string, Bytes>& seeds) {
  const std::string dir = "channel_reader_fuzz/";
  // [flags][capacity][buffer][commands]: see channel_reader_fuzz.cc.
  // Commands: 0x00 post [index][n][n bytes]; 0x01 try_recv; 0x03 recv_into.
  auto post = [](Builder& b, std::uint8_t index, const Bytes& image) {
    b.u8(0x00)
        .u8(index)
        .u8(static_cast<std::uint8_t>(image.size()))
        .bytes(image);
  };
  {
    // std::byte channel, one slot (a SemaphoreChannel): post, receive, twice.
    const Bytes a = str("hello"), b2 = str("channel");
    check_slots<std::byte>(16, {a, b2});
    Builder b;
    b.u8(0x00).u8(16 - 1).u8(16);
    post(b, 0, slot(a));
    b.u8(0x01);
    post(b, 0, slot(b2));
    b.u8(0x03);
    seeds[dir + "seed-byte-one-slot"] = b.out;
  }
  {
    // int channel, 3 slots, three messages in flight, then close and drain
    // with recv_into (buffer of 4 ints).
    const Bytes m1 = values<int>({1}), m2 = values<int>({2, 3}),
                m3 = values<int>({4, 5, 6, 7});
    check_slots<int>(4, {m1, m2, m3});
    Builder b;
    b.u8(0x01 | (2 << 1) | 0x08).u8(4 - 1).u8(4);
    post(b, 0, slot(m1));
    post(b, 1, slot(m2));
    b.u8(0x03);
    post(b, 2, slot(m3));
    seeds[dir + "seed-int-ring-close"] = b.out;
  }
  {
    // A length far beyond the slot: refused as a corrupt channel
    // (lib/channel_test.cc's CorruptSlotLengthIsRefusedNotFollowed).
    Builder b;
    b.u8(0x01 | (1 << 1)).u8(4 - 1).u8(4);
    post(b, 0, Builder().u64(std::uint64_t{1} << 40).out);
    b.u8(0x01);
    seeds[dir + "seed-corrupt-length"] = b.out;
  }
}

// [head][tail][capacity choice][script][buffer][ring]: see
// spsc_ring_reader_fuzz.cc. `write` sends on a real ring of 256 <<
// `capacity_choice` bytes (and may receive, to move the cursors); the image
// is then read back through a second real ring and must give `expect`, or be
// refused as corrupt.
template <typename Write>
Bytes spsc_seed(std::uint8_t capacity_choice, std::uint8_t script,
                std::uint16_t buffer, Write&& write,
                const std::vector<Bytes>& expect, bool corrupt = false) {
  using Access = mp::internal::SpscRingTestAccess;
  mp::SpscRingOptions options;
  options.capacity_bytes = std::size_t{256} << capacity_choice;
  mp::SpscRing ring(options);
  const std::uint64_t head = write(ring);
  const std::uint64_t tail = Access::tail(ring);
  const Bytes image(Access::bytes(ring),
                    Access::bytes(ring) + ring.capacity_bytes());
  mp::SpscRing check(options);
  Access::overwrite(check, head, tail, image);
  check.close();
  for (const Bytes& want : expect) {
    const auto got = check.recv_bytes();
    require(got && *got == want, "spsc seed message");
  }
  bool refused = false;
  try {
    require(!check.recv_bytes().has_value(), "spsc seed drained");
  } catch (const mp::PeerError&) {
    refused = true;
  }
  require(refused == corrupt, "spsc seed corruption");
  return Builder()
      .u64(head)
      .u64(tail)
      .u8(capacity_choice)
      .u8(script)
      .u16(buffer)
      .bytes(image)
      .out;
}

void spsc_seeds(std::map<std::string, Bytes>& seeds) {
  const std::string dir = "spsc_ring_reader_fuzz/";
  const Bytes hello = str("hello"), empty, forty(40, std::byte{0x2a});
  seeds[dir + "seed-three-messages"] = spsc_seed(0, 0b00'10'01'00, 16,
                                                 [&](mp::SpscRing& ring) {
                                                   ring.send_bytes(hello);
                                                   ring.send_bytes(empty);
                                                   ring.send_bytes(forty);
                                                   return std::uint64_t{0};
                                                 },
                                                 {hello, empty, forty});
  // A message that does not fit before the end of the ring: padding, then
  // the message at the ring's start.
  const Bytes hundred(100, std::byte{0x64});
  seeds[dir + "seed-padding"] =
      spsc_seed(0, 0b10'10'10'10, 0,
                [&](mp::SpscRing& ring) {
                  require(ring.try_send_bytes(Bytes(200)), "spsc seed 200");
                  ring.try_recv_bytes();
                  require(ring.try_send_bytes(hundred), "spsc seed padding");
                  return std::uint64_t{208};
                },
                {hundred});
  // A message streamed in pieces (over a quarter of a 1 KiB ring).
  Bytes streamed(600);
  for (std::size_t i = 0; i < streamed.size(); ++i)
    streamed[i] = std::byte(i % 251);
  seeds[dir + "seed-streamed"] = spsc_seed(2, 0b01'00'10'00, 1000,
                                           [&](mp::SpscRing& ring) {
                                             ring.send_bytes(streamed);
                                             return std::uint64_t{0};
                                           },
                                           {streamed});
  // The same stream cut short: only its first two pieces published.
  seeds[dir + "seed-streamed-cut-short"] = spsc_seed(
      2, 0, 0,
      [&](mp::SpscRing& ring) {
        ring.send_bytes(streamed);
        mp::internal::SpscRingTestAccess::set_tail(ring, 512);
        return std::uint64_t{0};
      },
      {}, true);
}

std::map<std::string, Bytes> all_seeds() {
  std::map<std::string, Bytes> seeds;
  pipe_seeds(seeds);
  codec_seeds(seeds);
  queue_seeds(seeds);
  channel_seeds(seeds);
  spsc_seeds(seeds);
  return seeds;
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const std::string mode = argc > 1 ? argv[1] : "";
  fs::path dir;
  if (mode == "--check" && argc == 3) {
    dir = argv[2];
  } else if (argc == 1 && std::getenv("BUILD_WORKSPACE_DIRECTORY")) {
    dir = fs::path(std::getenv("BUILD_WORKSPACE_DIRECTORY")) / "fuzz/corpus";
  } else if (mode == "--write" && argc == 3) {
    dir = argv[2];
  } else {
    std::fprintf(stderr,
                 "usage: bazel run //fuzz:make_seeds | make_seeds --write DIR "
                 "| make_seeds --check DIR\n");
    return 2;
  }
  const bool check = mode == "--check";
  int differ = 0;
  for (const auto& [name, bytes] : all_seeds()) {
    const fs::path path = dir / name;
    if (check) {
      std::ifstream in(path, std::ios::binary);
      const std::vector<char> have{std::istreambuf_iterator<char>(in),
                                   std::istreambuf_iterator<char>()};
      if (!in.good() && have.empty() && !bytes.empty()) {
        std::printf("missing: %s\n", path.c_str());
        ++differ;
      } else if (have.size() != bytes.size() ||
                 std::memcmp(have.data(), bytes.data(), bytes.size()) != 0) {
        std::printf("differs: %s\n", path.c_str());
        ++differ;
      }
    } else {
      fs::create_directories(path.parent_path());
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(bytes.data()),
                static_cast<std::streamsize>(bytes.size()));
      std::printf("wrote %s (%zu bytes)\n", path.c_str(), bytes.size());
    }
  }
  if (differ) {
    std::printf("%d seeds out of date: run bazel run //fuzz:make_seeds\n",
                differ);
    return 1;
  }
  if (check) std::printf("all %zu seeds up to date\n", all_seeds().size());
  return 0;
}
