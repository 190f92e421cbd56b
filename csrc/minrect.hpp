// Convex hull and minimum-area rectangle with cv2.minAreaRect / cv2.boxPoints
// numerics. The reference truncates box corners to integers (pyclipper) and
// rounds scaled corners, so a corner that cv2 computes as 344.99997 must come
// out the same here: the rotating calipers run in float32 with the same
// operation order and hull orientation as OpenCV, not in double.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dbdetect {

struct RotRect {
  float cx = 0, cy = 0, width = 0, height = 0, angle_deg = 0;
};

// Convex hull of integer points (interleaved xy), without collinear points,
// ordered like cv2.convexHull(clockwise=True): starts at the smallest (x, y)
// and walks the side of larger y first. Writes hull indices... as points.
void convex_hull_i32(const int32_t* xy, std::size_t n, std::vector<int32_t>& hull,
                     std::vector<int64_t>& scratch);

// cv2.minAreaRect on integer points (any order; the hull is taken inside).
RotRect min_area_rect_i32(const int32_t* xy, std::size_t n, std::vector<int32_t>& hull,
                          std::vector<int64_t>& scratch);

// cv2.boxPoints followed by PaddleOCR's get_mini_boxes ordering: writes
// 8 floats (top-left, top-right, bottom-right, bottom-left) and returns the
// short side min(width, height).
float mini_box(const RotRect& r, float out[8]);

}  // namespace dbdetect
