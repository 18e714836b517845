#include "lib/pipe.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/process.h"
#include "lib/test_util.h"

namespace mp {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

std::vector<std::byte> pattern(std::size_t size, unsigned seed) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i)
    bytes[i] = std::byte((i * 131 + seed) & 0xff);
  return bytes;
}

// CPython's frame header (multiprocessing.connection), written out here
// rather than with the library's encoder: a 4-byte big-endian length, or -1
// and an 8-byte big-endian length (`long_form`, which CPython uses past
// 2 GiB - 1 bytes).
std::vector<std::byte> header_of(std::uint64_t length, bool long_form = false) {
  std::vector<std::byte> out;
  const auto put = [&out](std::uint64_t value, int bytes) {
    for (int shift = 8 * (bytes - 1); shift >= 0; shift -= 8)
      out.push_back(std::byte((value >> shift) & 0xff));
  };
  if (long_form || length > 0x7fffffff) {
    put(0xffffffff, 4);
    put(length, 8);
  } else {
    put(length, 4);
  }
  return out;
}

std::vector<std::byte> frame_of(const std::vector<std::byte>& payload) {
  auto frame = header_of(payload.size());
  frame.insert(frame.end(), payload.begin(), payload.end());
  return frame;
}

void write_all(int fd, const std::vector<std::byte>& bytes) {
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()),
            static_cast<ssize_t>(bytes.size()));
}

class PipeTest : public ::testing::TestWithParam<bool> {
 protected:
  void TearDown() override { EXPECT_EQ(leaks_.Check(), ""); }
  testing::LeakCheck leaks_;
};

// Both kinds: a socketpair (duplex) and a pipe.
INSTANTIATE_TEST_SUITE_P(Kinds, PipeTest, ::testing::Bool(),
                         [](const auto& info) {
                           return info.param ? "Duplex" : "Simplex";
                         });

TEST_P(PipeTest, MessagesOfEverySizeArriveWhole) {
  auto [receiver, sender] = Pipe(GetParam());
  const std::size_t pipe_buffer = 65536;
  const std::vector<std::size_t> sizes = {
      0, 1, 8, pipe_buffer - 8, pipe_buffer, pipe_buffer + 1, 16 << 20};
  Process producer([&, &receiver = receiver, &sender = sender] {
    receiver.close();
    for (std::size_t i = 0; i < sizes.size(); ++i)
      sender.send_bytes(pattern(sizes[i], i));
  });
  producer.start();
  sender.close();
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    auto message = receiver.recv_bytes();
    ASSERT_TRUE(message) << "size " << sizes[i];
    EXPECT_EQ(*message, pattern(sizes[i], i)) << "size " << sizes[i];
  }
  EXPECT_EQ(receiver.recv_bytes(),
            std::nullopt);  // EOF after the producer exits
  producer.join();
  EXPECT_EQ(producer.exitcode(), 0);
}

