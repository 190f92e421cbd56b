#include "contours.hpp"

#include <cmath>
#include <cstring>
#include <stdexcept>

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

// Branch-free so that the compiler vectorises it; returns whether a NaN was seen.
bool threshold_row(const float* __restrict src, int8_t* __restrict dst, int w, float thresh) {
  int nan = 0;
  for (int x = 0; x < w; ++x) {
    const float v = src[x];
    dst[x] = static_cast<int8_t>(v > thresh);
    nan |= static_cast<int>(v != v);
  }
  return nan != 0;
}

}  // namespace

void make_padded_threshold(const float* prob, int h, int w, float thresh,
                           bool dilate, PaddedMap& out) {
  if (h < 0 || w < 0) throw std::invalid_argument("map size must be non-negative");
  out.h = h;
  out.w = w;
  const std::size_t stride = static_cast<std::size_t>(w) + 2;
  const std::size_t total = stride * (static_cast<std::size_t>(h) + 2);
  if (out.data.size() != total) out.data.resize(total);
  int8_t* d = out.data.data();
  std::memset(d, 0, stride);
  std::memset(d + (static_cast<std::size_t>(h) + 1) * stride, 0, stride);
  bool nan = false;
  for (int y = 0; y < h; ++y) {
    int8_t* row = d + (y + 1) * stride;
    row[0] = 0;
    row[w + 1] = 0;
    nan |= threshold_row(prob + static_cast<std::size_t>(y) * w, row + 1, w, thresh);
  }
  if (nan) throw std::invalid_argument("probability map contains NaN");
  if (dilate) {
    // In place, bottom-right to top-left, so each pixel reads undilated
    // up/left neighbours. Padding is zero, so borders need no special case.
    for (int y = h; y >= 1; --y) {
      int8_t* row = out.data.data() + y * stride;
      const int8_t* up = row - stride;
      for (int x = w; x >= 1; --x) {
        row[x] = static_cast<int8_t>(row[x] | row[x - 1] | up[x] | up[x - 1]);
      }
    }
  }
}

void trace_contours(PaddedMap& map, ContourList& out) {
  out.clear();
  const int h = map.h, w = map.w;
  if (h <= 0 || w <= 0) return;
  const std::ptrdiff_t stride = map.stride();
  int8_t* img = map.data.data();
  ContourList found;
  for (int y = 1; y <= h; ++y) {
    int8_t* row = img + y * stride;
    int8_t prev = 0;
    int x = 1;
    while (x <= w) {
      // Skip runs equal to prev quickly (most of a map is background).
      if (row[x] == prev) {
        uint64_t pattern;
        std::memset(&pattern, static_cast<uint8_t>(prev), sizeof pattern);
        while (x + 8 <= w + 1) {
          uint64_t word;
          std::memcpy(&word, row + x, sizeof word);
          if (word != pattern) break;
          x += 8;
        }
        while (x <= w && row[x] == prev) ++x;
        if (x > w) break;
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
