#include "contours.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
// AVX2 versions of the two full-row loops, chosen at run time: the wheel is
// built for baseline x86-64, and these loops bound the speed on sparse maps.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DBDETECT_AVX2 1
#include <immintrin.h>
#endif

namespace dbdetect {

namespace {

// Chain code directions 0..7: right, up-right, up, up-left, left, down-left,
// down, down-right (y grows downwards), counter-clockwise on screen.
const int kDx[8] = {1, 1, 0, -1, -1, -1, 0, 1};
const int kDy[8] = {0, -1, -1, -1, 0, 1, 1, 1};

// Pixel labels during tracing (RETR_LIST needs no per-contour numbers):
// 1 = unvisited foreground, 2 = visited border pixel, kRight = visited border
// pixel whose right neighbour is background (Suzuki's negative label).
const int8_t kVisited = 2;
const int8_t kRight = static_cast<int8_t>(0x82);

void trace_one(int8_t* img, std::ptrdiff_t stride, int sx, int sy, bool is_hole,
               ContourList& out) {
  std::ptrdiff_t delta[8];
  for (int d = 0; d < 8; ++d) delta[d] = kDx[d] + kDy[d] * stride;
  int8_t* const i0 = img + sy * stride + sx;
  int px = sx - 1, py = sy - 1;  // output coordinates drop the padding

  // Find the predecessor pixel: search clockwise from the background side.
  const int s_stop = is_hole ? 0 : 4;
  int s = s_stop;
  int8_t* i1;
  do {
    s = (s - 1) & 7;
    i1 = i0 + delta[s];
  } while (*i1 == 0 && s != s_stop);

  if (s == s_stop) {  // isolated pixel
    *i0 = kRight;
    out.xy.push_back(px);
    out.xy.push_back(py);
    out.start.push_back(out.xy.size() / 2);
    return;
  }
  int8_t* i3 = i0;
  int8_t* i4 = nullptr;
  int prev_s = s ^ 4;
  for (;;) {
    const int s_from = s;
    // Counter-clockwise search for the next border pixel; at most one turn.
    int t = s;
    while (t < 15) {
      ++t;
      i4 = i3 + delta[t & 7];
      if (*i4 != 0) break;
    }
    s = t & 7;
    // The right neighbour was examined (and is background) iff the search
    // wrapped past direction 0.
    if (static_cast<unsigned>(s - 1) < static_cast<unsigned>(s_from)) {
      *i3 = kRight;
    } else if (*i3 == 1) {
      *i3 = kVisited;
    }
    if (s != prev_s) {  // CHAIN_APPROX_SIMPLE: keep only direction changes
      out.xy.push_back(px);
      out.xy.push_back(py);
    }
    prev_s = s;
    px += kDx[s];
    py += kDy[s];
    if (i4 == i0 && i3 == i1) break;
    i3 = i4;
    s = (s + 4) & 7;
  }
  out.start.push_back(out.xy.size() / 2);
}

}  // namespace

namespace {

inline int first_bit(unsigned m) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_ctz(m);
#else
  int i = 0;
  while (!(m & 1u)) m >>= 1, ++i;
  return i;
#endif
}

inline int last_bit(unsigned m) {
#if defined(__GNUC__) || defined(__clang__)
  return 31 - __builtin_clz(m);
#else
  int i = -1;
  while (m) m >>= 1, ++i;
  return i;
#endif
}

// dst[x] = src[x] > thresh as 0/1 for one row (NaN: 0); [lo, hi] = columns
// of the foreground (lo > hi if none). With row_any_above, this bounds the
// speed on sparse maps: 16 pixels a step with no branch in the common case.
void threshold_row_base(const float* __restrict src, int8_t* __restrict dst, int w, float thresh,
                        int& lo, int& hi) {
  int x = 0;
  lo = w;
  hi = -1;
#if defined(__SSE2__)
  const __m128 t = _mm_set1_ps(thresh);
  const __m128i one = _mm_set1_epi8(1);
  for (; x + 16 <= w; x += 16) {
    const __m128i ab = _mm_packs_epi32(_mm_castps_si128(_mm_cmpgt_ps(_mm_loadu_ps(src + x), t)),
                                       _mm_castps_si128(_mm_cmpgt_ps(_mm_loadu_ps(src + x + 4), t)));
    const __m128i cd = _mm_packs_epi32(_mm_castps_si128(_mm_cmpgt_ps(_mm_loadu_ps(src + x + 8), t)),
                                       _mm_castps_si128(_mm_cmpgt_ps(_mm_loadu_ps(src + x + 12), t)));
    const __m128i m8 = _mm_packs_epi16(ab, cd);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + x), _mm_and_si128(m8, one));
    const unsigned bits = static_cast<unsigned>(_mm_movemask_epi8(m8));
    if (bits) {
      if (lo == w) lo = x + first_bit(bits);
      hi = x + last_bit(bits);
    }
  }
