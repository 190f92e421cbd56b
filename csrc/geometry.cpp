#include "geometry.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

namespace dbdetect {

double polygon_signed_area(const double* xy, std::size_t n) {
  if (n < 3) return 0.0;
  // Shifting by the first point keeps precision for polygons far from the origin.
  const double x0 = xy[0], y0 = xy[1];
  double acc = 0.0;
  for (std::size_t i = 1; i + 1 < n; ++i) {
    const double ax = xy[2 * i] - x0, ay = xy[2 * i + 1] - y0;
    const double bx = xy[2 * i + 2] - x0, by = xy[2 * i + 3] - y0;
    acc += ax * by - bx * ay;
  }
  return 0.5 * acc;
}

double polygon_perimeter(const double* xy, std::size_t n) {
  if (n < 2) return 0.0;
  double acc = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t j = (i + 1) % n;
    acc += std::hypot(xy[2 * j] - xy[2 * i], xy[2 * j + 1] - xy[2 * i + 1]);
  }
  return acc;
}

double point_segment_distance(double px, double py, double ax, double ay,
                              double bx, double by) {
  const double dx = bx - ax, dy = by - ay;
  const double len2 = dx * dx + dy * dy;
  double t = 0.0;
  if (len2 > 0.0) {
    t = ((px - ax) * dx + (py - ay) * dy) / len2;
    t = t < 0.0 ? 0.0 : (t > 1.0 ? 1.0 : t);
  }
  return std::hypot(px - (ax + t * dx), py - (ay + t * dy));
}

void check_finite(const double* xy, std::size_t n, const char* what) {
  for (std::size_t i = 0; i < 2 * n; ++i) {
    if (!std::isfinite(xy[i])) {
      throw std::invalid_argument(std::string(what) +
                                  " has a NaN or infinite coordinate at point " +
                                  std::to_string(i / 2));
    }
  }
}

}  // namespace dbdetect