TEST_P(PipeTest, TypedValuesRoundTrip) {
  auto [a, b] = Pipe(GetParam());
  b.send(std::int64_t{42});
  b.send(std::string("hello"));
  b.send(std::vector<double>{1.5, 2.5});
  b.send(std::make_pair(std::string("k"), std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(a.recv<std::int64_t>(), 42);
  EXPECT_EQ(a.recv<std::string>(), "hello");
  EXPECT_EQ(a.recv<std::vector<double>>(), (std::vector<double>{1.5, 2.5}));
  auto pair = a.recv<std::pair<std::string, std::vector<std::string>>>();
  ASSERT_TRUE(pair);
  EXPECT_EQ(pair->first, "k");
  EXPECT_EQ(pair->second, (std::vector<std::string>{"x", "y"}));
  b.send(std::string("not an int"));
  EXPECT_THROW(a.recv<std::int32_t>(), DecodeError);
  // Same size, other type: the type tag catches it, and hands the bytes back.
  b.send(std::int64_t{7});
  try {
    a.recv<double>();
    ADD_FAILURE() << "an int64_t received as a double must throw";
  } catch (const DecodeError& e) {
    EXPECT_EQ(decode<std::int64_t>(e.message()), 7);
  }
  b.send(std::vector<std::int32_t>{1, 2});
  EXPECT_THROW(a.recv<std::vector<float>>(), DecodeError);
}

TEST_P(PipeTest, EndOfFileAfterThePeerCloses) {
  auto [receiver, sender] = Pipe(GetParam());
  sender.send(1);
  sender.send(2);
  sender.close();
  EXPECT_EQ(receiver.recv<int>(), 1);
  EXPECT_EQ(receiver.recv<int>(), 2);
  EXPECT_EQ(receiver.recv<int>(), std::nullopt);
  EXPECT_EQ(receiver.recv<int>(), std::nullopt);  // stays at EOF
  EXPECT_TRUE(receiver.poll());
}

TEST_P(PipeTest, SendingToAClosedPeerIsAnErrorNotSigpipe) {
  auto [receiver, sender] = Pipe(GetParam());
  Process child([&, &receiver = receiver, &sender = sender] {
    receiver.close();
    try {
      sender.send_bytes(pattern(1 << 20, 1));
      return 2;  // the send should have failed
    } catch (const PeerError& e) {
      return std::string(e.what()).find("peer has closed") != std::string::npos
                 ? 0
                 : 3;
    }
  });
  receiver.close();  // before the child starts writing: nobody reads
  child.start();
  sender.close();
  child.join();
  EXPECT_EQ(child.exitcode(), 0) << "-13 would mean death by SIGPIPE";
}

TEST_P(PipeTest, OverLongFrameIsRefusedAndStaysReadable) {
  auto [receiver, sender] = Pipe(GetParam());
  sender.send_bytes(pattern(100, 7));
  sender.send_bytes(pattern(5, 8));
  try {
    receiver.recv_bytes(99);
    FAIL() << "a 100-byte message must be refused with max_length 99";
  } catch (const MessageTooLong& e) {
    EXPECT_EQ(e.length(), 100u);
    EXPECT_EQ(e.limit(), 99u);
    EXPECT_THAT(e.what(), HasSubstr("stays unread"));
  }
  std::vector<std::byte> small(10);
  EXPECT_THROW(receiver.recv_bytes_into(small), MessageTooLong);
  EXPECT_EQ(receiver.recv_bytes(100),
            pattern(100, 7));  // nothing lost, still aligned
  EXPECT_EQ(receiver.recv_bytes_into(small), 5u);
  EXPECT_EQ(std::vector<std::byte>(small.begin(), small.begin() + 5),
            pattern(5, 8));
}

// The reader asks for one frame of the last frame's size per read; sizes
// that change, several frames waiting at once,
// a message too long for the buffer and a frame cut short must all still come
// out exactly as sent.
// Sends frames of `sizes` from a thread, then a frame claiming `claimed`
// bytes cut short after 1000; reads them after they have piled up with
// recv_bytes_into a `buffer_size`-byte buffer (recv_bytes for those too
// long for it, after MessageTooLong): each must come out as sent, then the
// truncation as a PeerError, then end of file.
void expect_frames_then_truncation(Connection& receiver, Connection& sender,
                                   const std::vector<std::size_t>& sizes,
                                   std::size_t buffer_size,
                                   std::uint64_t claimed) {
  std::thread writer([&] {
    for (std::size_t i = 0; i < sizes.size(); ++i)
      sender.send_bytes(pattern(sizes[i], static_cast<unsigned>(i)));
    std::vector<std::byte> part(1000);
    write_all(sender.fileno(), header_of(claimed));
    write_all(sender.fileno(), part);
    sender.close();
  });
  std::this_thread::sleep_for(20ms);  // let frames pile up in the pipe
  std::vector<std::byte> buffer(buffer_size);
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] > buffer.size()) {
      EXPECT_THROW(receiver.recv_bytes_into(buffer), MessageTooLong) << i;
      EXPECT_EQ(receiver.recv_bytes(),
                pattern(sizes[i], static_cast<unsigned>(i)))
          << i;
      continue;
    }
    ASSERT_EQ(receiver.recv_bytes_into(buffer), sizes[i]) << i;
    ASSERT_EQ(std::vector<std::byte>(buffer.begin(), buffer.begin() + sizes[i]),
              pattern(sizes[i], static_cast<unsigned>(i)))
        << i;
  }
  writer.join();
  try {
    receiver.recv_bytes_into(buffer);
    FAIL() << "a truncated frame must be an error";
  } catch (const PeerError& e) {
    EXPECT_THAT(e.what(), HasSubstr("middle of a " + std::to_string(claimed) +
                                    "-byte message (1000 bytes"));
  }
  EXPECT_EQ(receiver.recv_bytes_into(buffer), std::nullopt);
}