#endif
  for (; x < w; ++x) {
    const bool on = src[x] > thresh;
    dst[x] = static_cast<int8_t>(on);
    if (on) {
      if (lo == w) lo = x;
      hi = x;
    }
  }
}

// Whether any pixel of the row exceeds thresh (NaN does not): a max
// reduction, about half the work of thresholding, for the sampled rows,
// which are mostly background.
bool row_any_above_base(const float* __restrict src, int w, float thresh) {
  int x = 0;
#if defined(__SSE2__)
  const __m128 t = _mm_set1_ps(thresh);
  __m128 m0 = t, m1 = t, m2 = t, m3 = t;
  for (; x + 16 <= w; x += 16) {
    // max(x, acc) returns acc when x is NaN
    m0 = _mm_max_ps(_mm_loadu_ps(src + x), m0);
    m1 = _mm_max_ps(_mm_loadu_ps(src + x + 4), m1);
    m2 = _mm_max_ps(_mm_loadu_ps(src + x + 8), m2);
    m3 = _mm_max_ps(_mm_loadu_ps(src + x + 12), m3);
  }
  const __m128 m = _mm_max_ps(_mm_max_ps(m0, m1), _mm_max_ps(m2, m3));
  if (_mm_movemask_ps(_mm_cmpgt_ps(m, t))) return true;
#endif
  for (; x < w; ++x) {
    if (src[x] > thresh) return true;
  }
  return false;
}

#if DBDETECT_AVX2
__attribute__((target("avx2"))) void threshold_row_avx2(const float* __restrict src,
                                                        int8_t* __restrict dst, int w,
                                                        float thresh, int& lo, int& hi) {
  lo = w;
  hi = -1;
  const __m256 t = _mm256_set1_ps(thresh);
  const __m256i one = _mm256_set1_epi8(1);
  // packs work within 128-bit lanes; this puts the 32 bytes back in order
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int x = 0;
  for (; x + 32 <= w; x += 32) {
    const __m256i a = _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(src + x), t, _CMP_GT_OQ));
    const __m256i b = _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(src + x + 8), t, _CMP_GT_OQ));
    const __m256i c = _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(src + x + 16), t, _CMP_GT_OQ));
    const __m256i d = _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(src + x + 24), t, _CMP_GT_OQ));
    const __m256i m8 = _mm256_permutevar8x32_epi32(
        _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d)), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + x), _mm256_and_si256(m8, one));
    const unsigned bits = static_cast<unsigned>(_mm256_movemask_epi8(m8));
    if (bits) {
      if (lo == w) lo = x + first_bit(bits);
      hi = x + last_bit(bits);
    }
  }
  int tlo, thi;
  if (x < w) {
    threshold_row_base(src + x, dst + x, w - x, thresh, tlo, thi);
    if (tlo <= thi) {
      if (lo == w) lo = x + tlo;
      hi = x + thi;
    }
  }
}

