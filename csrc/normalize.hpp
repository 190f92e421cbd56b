// Network input from a decoded image: uint8 interleaved pixels -> float32
// channel planes, each value read from a per-channel look-up table.
#pragma once
#include <cstddef>
#include <cstdint>

namespace dbdetect {

struct NormalizeJob {
  const std::uint8_t* src;     // (height, width, 3) pixels, channels adjacent
  std::ptrdiff_t row_stride;   // bytes from one source row to the next
  std::int64_t height;
  std::int64_t width;
  const float* lut;            // (3, 256): output plane c maps level v to lut[c * 256 + v]
  int src_channel[3];          // source channel feeding output plane c
  float* dst;                  // (3, height, width), contiguous
};

// Outputs at least this large (and with a plane size that is a multiple of 4, as
// every network input is) are written with non-temporal stores on x86-64: more
// than a core's L2 here.
constexpr std::size_t kStreamBytes = std::size_t{4} << 20;

// Fills job.dst in one pass over the source, on the calling thread: memory-bound,
// and it runs right after a forward pass or beside one (the streaming pipeline),
// where a second thread measured no faster.
// Throws std::invalid_argument on null buffers, bad sizes or channels.
void normalize_u8(const NormalizeJob& job);

}  // namespace dbdetect