TEST_P(PipeTest, ChangingSizesIntoOneBufferStayAligned) {
  auto [receiver, sender] = Pipe(GetParam());
  expect_frames_then_truncation(
      receiver, sender,
      {2000, 2000, 2000, 1500, 1500, 3000, 1200, 3000, 3000, 6000, 3000, 8,
       4096, 4096, 4095, 4097, 4096},
      4096, /*claimed=*/4096);
}

// The same with the reader waiting on a writer that sends each frame in
// pieces, so that reads come back short.
TEST_P(PipeTest, FramesArrivingInPiecesAreReassembled) {
  auto [receiver, sender] = Pipe(GetParam());
  const std::vector<std::size_t> sizes = {3000, 3000, 3000, 2500, 3500, 3500};
  Process producer([&, &receiver = receiver, &sender = sender] {
    receiver.close();
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      const auto frame = frame_of(pattern(sizes[i], static_cast<unsigned>(i)));
      for (std::size_t at = 0; at < frame.size(); at += 1000) {
        const std::size_t n = std::min<std::size_t>(1000, frame.size() - at);
        if (::write(sender.fileno(), frame.data() + at, n) !=
            static_cast<ssize_t>(n))
          return 1;
        std::this_thread::sleep_for(1ms);
      }
    }
    return 0;
  });
  producer.start();
  sender.close();
  std::vector<std::byte> buffer(4000);
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_EQ(receiver.recv_bytes_into(buffer), sizes[i]) << i;
    EXPECT_EQ(std::vector<std::byte>(buffer.begin(), buffer.begin() + sizes[i]),
              pattern(sizes[i], i))
        << i;
  }
  EXPECT_EQ(receiver.recv_bytes_into(buffer), std::nullopt);
  producer.join();
  EXPECT_EQ(producer.exitcode(), 0);
}

// A backlog of frames whose sizes change from one to the next (so reads
// sized for the last frame end in the middle of the next one, or of its
// header), with a frame large enough to be read straight into its
// destination and an empty one, comes out exactly as sent.
TEST_P(PipeTest, ABacklogOfMixedFramesArrivesIntact) {
  auto [receiver, sender] = Pipe(GetParam());
  std::vector<std::size_t> sizes;
  for (std::size_t i = 0; i < 3000; ++i) sizes.push_back((i * 37) % 200);
  sizes[1500] = 40000;  // over the direct-read threshold
  sizes[1501] = 0;
  std::thread writer([&, &sender = sender] {
    for (std::size_t i = 0; i < sizes.size(); ++i)
      sender.send_bytes(pattern(sizes[i], static_cast<unsigned>(i)));
    sender.close();
  });
  std::this_thread::sleep_for(50ms);  // let the backlog pile up
  std::vector<std::byte> buffer(65536);
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_EQ(receiver.recv_bytes_into(buffer), sizes[i]) << i;
    ASSERT_EQ(std::vector<std::byte>(buffer.begin(), buffer.begin() + sizes[i]),
              pattern(sizes[i], static_cast<unsigned>(i)))
        << i;
  }
  EXPECT_EQ(receiver.recv_bytes_into(buffer), std::nullopt);
  writer.join();
}

// Large frames are read with their header in one call, sized by the last
// frame (recv_large_into): frames shorter than the last (whose read takes
// the next one's first bytes too), a small one between, one too long for
// the buffer, a backlog, and a large frame cut short must all come out as
// sent.
TEST_P(PipeTest, LargeFramesOfChangingSizesArriveIntact) {
  auto [receiver, sender] = Pipe(GetParam());
  expect_frames_then_truncation(
      receiver, sender,
      {40000, 40000, 65536, 65536, 33000, 33000, 10, 65536, 70000, 65536, 50000,
       32768, 65536, 0, 65536},
      65536, /*claimed=*/65536);
}

