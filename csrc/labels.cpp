// GCC only turns the float min/max selects of the per-pixel distance loop
// into vector code when comparisons may not trap; nothing here reads FP
// exception flags. The build flags are shared by every concern, so this file
// says it itself, before any header so that inlined library code (std::min)
// gets the same options and stays inlinable.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include "labels.hpp"

#if defined(__SSE2__)
#include <emmintrin.h>
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "geometry.hpp"

namespace dbdetect {
namespace {

// The reference loaders fill integer-rounded Clipper outlines with
// cv2.fillPoly, which rounds every vertex to a pixel and also draws the
// outline itself: filled regions come out about half a pixel wider on every
// side than the set of pixel centres inside the exact outline (measured on
// ICDAR 2015 words: the best-fitting widening is 0.4-0.6 pixel at every edge
// angle, with +-0.3 pixel of per-word jitter from the rounding). Kernels are
// often only 3-6 pixels tall, so we keep that half pixel, exactly and
// without jitter: every region is thresholded at D -+ kFillTolerance.
constexpr double kFillTolerance = 0.5;

// Per-edge constants, computed once per polygon rather than once per row.
struct EdgeInfo {
  double ax, ay, bx, by, dx, dy;
  double ylo, yhi;      // rows outside [ylo, yhi] are farther than cap
  double xlo, xhi;      // columns outside are farther than cap
  double nx, ny;        // unit normal; band test used when |nx| is not tiny
  bool use_band;
  float finv;           // 1 / |b - a|^2 (0 for a degenerate edge)
};

struct Scratch {
  std::vector<double> poly;     // clamped points, relative to the window origin
  std::vector<float> sd;        // signed distance per window pixel (<= 0: inside)
  std::vector<int64_t> lo, hi;  // per window row: the columns that are near or inside
  std::vector<int64_t> band;    // per edge of the current row: first, last column
  std::vector<EdgeInfo> edges;
  std::vector<double> cross;    // scanline crossings of one row
};

void check_params(const TargetParams& p) {
  if (!std::isfinite(p.shrink_ratio) || p.shrink_ratio < 0.0 || p.shrink_ratio >= 1.0)
    throw std::invalid_argument("shrink_ratio must be in [0, 1), got " +
                                std::to_string(p.shrink_ratio));
  if (!std::isfinite(p.thresh_min) || !std::isfinite(p.thresh_max) ||
      p.thresh_min > p.thresh_max)
    throw std::invalid_argument("thresh_min and thresh_max must be finite with thresh_min <= thresh_max");
  if (!std::isfinite(p.min_text_size))
    throw std::invalid_argument("min_text_size must be finite");
}

void check_job(const TargetJob& job) {
  if (job.height <= 0 || job.width <= 0)
    throw std::invalid_argument("shape must be positive, got (" + std::to_string(job.height) +
                                ", " + std::to_string(job.width) + ")");
  if (job.height > (int64_t(1) << 20) || job.width > (int64_t(1) << 20))
    throw std::invalid_argument("shape is too large");
  if (!job.shrink_map || !job.shrink_mask || !job.thresh_map || !job.thresh_mask)
    throw std::invalid_argument("output maps must not be null");
  if (job.n_polys == 0) return;
  if (!job.offsets || !job.ignore)
    throw std::invalid_argument("offsets and ignore tags must not be null");
  if (job.offsets[0] != 0) throw std::invalid_argument("offsets must start at 0");
  for (std::size_t i = 0; i < job.n_polys; ++i) {
    const int64_t n = job.offsets[i + 1] - job.offsets[i];
    if (n < 3)
      throw std::invalid_argument("polygon " + std::to_string(i) + " has " + std::to_string(n) +
                                  " points; at least 3 are needed");
  }
  if (!job.xy) throw std::invalid_argument("points must not be null");
  for (std::size_t i = 0; i < job.n_polys; ++i) {
    const int64_t a = job.offsets[i];
    const std::string what = "polygon " + std::to_string(i);
    check_finite(job.xy + 2 * a, static_cast<std::size_t>(job.offsets[i + 1] - a), what.c_str());
  }
}

void fill(float* p, std::size_t n, float v) { std::fill(p, p + n, v); }

// In place square root; the portable loop is not vectorised by GCC unless
// errno semantics are off, which the shared build flags leave on.
void sqrt_inplace(float* p, int64_t n) {
  int64_t i = 0;
#if defined(__SSE2__)
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(p + i, _mm_sqrt_ps(_mm_loadu_ps(p + i)));
#elif defined(__aarch64__) && defined(__ARM_NEON)
  for (; i + 4 <= n; i += 4) vst1q_f32(p + i, vsqrtq_f32(vld1q_f32(p + i)));
#endif
  for (; i < n; ++i) p[i] = std::sqrt(p[i]);
}

// Window-local signed distance to the outline, capped at `cap`: negative (or
// zero) for pixel centres inside the polygon (even-odd rule), positive outside.
// Pixel (i, j) of the window has its centre at (i, j) in window coordinates.
// Only columns s.lo[j] .. s.hi[j] of row j are computed (empty when lo > hi):
// every pixel outside them is outside the polygon and farther than cap.
void signed_distance(const double* p, std::size_t n, int64_t ww, int64_t wh, double cap,
                     Scratch& s) {
  s.sd.resize(static_cast<std::size_t>(ww * wh));
  s.lo.assign(static_cast<std::size_t>(wh), ww);
  s.hi.assign(static_cast<std::size_t>(wh), -1);
  s.band.resize(2 * n);
  s.edges.resize(n);
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t k2 = (k + 1 == n) ? 0 : k + 1;
    EdgeInfo& e = s.edges[k];
    e.ax = p[2 * k];
    e.ay = p[2 * k + 1];
    e.bx = p[2 * k2];
    e.by = p[2 * k2 + 1];
    e.dx = e.bx - e.ax;
    e.dy = e.by - e.ay;
    e.ylo = std::min(e.ay, e.by) - cap;
    e.yhi = std::max(e.ay, e.by) + cap;
    e.xlo = std::min(e.ax, e.bx) - cap;
    e.xhi = std::max(e.ax, e.bx) + cap;
    const double len2 = e.dx * e.dx + e.dy * e.dy;
    e.finv = len2 > 0.0 ? static_cast<float>(1.0 / len2) : 0.0f;
    const double len = std::sqrt(len2);
    e.nx = len > 0.0 ? -e.dy / len : 0.0;
    e.ny = len > 0.0 ? e.dx / len : 0.0;
    e.use_band = std::fabs(e.nx) > 1e-9;
  }
  const float cap2 = static_cast<float>(cap * cap);
  for (int64_t j = 0; j < wh; ++j) {
    float* row = s.sd.data() + j * ww;
    const double y = static_cast<double>(j);
    int64_t lo = ww, hi = -1;
    s.cross.clear();
    for (std::size_t k = 0; k < n; ++k) {
      const EdgeInfo& e = s.edges[k];
      s.band[2 * k] = 0;
      s.band[2 * k + 1] = -1;
      // Half-open rule: each crossing is counted once even at shared vertices.
      if ((e.ay <= y) != (e.by <= y)) s.cross.push_back(e.ax + (y - e.ay) * e.dx / e.dy);
      if (y < e.ylo || y > e.yhi) continue;
      double xlo = e.xlo, xhi = e.xhi;
      if (e.use_band) {
        // Only the band |n . (q - a)| <= cap can be within cap of the segment.
        const double c = e.ny * (y - e.ay);
        double u = e.ax + (-cap - c) / e.nx, v = e.ax + (cap - c) / e.nx;
        if (u > v) std::swap(u, v);
        xlo = std::max(xlo, u);
        xhi = std::min(xhi, v);
      }
      const int64_t ia = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(xlo)));
      const int64_t ib = std::min<int64_t>(ww - 1, static_cast<int64_t>(std::floor(xhi)));
      if (ia > ib) continue;
      s.band[2 * k] = ia;
      s.band[2 * k + 1] = ib;
      lo = std::min(lo, ia);
      hi = std::max(hi, ib);
    }
    if (s.cross.size() == 2) {
      if (s.cross[0] > s.cross[1]) std::swap(s.cross[0], s.cross[1]);
    } else {
      std::sort(s.cross.begin(), s.cross.end());
    }
    for (std::size_t c = 0; c + 1 < s.cross.size(); c += 2) {
      const int64_t a = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(s.cross[c])));
      const int64_t b = std::min<int64_t>(ww - 1, static_cast<int64_t>(std::floor(s.cross[c + 1])));
      if (a <= b) {
        lo = std::min(lo, a);
        hi = std::max(hi, b);
      }
    }
    s.lo[j] = lo;
    s.hi[j] = hi;
    if (lo > hi) continue;
    std::fill(row + lo, row + hi + 1, cap2);
    for (std::size_t k = 0; k < n; ++k) {
      if (s.band[2 * k] > s.band[2 * k + 1]) continue;
      const EdgeInfo& e = s.edges[k];
      const float fax = static_cast<float>(e.ax), fdx = static_cast<float>(e.dx);
      const float fdy = static_cast<float>(e.dy);
      const float finv = e.finv;
      const float py = static_cast<float>(y - e.ay);
      const float pyd = py * fdy;
      // int32 index: its conversion to float vectorises (the window fits in int32).
      const int32_t i0 = static_cast<int32_t>(s.band[2 * k]), i1 = static_cast<int32_t>(s.band[2 * k + 1]);
      for (int32_t i = i0; i <= i1; ++i) {
        const float px = static_cast<float>(i) - fax;
        const float t = std::min(std::max((px * fdx + pyd) * finv, 0.0f), 1.0f);
        const float ex = px - t * fdx, ey = py - t * fdy;
        row[i] = std::min(row[i], ex * ex + ey * ey);
      }
    }
    sqrt_inplace(row + lo, hi - lo + 1);
    for (std::size_t c = 0; c + 1 < s.cross.size(); c += 2) {
      const int64_t a = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(s.cross[c])));
      const int64_t b = std::min<int64_t>(ww - 1, static_cast<int64_t>(std::floor(s.cross[c + 1])));
      for (int64_t i = a; i <= b; ++i) row[i] = -row[i];
    }
  }
}

