#include "minrect.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>

// Bit-compatibility with OpenCV's float32 arithmetic needs each product to be
// rounded on its own (no fused multiply-add contraction, e.g. on arm64).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace dbdetect {

namespace {

const double kPi = 3.14159265358979323846;

inline int64_t cross(int64_t ox, int64_t oy, int64_t ax, int64_t ay, int64_t bx,
                     int64_t by) {
  return (ax - ox) * (by - oy) - (ay - oy) * (bx - ox);
}

// Float32 rotating calipers over a convex polygon (orientation free); out:
// corner, edge vector 1, edge vector 2 (cv2's CALIPERS_MINAREARECT result).
void calipers(const float* px, const float* py, int n, float out[6]) {
  std::vector<float> buf(static_cast<std::size_t>(n) * 3);
  float* inv_len = buf.data();
  float* vx = inv_len + n;
  float* vy = vx + n;
  int left = 0, bottom = 0, right = 0, top = 0;
  float left_x = px[0], right_x = px[0], top_y = py[0], bottom_y = py[0];
  float x0 = px[0], y0 = py[0];
  for (int i = 0; i < n; ++i) {
    if (x0 < left_x) left_x = x0, left = i;
    if (x0 > right_x) right_x = x0, right = i;
    if (y0 > top_y) top_y = y0, top = i;
    if (y0 < bottom_y) bottom_y = y0, bottom = i;
    const int nx = (i + 1 < n) ? i + 1 : 0;
    const double dx = static_cast<double>(px[nx]) - x0;
    const double dy = static_cast<double>(py[nx]) - y0;
    vx[i] = static_cast<float>(dx);
    vy[i] = static_cast<float>(dy);
    inv_len[i] = static_cast<float>(1.0 / std::sqrt(dx * dx + dy * dy));
    x0 = px[nx];
    y0 = py[nx];
  }
  float orientation = 0.f;
  {
    double ax = vx[n - 1], ay = vy[n - 1];
    for (int i = 0; i < n; ++i) {
      const double bx = vx[i], by = vy[i];
      const double c = ax * by - ay * bx;
      if (c != 0) {
        orientation = c > 0 ? 1.f : -1.f;
        break;
      }
      ax = bx;
      ay = by;
    }
  }
  float base_a = orientation, base_b = 0.f;
  int seq[4] = {bottom, right, top, left};
  float minarea = FLT_MAX;
  int best_left = 0, best_bottom = 0;
  float best_a = 0, best_b = 0, best_w = 0, best_h = 0;
  for (int k = 0; k < n; ++k) {
    const float dp0 = base_a * vx[seq[0]] + base_b * vy[seq[0]];
    const float dp1 = -base_b * vx[seq[1]] + base_a * vy[seq[1]];
    const float dp2 = -base_a * vx[seq[2]] - base_b * vy[seq[2]];
    const float dp3 = base_b * vx[seq[3]] - base_a * vy[seq[3]];
    float maxcos = dp0 * inv_len[seq[0]];
    int main_el = 0;
    float c = dp1 * inv_len[seq[1]];
    if (c > maxcos) maxcos = c, main_el = 1;
    c = dp2 * inv_len[seq[2]];
    if (c > maxcos) maxcos = c, main_el = 2;
    c = dp3 * inv_len[seq[3]];
    if (c > maxcos) maxcos = c, main_el = 3;
    const int pi_ = seq[main_el];
    const float lx = vx[pi_] * inv_len[pi_], ly = vy[pi_] * inv_len[pi_];
    switch (main_el) {
      case 0: base_a = lx; base_b = ly; break;
      case 1: base_a = ly; base_b = -lx; break;
      case 2: base_a = -lx; base_b = -ly; break;
      default: base_a = -ly; base_b = lx; break;
    }
    seq[main_el] = (seq[main_el] + 1 == n) ? 0 : seq[main_el] + 1;
    float dx = px[seq[1]] - px[seq[3]];
    float dy = py[seq[1]] - py[seq[3]];
    const float width = dx * base_a + dy * base_b;
    dx = px[seq[2]] - px[seq[0]];
    dy = py[seq[2]] - py[seq[0]];
    const float height = -dx * base_b + dy * base_a;
    const float area = width * height;
    if (area <= minarea) {
      minarea = area;
      best_left = seq[3];
      best_bottom = seq[0];
      best_a = base_a;
      best_b = base_b;
      best_w = width;
      best_h = height;
    }
  }
  const float A1 = best_a, B1 = best_b, A2 = -best_b, B2 = best_a;
  const float C1 = A1 * px[best_left] + py[best_left] * B1;
  const float C2 = A2 * px[best_bottom] + py[best_bottom] * B2;
  const float idet = 1.f / (A1 * B2 - A2 * B1);
  out[0] = (C1 * B2 - C2 * B1) * idet;
  out[1] = (A1 * C2 - A2 * C1) * idet;
  out[2] = A1 * best_w;
  out[3] = B1 * best_w;
  out[4] = A2 * best_h;
  out[5] = B2 * best_h;
}

}  // namespace

