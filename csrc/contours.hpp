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
  int stride() const { return w + 2; }
};

// bitmap = prob > thresh (optionally dilated with a 2x2 kernel anchored like
// cv2.dilate's default, i.e. max over the pixel and its up/left neighbours).
// Throws std::invalid_argument if prob holds a NaN.
void make_padded_threshold(const float* prob, int h, int w, float thresh,
                           bool dilate, PaddedMap& out);

// Traces every border; the map is marked in place (Suzuki's labels).
// Contours come out in cv2's RETR_LIST order (reverse discovery order).
// Only the last max_contours in that order are needed by the caller, but
// all must be traced to know which ones they are.
void trace_contours(PaddedMap& map, ContourList& out);

}  // namespace dbdetect