// A backlog of frames of one size is read a frame at a time, never part of
// the next: after each message, what the kernel still holds is whole frames.
// (A read that took the next frame's header along with a payload left every
// later frame split across two reads, each message on the slow path.)
TEST_P(PipeTest, ReadsOfABacklogEndAtFrameBoundaries) {
  auto [receiver, sender] = Pipe(GetParam());
  constexpr std::size_t kFrames = 3;
  for (std::size_t size : {0, 8, 100, 4096, 16000}) {
    const auto message = pattern(size, static_cast<unsigned>(size));
    for (std::size_t i = 0; i < kFrames; ++i) sender.send_bytes(message);
    std::vector<std::byte> buffer(size);
    for (std::size_t left = kFrames; left-- > 0;) {
      ASSERT_EQ(receiver.recv_bytes_into(buffer), size);
      EXPECT_EQ(buffer, message);
      int unread = -1;
      ASSERT_EQ(::ioctl(receiver.fileno(), FIONREAD, &unread), 0);
      EXPECT_EQ(static_cast<std::size_t>(unread),
                left * (Connection::header_size(size) + size))
          << size << "-byte frames, " << left << " left";
    }
  }
}

// Part of a frame that a read took along with an earlier one is not a
// message yet: poll() waits for the rest, which then completes it. (A
// 100-byte frame first makes the reader ask for 104 bytes a read.)
TEST_P(PipeTest, PollDoesNotCountAPartialBufferedFrame) {
  auto [receiver, sender] = Pipe(GetParam());
  sender.send_bytes(pattern(100, 1));
  ASSERT_EQ(receiver.recv_bytes(), pattern(100, 1));
  sender.send_bytes(pattern(16, 2));
  const auto last = pattern(64, 3);
  const auto frame = frame_of(last);
  ASSERT_EQ(::write(sender.fileno(), frame.data(), 20), 20);
  ASSERT_EQ(receiver.recv_bytes(), pattern(16, 2));
  EXPECT_FALSE(receiver.poll(10ms));
  ASSERT_EQ(::write(sender.fileno(), frame.data() + 20, frame.size() - 20),
            static_cast<ssize_t>(frame.size() - 20));
  EXPECT_TRUE(receiver.poll(10s));
  EXPECT_EQ(receiver.recv_bytes(), last);
}

// An over-long frame found in the middle of a backlog is refused and stays
// unread; the frames after it are intact.
TEST_P(PipeTest, OverLongFrameInABacklogStaysAligned) {
  auto [receiver, sender] = Pipe(GetParam());
  for (unsigned i = 0; i < 100; ++i)
    sender.send_bytes(pattern(i == 80 ? 500 : 16, i));
  std::vector<std::byte> buffer(100);
  for (unsigned i = 0; i < 100; ++i) {
    if (i == 80) {
      EXPECT_THROW(receiver.recv_bytes_into(buffer), MessageTooLong);
      EXPECT_EQ(receiver.recv_bytes(), pattern(500, i));
      continue;
    }
    ASSERT_EQ(receiver.recv_bytes_into(buffer), 16u) << i;
    ASSERT_EQ(std::vector<std::byte>(buffer.begin(), buffer.begin() + 16),
              pattern(16, i))
        << i;
  }
}

TEST_P(PipeTest, SkipMessageDropsExactlyOne) {
  auto [receiver, sender] = Pipe(GetParam());
  std::thread drain([&, &receiver = receiver] {
    EXPECT_TRUE(receiver.skip_message());
    EXPECT_EQ(receiver.recv<int>(), 9);
  });
  sender.send_bytes(pattern(200000, 1));  // larger than the pipe: streamed
  sender.send(9);
  sender.close();
  drain.join();
}

// Alone, and at the end of a backlog of 100 small frames (what a socket's
// send buffer takes without a reader): every whole frame first, then the
// error, then end of file.
TEST_P(PipeTest, TruncatedFrameIsAPeerErrorThenEof) {
  for (const unsigned backlog : {0u, 100u}) {
    auto [receiver, sender] = Pipe(GetParam());
    for (unsigned i = 0; i < backlog; ++i) sender.send_bytes(pattern(16, i));
    write_all(sender.fileno(), header_of(100));
    ASSERT_EQ(::write(sender.fileno(), "0123456789", 10), 10);
    sender.close();
    for (unsigned i = 0; i < backlog; ++i)
      ASSERT_EQ(receiver.recv_bytes(), pattern(16, i)) << i;
    try {
      receiver.recv_bytes();
      FAIL() << "backlog " << backlog;
    } catch (const PeerError& e) {
      EXPECT_THAT(e.what(), HasSubstr("middle of a 100-byte message (10 bytes "
                                      "received)"));
    }
    EXPECT_EQ(receiver.recv_bytes(), std::nullopt);
  }
}