void convex_hull_i32(const int32_t* xy, std::size_t n, std::vector<int32_t>& hull,
                     std::vector<int64_t>& order) {
  hull.clear();
  order.resize(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = static_cast<int64_t>(i);
  // Sort by (x, y, input index); duplicates keep their first occurrence.
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (xy[2 * a] != xy[2 * b]) return xy[2 * a] < xy[2 * b];
    if (xy[2 * a + 1] != xy[2 * b + 1]) return xy[2 * a + 1] < xy[2 * b + 1];
    return a < b;
  });
  order.erase(std::unique(order.begin(), order.end(),
                          [&](int64_t a, int64_t b) {
                            return xy[2 * a] == xy[2 * b] && xy[2 * a + 1] == xy[2 * b + 1];
                          }),
              order.end());
  const std::size_t m = order.size();
  auto X = [&](std::size_t i) { return static_cast<int64_t>(xy[2 * order[i]]); };
  auto Y = [&](std::size_t i) { return static_cast<int64_t>(xy[2 * order[i] + 1]); };
  std::vector<int64_t> idx;  // input indices of hull vertices
  if (m <= 2) {
    for (std::size_t i = 0; i < m; ++i) idx.push_back(order[i]);
  } else {
    // Andrew's monotone chain: the chain through larger y first (clockwise in
    // a y-up frame, as cv2 orders it), dropping collinear points.
    std::vector<std::size_t> st;
    st.reserve(m + 1);
    for (std::size_t i = 0; i < m; ++i) {
      while (st.size() >= 2 &&
             cross(X(st[st.size() - 2]), Y(st[st.size() - 2]), X(st.back()), Y(st.back()),
                   X(i), Y(i)) >= 0)
        st.pop_back();
      st.push_back(i);
    }
    const std::size_t upper = st.size();
    for (std::size_t i = m - 1; i-- > 0;) {
      while (st.size() > upper &&
             cross(X(st[st.size() - 2]), Y(st[st.size() - 2]), X(st.back()), Y(st.back()),
                   X(i), Y(i)) >= 0)
        st.pop_back();
      st.push_back(i);
    }
    st.pop_back();
    for (std::size_t i : st) idx.push_back(order[i]);
  }
  // cv2 then rotates the hull so that, when the input indices of its vertices
  // run cyclically up (or down) -- always the case for a contour -- it starts
  // at the smallest (or largest) index. The start changes the float32
  // rounding in the calipers, so it is reproduced.
  const std::size_t k = idx.size();
  if (k >= 3) {
    std::size_t imin = 0, imax = 0, rises = 0;
    for (std::size_t i = 0; i < k; ++i) {
      if (idx[i] < idx[imin]) imin = i;
      if (idx[i] > idx[imax]) imax = i;
      rises += idx[i] < idx[(i + 1) % k];
    }
    const bool up = rises == k - 1, down = rises == 1;
    std::size_t first = 0;
    if (up && (imax + 1) % k == imin) first = imin;
    else if (down && (imin + 1) % k == imax) first = imax;
    std::rotate(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(first), idx.end());
  }
  for (int64_t i : idx) {
    hull.push_back(xy[2 * i]);
    hull.push_back(xy[2 * i + 1]);
  }
}

