#include "normalize.hpp"

#include <cstdint>
#include <stdexcept>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

// One row: its source pixels and its destination in each output plane.
struct Row {
  const std::uint8_t* src;
  float* dst[3];
};

inline void pixel(const NormalizeJob& job, const Row& r, std::int64_t x) {
  for (int c = 0; c < 3; ++c) r.dst[c][x] = job.lut[256 * c + r.src[3 * x + job.src_channel[c]]];
}

void row_scalar(const NormalizeJob& job, const Row& r, std::int64_t x) {
  for (; x < job.width; ++x) pixel(job, r, x);
}

#if defined(__SSE2__)
// Four pixels per non-temporal store into each plane, once the destinations are
// 16-byte aligned; the planes share an alignment when the plane size is a multiple of 4.
void row_streamed(const NormalizeJob& job, const Row& r) {
  std::int64_t x = 0;
  const std::int64_t w = job.width;
  for (; x < w && (reinterpret_cast<std::uintptr_t>(r.dst[0] + x) & 15u); ++x) pixel(job, r, x);
  const float *l0 = job.lut, *l1 = job.lut + 256, *l2 = job.lut + 512;
  const int k0 = job.src_channel[0], k1 = job.src_channel[1], k2 = job.src_channel[2];
  for (; x + 4 <= w; x += 4) {
    const std::uint8_t* p = r.src + 3 * x;
    _mm_stream_ps(r.dst[0] + x, _mm_setr_ps(l0[p[k0]], l0[p[k0 + 3]], l0[p[k0 + 6]], l0[p[k0 + 9]]));
    _mm_stream_ps(r.dst[1] + x, _mm_setr_ps(l1[p[k1]], l1[p[k1 + 3]], l1[p[k1 + 6]], l1[p[k1 + 9]]));
    _mm_stream_ps(r.dst[2] + x, _mm_setr_ps(l2[p[k2]], l2[p[k2 + 3]], l2[p[k2 + 6]], l2[p[k2 + 9]]));
  }
  row_scalar(job, r, x);
}
#endif

}  // namespace

void normalize_u8(const NormalizeJob& job) {
  check_job(job);
  const std::int64_t w = job.width;
  const std::size_t plane = static_cast<std::size_t>(job.height * w);
  // A large output leaves the cache before the network reads it anyway; writing
  // it around the cache skips reading every destination line first (measured
  // about 1 ms less on a 736 x 1312 input right after a forward pass, network no slower).
  const bool stream = plane * 3 * sizeof(float) >= kStreamBytes && plane % 4 == 0;
  for (std::int64_t y = 0; y < job.height; ++y) {
    float* d = job.dst + static_cast<std::size_t>(y * w);
    const Row r{job.src + y * job.row_stride, {d, d + plane, d + 2 * plane}};
#if defined(__SSE2__)
    if (stream) {
      row_streamed(job, r);
      continue;
    }
#endif
    row_scalar(job, r, 0);
  }
#if defined(__SSE2__)
  if (stream) _mm_sfence();  // streamed stores are weakly ordered: publish them before returning
#endif
}

}  // namespace dbdetect
