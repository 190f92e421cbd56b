// DBNet post-processing: probability map -> scored text boxes or polygons,
// with PaddleOCR DBPostProcess semantics, in one native call.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dbdetect {

struct PostprocessParams {
  float thresh = 0.3f;
  float box_thresh = 0.6f;
  double unclip_ratio = 1.5;
  long max_candidates = 1000;
  int min_size = 3;
  bool poly = false;        // box_type "poly" instead of "quad"
  bool slow_score = false;  // score_mode "slow": mean inside the contour
  bool dilate = false;      // 2x2 dilation of the bitmap
  int row_skip = 0;         // 0: rows_needed(*this); 1: threshold every row
};

// Polygon i owns points [offsets[i], offsets[i+1]) of xy (interleaved x, y),
// in destination-image pixels.
struct PostprocessResult {
  std::vector<float> xy;
  std::vector<int64_t> offsets{0};
  std::vector<float> scores;
  void clear() {
    xy.clear();
    offsets.assign(1, 0);
    scores.clear();
  }
};

// Regions of the bitmap spanning fewer rows than this cannot yield a box
// under these parameters (see the bound in postprocess.cpp); 1 = none.
int rows_needed(const PostprocessParams& p);

// prob: row-major float32 (h, w). dest_h/dest_w: original image size (> 0).
// Throws std::invalid_argument on bad sizes/parameters or a NaN inside a
// scored box (a NaN pixel is background to the thresholding).
void boxes_from_prob(const float* prob, int h, int w, int dest_h, int dest_w,
                     const PostprocessParams& params, PostprocessResult& out);

// Mean of prob over the cv2.fillPoly mask of an integer polygon, restricted
// to the polygon's bounding box clipped to the map (PaddleOCR's box score).
// xy holds n integer points (already shifted into the clipped box frame
// relative to (x0, y0)); exposed for tests.
double polygon_mean(const float* prob, int h, int w, const int32_t* xy, std::size_t n,
                    int x0, int y0, int x1, int y1, std::vector<uint8_t>& mask);

// cv2.fillPoly(mask, [xy], 1) on a zeroed (mh, mw) mask; exposed for tests.
void fill_poly_mask(const int32_t* xy, std::size_t n, int mh, int mw, uint8_t* mask);

// Douglas-Peucker approximation of a closed integer contour in the manner of
// cv2.approxPolyDP(closed=True).
void approx_poly_closed(const int32_t* xy, std::size_t n, double eps,
                        std::vector<int32_t>& out);

}  // namespace dbdetect
