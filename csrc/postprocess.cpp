#include "postprocess.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "contours.hpp"
#include "minrect.hpp"
#include "offset.hpp"

namespace dbdetect {

namespace {

// cv2.line's 8-connected Bresenham walk (LineIterator, left to right),
// keeping only the pixels inside the mask.
// cv2.clipLine: both ends moved onto the image with truncating integer
// division (the pixels drawn depend on it). Returns false if nothing is left.
bool clip_line(int64_t w, int64_t h, int64_t& x1, int64_t& y1, int64_t& x2, int64_t& y2) {
  const int64_t right = w - 1, bottom = h - 1;
  if (w <= 0 || h <= 0) return false;
  int c1 = (x1 < 0) + (x1 > right) * 2 + (y1 < 0) * 4 + (y1 > bottom) * 8;
  int c2 = (x2 < 0) + (x2 > right) * 2 + (y2 < 0) * 4 + (y2 > bottom) * 8;
  if ((c1 & c2) == 0 && (c1 | c2) != 0) {
    if (c1 & 12) {
      const int64_t a = c1 < 8 ? 0 : bottom;
      x1 += (a - y1) * (x2 - x1) / (y2 - y1);
      y1 = a;
      c1 = (x1 < 0) + (x1 > right) * 2;
    }
    if (c2 & 12) {
      const int64_t a = c2 < 8 ? 0 : bottom;
      x2 += (a - y2) * (x2 - x1) / (y2 - y1);
      y2 = a;
      c2 = (x2 < 0) + (x2 > right) * 2;
    }
    if ((c1 & c2) == 0 && (c1 | c2) != 0) {
      if (c1) {
        const int64_t a = c1 == 1 ? 0 : right;
        y1 += (a - x1) * (y2 - y1) / (x2 - x1);
        x1 = a;
        c1 = 0;
      }
      if (c2) {
        const int64_t a = c2 == 1 ? 0 : right;
        y2 += (a - x2) * (y2 - y1) / (x2 - x1);
        x2 = a;
        c2 = 0;
      }
    }
  }
  return (c1 | c2) == 0;
}

void draw_line(int x0, int y0, int x1, int y1, int mh, int mw, uint8_t* mask) {
  if (x0 < 0 || x0 >= mw || x1 < 0 || x1 >= mw || y0 < 0 || y0 >= mh || y1 < 0 || y1 >= mh) {
    int64_t a = x0, b = y0, c = x1, d = y1;
    if (!clip_line(mw, mh, a, b, c, d)) return;
    x0 = static_cast<int>(a), y0 = static_cast<int>(b), x1 = static_cast<int>(c), y1 = static_cast<int>(d);
  }
  if (x1 < x0) {
    std::swap(x0, x1);
    std::swap(y0, y1);
  }
  const int dx = x1 - x0;
  const int sy = y1 < y0 ? -1 : 1;
  const int ady = (y1 - y0) * sy;
  const bool steep = ady > dx;
  const int dmaj = steep ? ady : dx, dmin = steep ? dx : ady;
  int err = dmaj - 2 * dmin;
  int x = x0, y = y0;
  for (int i = 0; i <= dmaj; ++i) {
    if (x >= 0 && x < mw && y >= 0 && y < mh) mask[static_cast<std::size_t>(y) * mw + x] = 1;
    const bool minor = err < 0;
    err += -2 * dmin + (minor ? 2 * dmaj : 0);
    if (steep) {
      y += sy;
      if (minor) ++x;
    } else {
      ++x;
      if (minor) y += sy;
    }
  }
}

double shoelace_abs(const double* x, const double* y, std::size_t n) {
  double a = 0;
  for (std::size_t i = 0, j = n - 1; i < n; j = i++) a += x[j] * y[i] - x[i] * y[j];
  return std::fabs(0.5 * a);
}

double perimeter(const double* x, const double* y, std::size_t n) {
  double l = 0;
  for (std::size_t i = 0, j = n - 1; i < n; j = i++) l += std::hypot(x[i] - x[j], y[i] - y[j]);
  return l;
}

struct Work {
  PaddedMap map;
  ContourList contours;
  std::vector<int32_t> hull, local, approx, ipts;
  std::vector<int64_t> scratch, path, raw;
  std::vector<uint8_t> mask;
  std::vector<std::vector<double>> loops;
};

// PaddleOCR box_score_fast/slow: the polygon's integer bounding box (floor /
// ceil, clipped to the map), the polygon shifted into it and truncated to
// int32, then the mean of prob under cv2.fillPoly's mask.
double score_polygon(const float* prob, int h, int w, const double* px, const double* py,
                     std::size_t n, Work& wk) {
  double minx = px[0], maxx = px[0], miny = py[0], maxy = py[0];
  for (std::size_t i = 1; i < n; ++i) {
    minx = std::min(minx, px[i]);
    maxx = std::max(maxx, px[i]);
    miny = std::min(miny, py[i]);
    maxy = std::max(maxy, py[i]);
  }
  auto clampi = [](double v, int hi) {
    if (!(v >= 0)) return 0;
    if (v > hi) return hi;
    return static_cast<int>(v);
  };
  const int x0 = clampi(std::floor(minx), w - 1), x1 = clampi(std::ceil(maxx), w - 1);
  const int y0 = clampi(std::floor(miny), h - 1), y1 = clampi(std::ceil(maxy), h - 1);
  wk.local.resize(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    // Truncation toward zero, as numpy's astype(int32).
    wk.local[2 * i] = static_cast<int32_t>(std::max(-1e9, std::min(1e9, px[i] - x0)));
    wk.local[2 * i + 1] = static_cast<int32_t>(std::max(-1e9, std::min(1e9, py[i] - y0)));
  }
  return polygon_mean(prob, h, w, wk.local.data(), n, x0, y0, x1, y1, wk.mask);
}

inline float scale_round_f32(float v, int src, int dst) {
  float s = v / static_cast<float>(src) * static_cast<float>(dst);
  s = std::nearbyint(s);
  if (!(s >= 0)) s = 0;
  if (s > dst) s = static_cast<float>(dst);
  return s;
}

inline double scale_round_f64(double v, int src, int dst) {
  double s = std::nearbyint(v / src * dst);
  if (!(s >= 0)) s = 0;
  if (s > dst) s = dst;
  return s;
}

}  // namespace

int rows_needed(const PostprocessParams& p) {
  // Regions spanning fewer rows than this can never become a box, so the
  // thresholding may skip them. A region whose pixels span E + 1 rows has
  // minimum width <= E, and a minimum-area rectangle's short side is at most
  // sqrt(2) times the minimum width (area s*L <= width*diameter, diameter
  // <= sqrt(2)*L). quad: s >= min_size is required, so E >= min_size/sqrt(2).
  // poly: the unclip distance A*r/L is at most E*r/2 (area <= E*X, perimeter
  // >= 2X) and clipper rounds by <= 1 px, so the expanded polygon's short
  // side is at most sqrt(2)*(E*(1+r) + 1), which must reach min_size + 2.
  // Regions with E < bound are skippable; the margins cover float rounding.
  const double root2 = std::sqrt(2.0);
  const double bound = p.poly ? ((p.min_size + 2 - 0.3) / root2 - 1.0) / (1.0 + p.unclip_ratio)
                              : (p.min_size - 0.05) / root2;
  if (!(bound > 0)) return 1;
  // Skipped regions span at most k - 1 rows: E <= k - 2, the largest integer below bound.
  const double e_max = std::ceil(bound) - 1;
  return static_cast<int>(std::min(e_max + 2, 64.0));
}

void fill_poly_mask(const int32_t* xy, std::size_t n, int mh, int mw, uint8_t* mask) {
  if (n == 0 || mh <= 0 || mw <= 0) return;
  // cv2.fillPoly (OpenCV >= 4): stroke every edge with cv2.line, then fill
  // spans between edges kept in 16.16 fixed point; an edge leaving the mask
  // takes its slope from its clipped (integer) line, as OpenCV >= 4 does.
  constexpr int kShift = 16;
  constexpr int64_t kOne = int64_t(1) << kShift;
  struct Edge {
    int64_t y0, y1, x, dx;
  };
  std::vector<Edge> edges;
  edges.reserve(n);
  for (std::size_t i = 0, j = n - 1; i < n; j = i++) {
    const int x0 = xy[2 * j], y0 = xy[2 * j + 1], x1 = xy[2 * i], y1 = xy[2 * i + 1];
    draw_line(x0, y0, x1, y1, mh, mw, mask);
    // The edge keeps its rows but takes its slope from the clipped line,
    // extrapolated back to the first row.
    int64_t c0x = x0, c0y = y0, c1x = x1, c1y = y1;
    int64_t e0y = y0, e1y = y1;
    if (x0 < 0 || x0 >= mw || x1 < 0 || x1 >= mw || y0 < 0 || y0 >= mh || y1 < 0 || y1 >= mh) {
      clip_line(mw, mh, c0x, c0y, c1x, c1y);
      if (c0y != c1y) e0y = c0y, e1y = c1y;
    }
    if (y0 == y1) continue;
    const int64_t ax = c0x * kOne, bx = c1x * kOne;
    Edge e;
    e.dx = (bx - ax) / (e1y - e0y);
    if (y0 < y1) {
      e.y0 = y0, e.y1 = y1, e.x = ax + (y0 - e0y) * e.dx;
    } else {
      e.y0 = y1, e.y1 = y0, e.x = bx + (y1 - e1y) * e.dx;
    }
    edges.push_back(e);
  }
  if (edges.size() < 2) return;
  std::vector<int64_t> xs;
  for (int y = 0; y < mh; ++y) {
    xs.clear();
    for (const Edge& e : edges) {
      if (y < e.y0 || y >= e.y1) continue;
      xs.push_back(e.x + (y - e.y0) * e.dx);
    }
    std::sort(xs.begin(), xs.end());
    for (std::size_t k = 0; k + 1 < xs.size(); k += 2) {
      int64_t a = (xs[k] + kOne - 1) >> kShift, b = xs[k + 1] >> kShift;
      if (a >= mw || b < 0) continue;
      a = std::max<int64_t>(a, 0);
      b = std::min<int64_t>(b, mw - 1);
      for (int64_t x = a; x <= b; ++x) mask[static_cast<std::size_t>(y) * mw + x] = 1;
    }
  }
}

double polygon_mean(const float* prob, int h, int w, const int32_t* xy, std::size_t n,
                    int x0, int y0, int x1, int y1, std::vector<uint8_t>& mask) {
  if (x0 < 0 || y0 < 0 || x1 >= w || y1 >= h || x1 < x0 || y1 < y0) {
    throw std::out_of_range("polygon_mean: box outside the map");
  }
  const int mw = x1 - x0 + 1, mh = y1 - y0 + 1;
  mask.assign(static_cast<std::size_t>(mw) * mh, 0);
  fill_poly_mask(xy, n, mh, mw, mask.data());
  // Four partial sums: one running double sum is a chain of dependent adds
  // (about 4 cycles a pixel); the mask is zero or a few spans per row.
  double acc[4] = {0, 0, 0, 0};
  std::size_t cnt = 0;
  for (int y = 0; y < mh; ++y) {
    const float* row = prob + static_cast<std::size_t>(y0 + y) * w + x0;
    const uint8_t* m = mask.data() + static_cast<std::size_t>(y) * mw;
    int x = 0;
    while (x < mw) {
      while (x < mw && !m[x]) ++x;
      const int a = x;
      while (x < mw && m[x]) ++x;
      int i = a;
      for (; i + 4 <= x; i += 4) {
        acc[0] += row[i];
        acc[1] += row[i + 1];
        acc[2] += row[i + 2];
        acc[3] += row[i + 3];
      }
      for (; i < x; ++i) acc[0] += row[i];
      cnt += static_cast<std::size_t>(x - a);
    }
  }
  const double sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  if (sum != sum) throw std::invalid_argument("probability map contains NaN inside a candidate box");
  return cnt ? sum / static_cast<double>(cnt) : 0.0;
}

void approx_poly_closed(const int32_t* xy, std::size_t n, double eps,
                        std::vector<int32_t>& out) {
  out.clear();
  if (n == 0) return;
  const double eps2 = eps * eps;
  auto X = [&](std::size_t i) { return static_cast<double>(xy[2 * (i % n)]); };
  auto Y = [&](std::size_t i) { return static_cast<double>(xy[2 * (i % n) + 1]); };
  // Start from a roughly diametral pair: farthest point from point 0, then
  // farthest from that one, three times.
  std::size_t pos = 0, far = 0;
  double max_d = 0;
  for (int it = 0; it < 3; ++it) {
    pos = (pos + far) % n;
    max_d = 0;
    far = 0;
    for (std::size_t j = 1; j < n; ++j) {
      const double dx = X(pos + j) - X(pos), dy = Y(pos + j) - Y(pos);
      const double d = dx * dx + dy * dy;
      if (d > max_d) {
        max_d = d;
        far = j;
      }
    }
  }
  std::vector<int32_t> res;
  if (max_d <= eps2) {
    out.push_back(xy[2 * pos]);
    out.push_back(xy[2 * pos + 1]);
    return;
  }
  // Slices are [start, end) in unwrapped indices; process left-first.
  std::vector<std::pair<std::size_t, std::size_t>> stack;
  stack.emplace_back(pos + far, pos + n);
  stack.emplace_back(pos, pos + far);
  while (!stack.empty()) {
    const auto sl = stack.back();
    stack.pop_back();
    const double sx = X(sl.first), sy = Y(sl.first), ex = X(sl.second), ey = Y(sl.second);
    const double dx = ex - sx, dy = ey - sy;
    const double len2 = dx * dx + dy * dy;
    // Squared distance to the segment (not the line), times len2, as
    // cv2 >= 4.13 does (opencv#28119): points projecting beyond an end are
    // measured to that end.
    double best = 0;
    std::size_t split = sl.first;
    for (std::size_t k = sl.first + 1; k < sl.second; ++k) {
      const double qx = X(k) - sx, qy = Y(k) - sy;
      const double proj = qx * dx + qy * dy;
      double d;
      if (proj < 0) {
        d = (qx * qx + qy * qy) * len2;
      } else if (proj > len2) {
        const double rx = X(k) - ex, ry = Y(k) - ey;
        d = (rx * rx + ry * ry) * len2;
      } else {
        const double c = qy * dx - qx * dy;
        d = c * c;
      }
      if (d > best) {
        best = d;
        split = k;
      }
    }
    if (sl.second - sl.first <= 1 || best <= eps2 * len2) {
      res.push_back(static_cast<int32_t>(X(sl.first)));
      res.push_back(static_cast<int32_t>(Y(sl.first)));
    } else {
      stack.emplace_back(split, sl.second);
      stack.emplace_back(sl.first, split);
    }
  }
  // Final clean-up pass of cv2.approxPolyDP, reproduced step for step
  // because its result depends on the streaming order: one sweep around the
  // ring that compacts the array in place (the write cursor trails the read
  // cursor and the last reads wrap onto already rewritten slots), and after
  // dropping a point the following one becomes the new anchor untested.
  const int cnt = static_cast<int>(res.size() / 2);
  int kept = cnt;
  if (cnt > 0) {
    auto rd = [&](int& pos, int32_t& x, int32_t& y) {
      x = res[2 * pos];
      y = res[2 * pos + 1];
      if (++pos >= cnt) pos = 0;
    };
    auto wr = [&](int& wpos, int32_t x, int32_t y) {
      res[2 * wpos] = x;
      res[2 * wpos + 1] = y;
      if (++wpos >= cnt) wpos = 0;
    };
    int pos = cnt - 1;
    int32_t sx, sy, px, py, ex, ey;
    rd(pos, sx, sy);
    int wpos = pos;
    rd(pos, px, py);
    for (int i = 0; i < cnt && kept > 2; ++i) {
      rd(pos, ex, ey);
      const double dx = static_cast<double>(ex) - sx, dy = static_cast<double>(ey) - sy;
      const double dist = std::fabs((px - sx) * dy - (py - sy) * dx);
      const double inner = static_cast<double>(px - sx) * (ex - px) +
                           static_cast<double>(py - sy) * (ey - py);
      if (dist * dist <= 0.5 * eps2 * (dx * dx + dy * dy) && dx != 0 && dy != 0 && inner >= 0) {
        --kept;
        sx = ex, sy = ey;
        wr(wpos, sx, sy);
        rd(pos, px, py);
        ++i;
        continue;
      }
      sx = px, sy = py;
      wr(wpos, sx, sy);
      px = ex, py = ey;
    }
  }
  out.assign(res.begin(), res.begin() + 2 * kept);
}

void boxes_from_prob(const float* prob, int h, int w, int dest_h, int dest_w,
                     const PostprocessParams& p, PostprocessResult& out) {
  out.clear();
  if (h < 0 || w < 0) throw std::invalid_argument("map size must be non-negative");
  if (dest_h <= 0 || dest_w <= 0) {
    throw std::invalid_argument("dest_shape must be positive, got (" + std::to_string(dest_h) +
                                ", " + std::to_string(dest_w) + ")");
  }
  if (!(p.unclip_ratio >= 0) || !std::isfinite(p.unclip_ratio))
    throw std::invalid_argument("unclip_ratio must be a finite number >= 0");
  if (p.max_candidates < 0) throw std::invalid_argument("max_candidates must be >= 0");
  if (h == 0 || w == 0) return;
  // Reused between calls on a thread: a fresh 1 MB map per call costs as
  // much as thresholding it.
  thread_local Work wk;
  make_padded_threshold(prob, h, w, p.thresh, p.dilate, wk.map,
                        p.row_skip > 0 ? p.row_skip : rows_needed(p));
  trace_contours(wk.map, wk.contours);
  const std::size_t n_cand =
      std::min(wk.contours.size(), static_cast<std::size_t>(p.max_candidates));
  std::vector<double> bx, by;
  for (std::size_t ci = 0; ci < n_cand; ++ci) {
    const int32_t* cxy = wk.contours.xy.data() + 2 * wk.contours.start[ci];
    const std::size_t cn = wk.contours.start[ci + 1] - wk.contours.start[ci];
    if (!p.poly) {
      const RotRect rr = min_area_rect_i32(cxy, cn, wk.hull, wk.scratch);
      float box[8];
      if (mini_box(rr, box) < p.min_size) continue;
      double score;
      if (!p.slow_score) {
        bx.assign({box[0], box[2], box[4], box[6]});
        by.assign({box[1], box[3], box[5], box[7]});
        score = score_polygon(prob, h, w, bx.data(), by.data(), 4, wk);
      } else {
        bx.resize(cn);
        by.resize(cn);
        for (std::size_t k = 0; k < cn; ++k) bx[k] = cxy[2 * k], by[k] = cxy[2 * k + 1];
        score = score_polygon(prob, h, w, bx.data(), by.data(), cn, wk);
      }
      if (p.box_thresh > score) continue;
      bx.assign({box[0], box[2], box[4], box[6]});
      by.assign({box[1], box[3], box[5], box[7]});
      const double len = perimeter(bx.data(), by.data(), 4);
      const double dist = len > 0 ? shoelace_abs(bx.data(), by.data(), 4) * p.unclip_ratio / len : 0;
      // pyclipper truncates float coordinates to integers.
      wk.path.resize(8);
      for (int k = 0; k < 8; ++k) wk.path[k] = static_cast<int64_t>(box[k]);
      if (!offset_round_raw(wk.path.data(), 4, dist, wk.raw)) continue;
      wk.ipts.resize(wk.raw.size());
      for (std::size_t k = 0; k < wk.raw.size(); ++k) wk.ipts[k] = static_cast<int32_t>(wk.raw[k]);
      const RotRect r2 = min_area_rect_i32(wk.ipts.data(), wk.ipts.size() / 2, wk.hull, wk.scratch);
      float box2[8];
      if (mini_box(r2, box2) < p.min_size + 2) continue;
      for (int k = 0; k < 4; ++k) {
        out.xy.push_back(scale_round_f32(box2[2 * k], w, dest_w));
        out.xy.push_back(scale_round_f32(box2[2 * k + 1], h, dest_h));
      }
      out.offsets.push_back(static_cast<int64_t>(out.xy.size() / 2));
      out.scores.push_back(static_cast<float>(score));
    } else {
      double arc = 0;
      for (std::size_t k = 0, j = cn - 1; k < cn; j = k++) {
        const float dx = static_cast<float>(cxy[2 * k] - cxy[2 * j]);
        const float dy = static_cast<float>(cxy[2 * k + 1] - cxy[2 * j + 1]);
        arc += std::sqrt(dx * dx + dy * dy);
      }
      approx_poly_closed(cxy, cn, 0.002 * arc, wk.approx);
      const std::size_t an = wk.approx.size() / 2;
      if (an < 4) continue;
      bx.resize(an);
      by.resize(an);
      for (std::size_t k = 0; k < an; ++k) bx[k] = wk.approx[2 * k], by[k] = wk.approx[2 * k + 1];
      const double score = score_polygon(prob, h, w, bx.data(), by.data(), an, wk);
      if (p.box_thresh > score) continue;
      const double len = perimeter(bx.data(), by.data(), an);
      const double dist = len > 0 ? shoelace_abs(bx.data(), by.data(), an) * p.unclip_ratio / len : 0;
      wk.path.assign(wk.approx.begin(), wk.approx.end());
      if (!offset_round_raw(wk.path.data(), an, dist, wk.raw)) continue;
      union_positive(wk.raw, wk.loops);
      if (wk.loops.size() != 1) continue;
      const std::vector<double>& loop = wk.loops[0];
      const std::size_t ln = loop.size() / 2;
      // Clipper's output vertices are integers.
      wk.ipts.resize(2 * ln);
      for (std::size_t k = 0; k < 2 * ln; ++k) wk.ipts[k] = static_cast<int32_t>(std::llround(loop[k]));
      const RotRect r2 = min_area_rect_i32(wk.ipts.data(), ln, wk.hull, wk.scratch);
      float box2[8];
      if (mini_box(r2, box2) < p.min_size + 2) continue;
      for (std::size_t k = 0; k < ln; ++k) {
        out.xy.push_back(static_cast<float>(scale_round_f64(wk.ipts[2 * k], w, dest_w)));
        out.xy.push_back(static_cast<float>(scale_round_f64(wk.ipts[2 * k + 1], h, dest_h)));
      }
      out.offsets.push_back(static_cast<int64_t>(out.xy.size() / 2));
      out.scores.push_back(static_cast<float>(score));
    }
  }
}

}  // namespace dbdetect
