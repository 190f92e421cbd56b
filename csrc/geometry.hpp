// Plain polygon geometry shared by label generation and post-processing.
// Points are interleaved (x0, y0, x1, y1, ...); n is the number of points.
#pragma once
#include <cstddef>

namespace dbdetect {

// Signed shoelace area (positive when the points run counter-clockwise in
// a y-up frame, i.e. clockwise on screen).
double polygon_signed_area(const double* xy, std::size_t n);

// Length of the closed outline.
double polygon_perimeter(const double* xy, std::size_t n);

// Euclidean distance from (px, py) to the segment (ax, ay)-(bx, by).
double point_segment_distance(double px, double py, double ax, double ay,
                              double bx, double by);

// Throws std::invalid_argument unless every coordinate is finite.
void check_finite(const double* xy, std::size_t n, const char* what);

}  // namespace dbdetect
