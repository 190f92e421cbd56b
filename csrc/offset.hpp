// Polygon offsetting with round joins ("unclip"), numerically following
// Clipper 1 / pyclipper's ClipperOffset on integer coordinates (arc tolerance
// 0.25, half-away-from-zero rounding), followed by a union with the positive
// fill rule written here from scratch (see offset.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dbdetect {

// Raw offset path of a closed integer polygon by delta > 0 with round joins:
// duplicate points are stripped, orientation is made positive as Clipper
// does, and every output point is rounded to integers. Returns false (and an
// empty path) when fewer than 3 distinct points remain.
bool offset_round_raw(const int64_t* xy, std::size_t n, double delta,
                      std::vector<int64_t>& out);

// Union (positive fill rule) of one closed, possibly self-intersecting path:
// returns its boundary loops (outer loops and holes) as polygons with
// collinear points removed. loops[i] holds interleaved xy in doubles.
void union_positive(const std::vector<int64_t>& path,
                    std::vector<std::vector<double>>& loops);

}  // namespace dbdetect
