// Border following (Suzuki & Abe 1985) on a binary map, producing the same
// contours, point order and list order as cv2.findContours(RETR_LIST,
// CHAIN_APPROX_SIMPLE), so that everything computed from a contour downstream
// (min-area rectangle, polygon approximation, fill masks) matches the
// PaddleOCR reference. Outer borders and hole borders are both returned:
// the reference scores hole contours as candidates too.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dbdetect {

// Contour i owns points [start[i], start[i+1]) of xy (interleaved x, y).
struct ContourList {
  std::vector<int32_t> xy;
  std::vector<std::size_t> start{0};
  std::size_t size() const { return start.size() - 1; }
  void clear() {
    xy.clear();
    start.assign(1, 0);
  }
};

// Work buffer reused between calls: a (h+2) x (w+2) int8 map with a zero
// border, 1 for foreground. Fill it with make_padded_* before tracing.
struct PaddedMap {
  std::vector<int8_t> data;
  int h = 0, w = 0;  // size of the unpadded map
  // Per padded row, the padded columns [lo, hi] holding every foreground
  // pixel (lo > hi: none), so the raster scan skips the empty parts. Empty
  // vectors mean "unknown": scan whole rows.
  std::vector<int> lo, hi;
  int stride() const { return w + 2; }
};

// bitmap = prob > thresh (optionally dilated with a 2x2 kernel anchored like
// cv2.dilate's default, i.e. max over the pixel and its up/left neighbours).
// NaN compares false, so a NaN pixel is background.
//
// skip_below = k > 1 allows leaving out connected regions that span fewer
// than k rows: only every k-th row is thresholded first, then the rows within
// k-1 of a row that holds foreground. Every region is then either complete or
// absent (and absent ones span < k rows), and rows that were not computed
// read as background wherever the tracer looks. Most of a text map is
// background, so this reads a fraction of it. k <= 1: the whole map.
void make_padded_threshold(const float* prob, int h, int w, float thresh,
                           bool dilate, PaddedMap& out, int skip_below = 1);

// Traces every border; the map is marked in place (Suzuki's labels).
// Contours come out in cv2's RETR_LIST order (reverse discovery order).
// Only the last max_contours in that order are needed by the caller, but
// all must be traced to know which ones they are.
void trace_contours(PaddedMap& map, ContourList& out);

}  // namespace dbdetect