__attribute__((target("avx2"))) bool row_any_above_avx2(const float* __restrict src, int w,
                                                        float thresh) {
  const __m256 t = _mm256_set1_ps(thresh);
  __m256 m0 = t, m1 = t, m2 = t, m3 = t;
  int x = 0;
  for (; x + 32 <= w; x += 32) {
    m0 = _mm256_max_ps(_mm256_loadu_ps(src + x), m0);
    m1 = _mm256_max_ps(_mm256_loadu_ps(src + x + 8), m1);
    m2 = _mm256_max_ps(_mm256_loadu_ps(src + x + 16), m2);
    m3 = _mm256_max_ps(_mm256_loadu_ps(src + x + 24), m3);
  }
  const __m256 m = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
  if (_mm256_movemask_ps(_mm256_cmp_ps(m, t, _CMP_GT_OQ))) return true;
  return x < w && row_any_above_base(src + x, w - x, thresh);
}

const bool kHasAvx2 = __builtin_cpu_supports("avx2");
#endif

void threshold_row(const float* src, int8_t* dst, int w, float thresh, int& lo, int& hi) {
#if DBDETECT_AVX2
  if (kHasAvx2) return threshold_row_avx2(src, dst, w, thresh, lo, hi);
#endif
  threshold_row_base(src, dst, w, thresh, lo, hi);
}

bool row_any_above(const float* src, int w, float thresh) {
#if DBDETECT_AVX2
  if (kHasAvx2) return row_any_above_avx2(src, w, thresh);
#endif
  return row_any_above_base(src, w, thresh);
}

}  // namespace

void make_padded_threshold(const float* prob, int h, int w, float thresh,
                           bool dilate, PaddedMap& out, int skip_below) {
  if (h < 0 || w < 0) throw std::invalid_argument("map size must be non-negative");
  out.h = h;
  out.w = w;
  const std::size_t stride = static_cast<std::size_t>(w) + 2;
  const std::size_t total = stride * (static_cast<std::size_t>(h) + 2);
  // The buffer may hold an earlier map: every row read below is rewritten.
  if (out.data.size() != total) out.data.resize(total);
  out.lo.assign(static_cast<std::size_t>(h) + 2, 1);
  out.hi.assign(static_cast<std::size_t>(h) + 2, 0);
  int8_t* d = out.data.data();
  std::memset(d, 0, stride);
  std::memset(d + (static_cast<std::size_t>(h) + 1) * stride, 0, stride);
  if (h == 0 || w == 0) return;

  // Row y of the map is padded row y + 1. have[y]: 1 = thresholded (raw, not
  // yet dilated) into the buffer, 2 = known empty but not written; need[y]:
  // its final value is wanted.
  const int k = std::max(skip_below, 1);
  std::vector<uint8_t> have(h, 0), need(h, k == 1 ? 1 : 0);
  std::vector<int> rlo(h, w), rhi(h, -1);  // raw foreground columns per row
  auto raw = [&](int y) {
    if (y < 0 || y >= h || have[y] == 1) return;
    int8_t* row = d + (y + 1) * stride;
    if (have[y] == 2) {
      std::memset(row, 0, stride);
    } else {
      row[0] = 0;
      row[w + 1] = 0;
      threshold_row(prob + static_cast<std::size_t>(y) * w, row + 1, w, thresh, rlo[y], rhi[y]);
    }
    have[y] = 1;
  };
  auto probe = [&](int y) {  // does raw row y have foreground?
    if (y < 0) return false;
    if (!have[y]) {
      if (row_any_above(prob + static_cast<std::size_t>(y) * w, w, thresh)) {
        raw(y);
      } else {
        have[y] = 2;
      }
    }
    return rlo[y] <= rhi[y];
  };
  if (k > 1) {
    // A region spanning >= k rows contains one of these rows; the final
    // (dilated) row y has foreground iff raw row y, or y - 1 when dilating, has.
    for (int s = k - 1; s < h; s += k) {
      const bool fg = probe(s) | (dilate && probe(s - 1));
      if (!fg) continue;
      for (int y = std::max(s - k + 1, 0); y <= std::min(s + k - 1, h - 1); ++y) need[y] = 1;
    }
    // Rows past the last sampled one belong to it (they are within k - 1).
  }
  for (int y = 0; y < h; ++y) {
    if (!need[y]) continue;
    raw(y);
    if (dilate) raw(y - 1);
  }
  // Rows the tracer may look at (next to a needed row) that hold nothing
  // valid: background. A raw row there is fine (raw is a subset of dilated,
  // and any foreground next to a traced region belongs to it, so is needed).
  for (int y = 0; y < h; ++y) {
    if (have[y] == 1 || !((y > 0 && need[y - 1]) || (y + 1 < h && need[y + 1]))) continue;
    std::memset(d + (y + 1) * stride, 0, stride);
  }
  if (!dilate) {
    for (int y = 0; y < h; ++y) {
      if (need[y]) out.lo[y + 1] = rlo[y] + 1, out.hi[y + 1] = rhi[y] + 1;
    }
    return;
  }
  // 2x2 max anchored like cv2.dilate's default: a pixel takes its own, left,
  // upper and upper-left values. Bottom-up, so each row reads the raw row
  // above; only the columns near foreground change.
  std::vector<int8_t> tmp(stride);
  for (int y = h - 1; y >= 0; --y) {
    if (!need[y]) continue;
    int lo = rlo[y], hi = rhi[y];
    if (y > 0) lo = std::min(lo, rlo[y - 1]), hi = std::max(hi, rhi[y - 1]);
    if (lo > hi) continue;
    hi = std::min(hi + 1, w - 1);
    int8_t* __restrict row = d + (y + 1) * stride;  // padded: column x + 1
    const int8_t* __restrict up = row - stride;
    int8_t* __restrict t = tmp.data();
    for (int x = lo + 1; x <= hi + 1; ++x) t[x] = static_cast<int8_t>(row[x] | row[x - 1] | up[x] | up[x - 1]);
    std::memcpy(row + lo + 1, t + lo + 1, static_cast<std::size_t>(hi - lo + 1));
    out.lo[y + 1] = lo + 1;
    out.hi[y + 1] = hi + 1;
  }
}