struct Window {
  int64_t x0, y0, ww, wh;
};

// Pixel window of the clamped polygon's bounding box grown by `margin`.
Window make_window(const double* xy, std::size_t n, double margin, int64_t height, int64_t width) {
  double minx = xy[0], maxx = xy[0], miny = xy[1], maxy = xy[1];
  for (std::size_t k = 1; k < n; ++k) {
    minx = std::min(minx, xy[2 * k]);
    maxx = std::max(maxx, xy[2 * k]);
    miny = std::min(miny, xy[2 * k + 1]);
    maxy = std::max(maxy, xy[2 * k + 1]);
  }
  Window w;
  w.x0 = std::max<int64_t>(0, static_cast<int64_t>(std::floor(minx - margin)));
  w.y0 = std::max<int64_t>(0, static_cast<int64_t>(std::floor(miny - margin)));
  const int64_t x1 = std::min<int64_t>(width - 1, static_cast<int64_t>(std::ceil(maxx + margin)));
  const int64_t y1 = std::min<int64_t>(height - 1, static_cast<int64_t>(std::ceil(maxy + margin)));
  w.ww = x1 - w.x0 + 1;
  w.wh = y1 - w.y0 + 1;
  return w;
}

void draw_polygon(const TargetJob& job, const TargetParams& prm, std::size_t idx, Scratch& s) {
  const int64_t a = job.offsets[idx];
  const std::size_t n = static_cast<std::size_t>(job.offsets[idx + 1] - a);
  const double* src = job.xy + 2 * a;
  const double W1 = static_cast<double>(job.width - 1), H1 = static_cast<double>(job.height - 1);

  // Clamp to the image as the reference loaders do (a polygon far outside
  // collapses onto the border and is then ignored for its zero area).
  s.poly.resize(2 * n);
  double minx = 1e300, maxx = -1e300, miny = 1e300, maxy = -1e300;
  for (std::size_t k = 0; k < n; ++k) {
    const double x = std::min(std::max(src[2 * k], 0.0), W1);
    const double y = std::min(std::max(src[2 * k + 1], 0.0), H1);
    s.poly[2 * k] = x;
    s.poly[2 * k + 1] = y;
    minx = std::min(minx, x);
    maxx = std::max(maxx, x);
    miny = std::min(miny, y);
    maxy = std::max(maxy, y);
  }
  const double area = std::fabs(polygon_signed_area(s.poly.data(), n));
  bool ignored = job.ignore[idx] != 0 || area < 1.0 ||
                 std::min(maxx - minx, maxy - miny) < prm.min_text_size;

  const double D = ignored ? 0.0
                           : area * (1.0 - prm.shrink_ratio * prm.shrink_ratio) /
                                 polygon_perimeter(s.poly.data(), n);
  const double reach = D + kFillTolerance;
  // The cap sits a pixel above every threshold tested, so a capped value
  // never passes a "d <= threshold" test by accident.
  const double cap = reach + 1.0;
  const Window w = make_window(s.poly.data(), n, cap, job.height, job.width);
  for (std::size_t k = 0; k < n; ++k) {
    s.poly[2 * k] -= static_cast<double>(w.x0);
    s.poly[2 * k + 1] -= static_cast<double>(w.y0);
  }
  signed_distance(s.poly.data(), n, w.ww, w.wh, cap, s);
  const float* sd = s.sd.data();

  // Signed distance v <= shrink_at: inside at distance >= D - tol (or, for
  // D < tol, outside within tol - D).
  const float shrink_at = static_cast<float>(kFillTolerance - D);
  if (!ignored) {
    // A shrink that covers no pixel means the text is too thin for a kernel.
    bool any = false;
    for (int64_t j = 0; j < w.wh && !any; ++j) {
      const float* r = sd + j * w.ww;
      for (int64_t i = s.lo[j]; i <= s.hi[j] && !any; ++i) any = r[i] <= shrink_at;
    }
    ignored = !any;
  }

  const int64_t W = job.width;
  if (ignored) {
    // Zero the mask over the polygon itself (its fill at D = 0).
    const float lim = static_cast<float>(kFillTolerance);
    for (int64_t j = 0; j < w.wh; ++j) {
      const float* r = sd + j * w.ww;
      float* m = job.shrink_mask + (w.y0 + j) * W + w.x0;
      for (int64_t i = s.lo[j]; i <= s.hi[j]; ++i)
        if (r[i] <= lim) m[i] = 0.0f;
    }
    return;
  }
  const float mask_at = static_cast<float>(D + kFillTolerance);
  const float scale = static_cast<float>((prm.thresh_max - prm.thresh_min) / D);
  const float top = static_cast<float>(prm.thresh_max);
  for (int64_t j = 0; j < w.wh; ++j) {
    const float* r = sd + j * w.ww;
    const int64_t off = (w.y0 + j) * W + w.x0;
    float* gm = job.shrink_map + off;
    float* tm = job.thresh_map + off;
    float* tk = job.thresh_mask + off;
    for (int64_t i = s.lo[j]; i <= s.hi[j]; ++i) {
      // Branch-free selects so that the loop vectorises.
      const float v = r[i];
      gm[i] = v <= shrink_at ? 1.0f : gm[i];
      tk[i] = v <= mask_at ? 1.0f : tk[i];  // inside (v <= 0) or within D + tol
      // thresh_min + (1 - d / D) * (thresh_max - thresh_min) where d < D; below
      // thresh_min (d >= D) it never wins against the background.
      const float t = top - std::fabs(v) * scale;
      tm[i] = tm[i] < t ? t : tm[i];
    }
  }
}

}  // namespace

