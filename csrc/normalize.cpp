#include "normalize.hpp"

#include <stdexcept>

namespace dbdetect {

namespace {

void check_job(const NormalizeJob& job) {
  if (job.height < 0 || job.width < 0) throw std::invalid_argument("image size must not be negative");
  if (job.height == 0 || job.width == 0) return;
  if (!job.src || !job.dst || !job.lut) throw std::invalid_argument("buffers must not be null");
  if (job.row_stride < 3 * job.width) throw std::invalid_argument("row stride is shorter than a row of pixels");
  for (int c = 0; c < 3; ++c)
    if (job.src_channel[c] < 0 || job.src_channel[c] > 2)
      throw std::invalid_argument("source channels must be 0, 1 or 2");
}

}  // namespace

void normalize_u8(const NormalizeJob& job) {
  check_job(job);
  const std::int64_t w = job.width;
  const std::size_t plane = static_cast<std::size_t>(job.height * w);
  const float* l0 = job.lut;
  const float* l1 = job.lut + 256;
  const float* l2 = job.lut + 512;
  const int c0 = job.src_channel[0], c1 = job.src_channel[1], c2 = job.src_channel[2];
  for (std::int64_t y = 0; y < job.height; ++y) {
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

}  // namespace dbdetect