void trace_contours(PaddedMap& map, ContourList& out) {
  out.clear();
  const int h = map.h, w = map.w;
  if (h <= 0 || w <= 0) return;
  const std::ptrdiff_t stride = map.stride();
  int8_t* img = map.data.data();
  ContourList found;
  const bool ranged = map.lo.size() == static_cast<std::size_t>(h) + 2 &&
                      map.hi.size() == static_cast<std::size_t>(h) + 2;
  for (int y = 1; y <= h; ++y) {
    int8_t* row = img + y * stride;
    int8_t prev = 0;
    int x = 1, x_end = w;
    if (ranged) {
      // The pixel after the last foreground one closes the last run (a hole
      // border may start there); beyond it the row is all background.
      if (map.lo[y] > map.hi[y]) continue;
      x = std::max(map.lo[y], 1);
      x_end = std::min(map.hi[y] + 1, w);
    }
    while (x <= x_end) {
      // Skip runs equal to prev quickly (most of a map is background).
      if (row[x] == prev) {
        uint64_t pattern;
        std::memset(&pattern, static_cast<uint8_t>(prev), sizeof pattern);
        while (x + 8 <= x_end + 1) {
          uint64_t word;
          std::memcpy(&word, row + x, sizeof word);
          if (word != pattern) break;
          x += 8;
        }
        while (x <= x_end && row[x] == prev) ++x;
        if (x > x_end) break;
      }
      const int8_t p = row[x];
      if (prev == 0 && p == 1) {
        trace_one(img, stride, x, y, false, found);
      } else if (p == 0 && prev >= 1) {
        trace_one(img, stride, x - 1, y, true, found);
      }
      prev = row[x];  // tracing may have relabelled this pixel
      ++x;
    }
  }
  // cv2 returns RETR_LIST contours last-found first.
  const std::size_t n = found.size();
  out.xy.reserve(found.xy.size());
  out.start.reserve(n + 1);
  for (std::size_t i = n; i-- > 0;) {
    out.xy.insert(out.xy.end(), found.xy.begin() + 2 * found.start[i],
                  found.xy.begin() + 2 * found.start[i + 1]);
    out.start.push_back(out.xy.size() / 2);
  }
}

}  // namespace dbdetect
