#include "labels.hpp"

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

struct Scratch {
  std::vector<double> poly;     // clamped points, relative to the window origin
  std::vector<float> sd;        // signed distance per window pixel (<= 0: inside)
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

// Window-local signed distance to the outline, capped at `cap`: negative (or
// zero) for pixel centres inside the polygon (even-odd rule), positive outside.
// Pixel (i, j) of the window has its centre at (i, j) in window coordinates.
void signed_distance(const double* p, std::size_t n, int64_t ww, int64_t wh, double cap,
                     Scratch& s) {
  s.sd.resize(static_cast<std::size_t>(ww * wh));
  const float cap2 = static_cast<float>(cap * cap);
  for (int64_t j = 0; j < wh; ++j) {
    float* row = s.sd.data() + j * ww;
    std::fill(row, row + ww, cap2);
    const double y = static_cast<double>(j);
    s.cross.clear();
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t k2 = (k + 1 == n) ? 0 : k + 1;
      const double ax = p[2 * k], ay = p[2 * k + 1];
      const double bx = p[2 * k2], by = p[2 * k2 + 1];
      // Half-open rule: each crossing is counted once even at shared vertices.
      if ((ay <= y) != (by <= y)) s.cross.push_back(ax + (y - ay) * (bx - ax) / (by - ay));
      if (y < std::min(ay, by) - cap || y > std::max(ay, by) + cap) continue;
      const double dx = bx - ax, dy = by - ay;
      const double len2 = dx * dx + dy * dy;
      double xlo = std::min(ax, bx) - cap, xhi = std::max(ax, bx) + cap;
      if (len2 > 0.0) {
        // Only the band |n . (q - a)| <= cap can be within cap of the segment.
        const double len = std::sqrt(len2);
        const double nx = -dy / len, ny = dx / len;
        if (std::fabs(nx) > 1e-9) {
          const double c = ny * (y - ay);
          double u = ax + (-cap - c) / nx, v = ax + (cap - c) / nx;
          if (u > v) std::swap(u, v);
          xlo = std::max(xlo, u);
          xhi = std::min(xhi, v);
        }
      }
      const int64_t ia = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(xlo)));
      const int64_t ib = std::min<int64_t>(ww - 1, static_cast<int64_t>(std::floor(xhi)));
      if (ia > ib) continue;
      const float fax = static_cast<float>(ax), fdx = static_cast<float>(dx);
      const float fdy = static_cast<float>(dy);
      const float finv = len2 > 0.0 ? static_cast<float>(1.0 / len2) : 0.0f;
      const float py = static_cast<float>(y - ay);
      const float pyd = py * fdy;
      for (int64_t i = ia; i <= ib; ++i) {
        const float px = static_cast<float>(i) - fax;
        float t = (px * fdx + pyd) * finv;
        t = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
        const float ex = px - t * fdx, ey = py - t * fdy;
        const float d2 = ex * ex + ey * ey;
        row[i] = row[i] < d2 ? row[i] : d2;
      }
    }
    for (int64_t i = 0; i < ww; ++i) row[i] = std::sqrt(row[i]);
    std::sort(s.cross.begin(), s.cross.end());
    for (std::size_t c = 0; c + 1 < s.cross.size(); c += 2) {
      const double lo = std::max(0.0, std::ceil(s.cross[c]));
      const double hi = std::min(static_cast<double>(ww - 1), std::floor(s.cross[c + 1]));
      for (int64_t i = static_cast<int64_t>(lo); i <= static_cast<int64_t>(hi); ++i) row[i] = -row[i];
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
  const std::size_t npx = static_cast<std::size_t>(w.ww * w.wh);

  // Signed distance v <= shrink_at: inside at distance >= D - tol (or, for
  // D < tol, outside within tol - D).
  const float shrink_at = static_cast<float>(kFillTolerance - D);
  if (!ignored) {
    // A shrink that covers no pixel means the text is too thin for a kernel.
    bool any = false;
    for (std::size_t q = 0; q < npx && !any; ++q) any = sd[q] <= shrink_at;
    ignored = !any;
  }

  const int64_t W = job.width;
  if (ignored) {
    // Zero the mask over the polygon itself (its fill at D = 0).
    const float lim = static_cast<float>(kFillTolerance);
    for (int64_t j = 0; j < w.wh; ++j) {
      const float* r = sd + j * w.ww;
      float* m = job.shrink_mask + (w.y0 + j) * W + w.x0;
      for (int64_t i = 0; i < w.ww; ++i)
        if (r[i] <= lim) m[i] = 0.0f;
    }
    return;
  }
  const float fD = static_cast<float>(D);
  const float mask_at = static_cast<float>(D + kFillTolerance);
  const float scale = static_cast<float>((prm.thresh_max - prm.thresh_min) / D);
  const float top = static_cast<float>(prm.thresh_max);
  for (int64_t j = 0; j < w.wh; ++j) {
    const float* r = sd + j * w.ww;
    const int64_t off = (w.y0 + j) * W + w.x0;
    float* gm = job.shrink_map + off;
    float* tm = job.thresh_map + off;
    float* tk = job.thresh_mask + off;
    for (int64_t i = 0; i < w.ww; ++i) {
      const float v = r[i];
      if (v <= shrink_at) gm[i] = 1.0f;
      if (v <= mask_at) tk[i] = 1.0f;  // inside (v <= 0) or within D + tol
      const float d = std::fabs(v);
      if (d < fD) {
        // thresh_min + (1 - d / D) * (thresh_max - thresh_min)
        const float t = top - d * scale;
        tm[i] = tm[i] < t ? t : tm[i];
      }
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