RotRect min_area_rect_i32(const int32_t* xy, std::size_t n, std::vector<int32_t>& hull,
                          std::vector<int64_t>& scratch) {
  RotRect r;
  convex_hull_i32(xy, n, hull, scratch);
  const int m = static_cast<int>(hull.size() / 2);
  std::vector<float> fx(m), fy(m);
  for (int i = 0; i < m; ++i) {
    fx[i] = static_cast<float>(hull[2 * i]);
    fy[i] = static_cast<float>(hull[2 * i + 1]);
  }
  float angle = 0.f;
  if (m > 2) {
    float o[6];
    calipers(fx.data(), fy.data(), m, o);
    r.cx = o[0] + (o[2] + o[4]) * 0.5f;
    r.cy = o[1] + (o[3] + o[5]) * 0.5f;
    r.width = static_cast<float>(std::sqrt(static_cast<double>(o[2]) * o[2] +
                                           static_cast<double>(o[3]) * o[3]));
    r.height = static_cast<float>(std::sqrt(static_cast<double>(o[4]) * o[4] +
                                            static_cast<double>(o[5]) * o[5]));
    angle = static_cast<float>(std::atan2(static_cast<double>(o[3]), static_cast<double>(o[2])));
  } else if (m == 2) {
    r.cx = (fx[0] + fx[1]) * 0.5f;
    r.cy = (fy[0] + fy[1]) * 0.5f;
    const double dx = static_cast<double>(fx[1]) - fx[0];
    const double dy = static_cast<double>(fy[1]) - fy[0];
    r.width = static_cast<float>(std::sqrt(dx * dx + dy * dy));
    r.height = 0.f;
    angle = static_cast<float>(std::atan2(dy, dx));
  } else if (m == 1) {
    r.cx = fx[0];
    r.cy = fy[0];
  }
  const float a180 = angle * 180;
  r.angle_deg = static_cast<float>(a180 / kPi);
  return r;
}

float mini_box(const RotRect& r, float out[8]) {
  // cv2 (>= 4.x) evaluates the corners in double and rounds them once.
  const double ang = r.angle_deg * kPi / 180.;
  const double b = std::cos(ang) * 0.5, a = std::sin(ang) * 0.5;
  const double cx = r.cx, cy = r.cy, w = r.width, h = r.height;
  const double q0x = cx - a * h - b * w, q0y = cy + b * h - a * w;
  const double q1x = cx + a * h - b * w, q1y = cy - b * h - a * w;
  float p[4][2];
  p[0][0] = static_cast<float>(q0x);
  p[0][1] = static_cast<float>(q0y);
  p[1][0] = static_cast<float>(q1x);
  p[1][1] = static_cast<float>(q1y);
  p[2][0] = static_cast<float>(2 * cx - q0x);
  p[2][1] = static_cast<float>(2 * cy - q0y);
  p[3][0] = static_cast<float>(2 * cx - q1x);
  p[3][1] = static_cast<float>(2 * cy - q1y);
  // Stable sort by x (Python's sorted), then pick top/bottom on each side.
  int idx[4] = {0, 1, 2, 3};
  std::stable_sort(idx, idx + 4, [&](int i, int j) { return p[i][0] < p[j][0]; });
  int i1, i2, i3, i4;
  if (p[idx[1]][1] > p[idx[0]][1]) {
    i1 = idx[0];
    i4 = idx[1];
  } else {
    i1 = idx[1];
    i4 = idx[0];
  }
  if (p[idx[3]][1] > p[idx[2]][1]) {
    i2 = idx[2];
    i3 = idx[3];
  } else {
    i2 = idx[3];
    i3 = idx[2];
  }
  const int order[4] = {i1, i2, i3, i4};
  for (int k = 0; k < 4; ++k) {
    out[2 * k] = p[order[k]][0];
    out[2 * k + 1] = p[order[k]][1];
  }
  return std::min(r.width, r.height);
}

}  // namespace dbdetect