TEST_P(PipeTest, TruncatedHeaderIsAPeerError) {
  // Three bytes of a short header, and the long form's -1 with three bytes
  // of its length.
  auto long_cut = header_of(5, /*long_form=*/true);
  long_cut.resize(7);
  for (const auto& [bytes, of] :
       {std::pair{header_of(5), 4}, std::pair{long_cut, 12}}) {
    auto [receiver, sender] = Pipe(GetParam());
    write_all(sender.fileno(),
              std::vector<std::byte>(bytes.begin(), bytes.end() - (of == 4)));
    sender.close();
    try {
      receiver.recv_bytes();
      FAIL() << "a header cut short must be an error";
    } catch (const PeerError& e) {
      EXPECT_THAT(e.what(),
                  HasSubstr("frame header (" + std::to_string(of == 4 ? 3 : 7) +
                            " of " + std::to_string(of)));
    }
    EXPECT_EQ(receiver.recv_bytes(), std::nullopt);
  }
}

// A negative length other than -1 is no frame CPython or we write: the
// stream cannot be trusted after it, so the connection reads as closed.
TEST_P(PipeTest, MalformedHeaderIsAPeerErrorThenEof) {
  auto [receiver, sender] = Pipe(GetParam());
  sender.send_bytes(pattern(10, 1));
  write_all(sender.fileno(), {std::byte{0xff}, std::byte{0xff}, std::byte{0xff},
                              std::byte{0xfb}});  // -5
  sender.send_bytes(pattern(10, 2));
  EXPECT_EQ(receiver.recv_bytes(), pattern(10, 1));
  try {
    receiver.recv_bytes();
    FAIL() << "a malformed header must be an error";
  } catch (const PeerError& e) {
    EXPECT_THAT(e.what(), HasSubstr("malformed frame header (length -5)"));
  }
  EXPECT_EQ(receiver.recv_bytes(), std::nullopt);
  EXPECT_TRUE(receiver.poll());  // end of file is ready at once
}

// The long form is read whatever the length it carries (CPython's reader
// accepts it too), by every receiving call.
TEST_P(PipeTest, LongFormHeaderOfASmallLengthIsRead) {
  auto [receiver, sender] = Pipe(GetParam());
  for (int i = 0; i < 3; ++i) {
    auto frame = header_of(5, /*long_form=*/true);
    for (char c : std::string("hello")) frame.push_back(std::byte(c));
    write_all(sender.fileno(), frame);
  }
  const std::vector<std::byte> hello = {std::byte{'h'}, std::byte{'e'},
                                        std::byte{'l'}, std::byte{'l'},
                                        std::byte{'o'}};
  EXPECT_EQ(receiver.recv_bytes(), hello);
  std::vector<std::byte> buffer(5);
  EXPECT_EQ(receiver.recv_bytes_into(buffer), 5u);
  EXPECT_EQ(buffer, hello);
  EXPECT_TRUE(receiver.skip_message());
}

TEST_P(PipeTest, HugeClaimedLengthDoesNotAllocateIt) {
  auto [receiver, sender] = Pipe(GetParam());
  // A petabyte, in the long form.
  write_all(sender.fileno(), header_of(std::uint64_t{1} << 50));
  sender.close();
  EXPECT_THROW(receiver.recv_bytes(), PeerError);
}

// What send_bytes writes is CPython's frame, byte for byte.
TEST_P(PipeTest, FramesAreCPythons) {
  auto [receiver, sender] = Pipe(GetParam());
  const auto message = pattern(300, 7);
  sender.send_bytes(message);
  std::vector<std::byte> wire(4 + 300);
  ASSERT_EQ(::read(receiver.fileno(), wire.data(), wire.size()),
            static_cast<ssize_t>(wire.size()));
  EXPECT_EQ(wire, frame_of(message));
}