void make_targets(const TargetJob& job, const TargetParams& params) {
  check_params(params);
  check_job(job);
  const std::size_t npx = static_cast<std::size_t>(job.height * job.width);
  fill(job.shrink_map, npx, 0.0f);
  fill(job.shrink_mask, npx, 1.0f);
  fill(job.thresh_map, npx, static_cast<float>(params.thresh_min));
  fill(job.thresh_mask, npx, 0.0f);
  Scratch s;
  for (std::size_t i = 0; i < job.n_polys; ++i) draw_polygon(job, params, i, s);
}

void make_targets_batch(const TargetJob* jobs, std::size_t n_jobs, const TargetParams& params,
                        int threads) {
  check_params(params);
  if (n_jobs == 0) return;
  if (!jobs) throw std::invalid_argument("jobs must not be null");
  std::size_t nt = threads > 0 ? static_cast<std::size_t>(threads)
                               : std::max(1u, std::thread::hardware_concurrency());
  nt = std::min(nt, n_jobs);
  std::vector<std::exception_ptr> errors(n_jobs);
  std::atomic<std::size_t> next{0};
  auto worker = [&]() {
    for (std::size_t i = next.fetch_add(1); i < n_jobs; i = next.fetch_add(1)) {
      try {
        make_targets(jobs[i], params);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(nt - 1);
  for (std::size_t t = 1; t < nt; ++t) {
    // Fewer threads than asked (e.g. a thread limit) only costs speed.
    try {
      pool.emplace_back(worker);
    } catch (const std::system_error&) {
      break;
    }
  }
  worker();
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace dbdetect
