// DBNet training targets (Liao et al. 2020, section 3.3): shrink map and
// mask, threshold map and mask, built per polygon inside its bounding box.
//
// Polygons are packed: xy holds every point interleaved (x0, y0, x1, y1, ...),
// polygon i owns points offsets[i] .. offsets[i+1]-1. The caller allocates
// the four (height, width) float32 maps; make_targets initialises them
// (0, 1, thresh_min, 0) and never writes outside them.
#pragma once
#include <cstddef>
#include <cstdint>

namespace dbdetect {

struct TargetParams {
  double shrink_ratio = 0.4;
  double thresh_min = 0.3;
  double thresh_max = 0.7;
  double min_text_size = 8.0;
};

struct TargetJob {
  const double* xy;
  const int64_t* offsets;      // n_polys + 1 entries
  const uint8_t* ignore;       // n_polys entries, nonzero = don't care
  std::size_t n_polys;
  int64_t height;
  int64_t width;
  float* shrink_map;
  float* shrink_mask;
  float* thresh_map;
  float* thresh_mask;
};

// Throws std::invalid_argument for non-positive sizes, bad offsets, fewer
// than 3 points, NaN/inf coordinates or out-of-range parameters.
void make_targets(const TargetJob& job, const TargetParams& params);

// Runs the jobs on `threads` std::threads (<= 0: hardware concurrency).
// Every job is attempted; the first failure (in job order) is rethrown.
void make_targets_batch(const TargetJob* jobs, std::size_t n_jobs,
                        const TargetParams& params, int threads);

}  // namespace dbdetect