TEST_P(PipeTest, PollWaitsForAMessage) {
  auto [receiver, sender] = Pipe(GetParam());
  EXPECT_FALSE(receiver.poll());
  EXPECT_FALSE(receiver.poll(10ms));
  std::thread later([&, &sender = sender] {
    std::this_thread::sleep_for(20ms);
    sender.send(1);
  });
  EXPECT_TRUE(receiver.poll(10s));
  later.join();
  EXPECT_EQ(receiver.recv<int>(), 1);
}

TEST_P(PipeTest, MisuseIsReported) {
  auto [receiver, sender] = Pipe(GetParam());
  if (!GetParam()) {
    EXPECT_THROW(receiver.send(1), std::logic_error);
    EXPECT_THROW(sender.recv<int>(), std::logic_error);
  }
  sender.close();
  EXPECT_THROW(sender.send(1), ClosedError);
}

// Seed 002's client/server "adder" over a duplex pipe.
// A Python process on the other end: CPython's own Connection reads what
// send_bytes writes and writes what recv_bytes reads, sizes on both sides of
// 4 KiB and of the pipe buffer included.
TEST(PipeCPythonTest, APythonConnectionIsAPeer) {
  const std::vector<std::size_t> sizes = {0, 1, 300, 4096, 70000, 300000};
  auto [ours, theirs] = Pipe(/*duplex=*/true);
  const std::string script =
      "from multiprocessing.connection import Connection\n"
      "c = Connection(3)\n"
      "for _ in range(" +
      std::to_string(sizes.size()) +
      "):\n"
      "    c.send_bytes(c.recv_bytes()[::-1])\n";
  Process python([&, &ours = ours, &theirs = theirs] {
    ours.close();
    if (::dup2(theirs.fileno(), 3) == -1) return 126;
    ::execlp("python3", "python3", "-c", script.c_str(), nullptr);
    return 127;  // no python3
  });
  python.start();
  theirs.close();
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    auto message = pattern(sizes[i], static_cast<unsigned>(i));
    ours.send_bytes(message);
    std::reverse(message.begin(), message.end());
    EXPECT_EQ(ours.recv_bytes(), message) << sizes[i];
  }
  python.join();
  EXPECT_EQ(python.exitcode(), 0);
}

TEST(PipeSeedTest, DuplexAdderServer) {
  testing::LeakCheck leaks;
  {
    auto [server, client] = Pipe(true);
    Process adder([&, &server = server, &client = client] {
      client.close();
      while (auto request = server.recv<std::pair<int, int>>()) {
        server.send(request->first + request->second);
      }
    });
    adder.start();
    server.close();
    client.send(std::make_pair(3, 4));
    EXPECT_EQ(client.recv<int>(), 7);
    client.send(std::make_pair(40, 2));
    EXPECT_EQ(client.recv<int>(), 42);
    client.close();
    adder.join();
    EXPECT_EQ(adder.exitcode(), 0);
  }
  EXPECT_EQ(leaks.Check(), "");
}

TEST(PipeBufferTest, OneWayPipesAreGrownToTheSystemLimit) {
  std::size_t limit = 0;
  if (FILE* f = std::fopen("/proc/sys/fs/pipe-max-size", "r")) {
    if (std::fscanf(f, "%zu", &limit) != 1) limit = 0;
    std::fclose(f);
  }
  auto [receiver, sender] = Pipe(false);
  const int size = ::fcntl(sender.fileno(), F_GETPIPE_SZ);
  ASSERT_GT(size, 0);
  // Root (CAP_SYS_RESOURCE) always gets the limit; others may be refused
  // beyond their pipe-user-pages share and keep the default.
  if (::geteuid() == 0 && limit > 0) {
    EXPECT_EQ(static_cast<std::size_t>(size), limit);
  }
  EXPECT_EQ(grow_pipe_buffer(sender.fileno()), static_cast<std::size_t>(size));
}

TEST(PipeBufferTest, GrowingWhatIsNotAPipeIsQuiet) {
  auto [one, two] = Pipe(true);  // a socket
  EXPECT_EQ(grow_pipe_buffer(one.fileno()), 0u);
  EXPECT_EQ(grow_pipe_buffer(-1), 0u);
}

}  // namespace
}  // namespace mp
