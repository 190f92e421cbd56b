#include "normalize.hpp"

#include <algorithm>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

namespace dbdetect {

namespace {

// Below this many pixels a second thread costs more to start than it saves.
constexpr std::int64_t kPixelsPerThread = 1 << 17;

void check_job(const NormalizeJob& job) {
  if (job.height < 0 || job.width < 0) throw std::invalid_argument("image size must not be negative");
  if (job.height == 0 || job.width == 0) return;
  if (!job.src || !job.dst || !job.lut) throw std::invalid_argument("buffers must not be null");
  if (job.row_stride < 3 * job.width) throw std::invalid_argument("row stride is shorter than a row of pixels");
  for (int c = 0; c < 3; ++c)
    if (job.src_channel[c] < 0 || job.src_channel[c] > 2)
      throw std::invalid_argument("source channels must be 0, 1 or 2");
}

void rows(const NormalizeJob& job, std::int64_t y0, std::int64_t y1) {
  const std::int64_t w = job.width;
  const std::size_t plane = static_cast<std::size_t>(job.height * w);
  const float* l0 = job.lut;
  const float* l1 = job.lut + 256;
  const float* l2 = job.lut + 512;
  const int c0 = job.src_channel[0], c1 = job.src_channel[1], c2 = job.src_channel[2];
  for (std::int64_t y = y0; y < y1; ++y) {
    const std::uint8_t* s = job.src + y * job.row_stride;
    float* d0 = job.dst + static_cast<std::size_t>(y * w);
    float* d1 = d0 + plane;
    float* d2 = d1 + plane;
    for (std::int64_t x = 0; x < w; ++x, s += 3) {
      d0[x] = l0[s[c0]];
      d1[x] = l1[s[c1]];
      d2[x] = l2[s[c2]];
    }
  }
}

}  // namespace

void normalize_u8(const NormalizeJob& job, int threads) {
  check_job(job);
  if (job.height == 0 || job.width == 0) return;
  std::int64_t nt = threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
  nt = std::max<std::int64_t>(1, std::min({nt, job.height, job.height * job.width / kPixelsPerThread}));
  const std::int64_t band = (job.height + nt - 1) / nt;
  std::vector<std::thread> pool;
  std::int64_t y = band;
  // The calling thread takes the first band; a thread that cannot start
  // (e.g. a process limit) leaves its band to the caller.
  for (; y < job.height; y += band) {
    try {
      pool.emplace_back(rows, std::cref(job), y, std::min(job.height, y + band));
    } catch (const std::system_error&) {
      break;
    }
  }
  rows(job, 0, std::min(job.height, band));
  if (y < job.height) rows(job, y, job.height);
  for (auto& t : pool) t.join();
}

}  // namespace dbdetect
