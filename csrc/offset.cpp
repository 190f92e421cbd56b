#include "offset.hpp"

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace dbdetect {

namespace {

const double kPi = 3.141592653589793238;
const double kArcTolerance = 0.25;  // pyclipper's default ArcTolerance

inline int64_t round_away(double v) {
  return v < 0 ? static_cast<int64_t>(v - 0.5) : static_cast<int64_t>(v + 0.5);
}

struct Unit {
  double x, y;
};

}  // namespace

bool offset_round_raw(const int64_t* xy, std::size_t n, double delta,
                      std::vector<int64_t>& out) {
  out.clear();
  if (n == 0 || !(delta > 0) || !std::isfinite(delta)) return false;
  // Strip a repeated closing point and consecutive duplicates.
  std::size_t hi = n - 1;
  while (hi > 0 && xy[0] == xy[2 * hi] && xy[1] == xy[2 * hi + 1]) --hi;
  std::vector<int64_t> src{xy[0], xy[1]};
  for (std::size_t i = 1; i <= hi; ++i) {
    const std::size_t l = src.size() - 2;
    if (src[l] != xy[2 * i] || src[l + 1] != xy[2 * i + 1]) {
      src.push_back(xy[2 * i]);
      src.push_back(xy[2 * i + 1]);
    }
  }
  const int len = static_cast<int>(src.size() / 2);
  if (len < 3) return false;
  // Clipper makes the path positively oriented (its Area() >= 0) first.
  double a = 0;
  for (int i = 0, j = len - 1; i < len; j = i++) {
    a += (static_cast<double>(src[2 * j]) + src[2 * i]) *
         (static_cast<double>(src[2 * j + 1]) - src[2 * i + 1]);
  }
  if (-a * 0.5 < 0) {
    for (int i = 0, j = len - 1; i < j; ++i, --j) {
      std::swap(src[2 * i], src[2 * j]);
      std::swap(src[2 * i + 1], src[2 * j + 1]);
    }
  }
  double tol = kArcTolerance;
  if (tol > delta * kArcTolerance) tol = delta * kArcTolerance;
  double steps = kPi / std::acos(1 - tol / delta);
  if (steps > delta * kPi) steps = delta * kPi;
  const double two_pi = kPi * 2;
  const double sin_s = std::sin(two_pi / steps), cos_s = std::cos(two_pi / steps);
  const double steps_per_rad = steps / two_pi;

  std::vector<Unit> nrm(len);
  for (int j = 0; j < len; ++j) {
    const int k = (j + 1 < len) ? j + 1 : 0;
    const double dx = static_cast<double>(src[2 * k] - src[2 * j]);
    const double dy = static_cast<double>(src[2 * k + 1] - src[2 * j + 1]);
    if (dx == 0 && dy == 0) {
      nrm[j] = {0, 0};
    } else {
      const double f = 1.0 / std::sqrt(dx * dx + dy * dy);
      nrm[j] = {dy * f, -dx * f};
    }
  }
  auto push = [&](double x, double y) {
    out.push_back(round_away(x));
    out.push_back(round_away(y));
  };
  out.reserve(static_cast<std::size_t>(len) * 8);
  // Clipper's OffsetPoint advances k only after a join: a nearly straight
  // vertex keeps the previous edge's normal for the next vertex.
  int k = len - 1;
  for (int j = 0; j < len; ++j) {
    const double sx = static_cast<double>(src[2 * j]), sy = static_cast<double>(src[2 * j + 1]);
    double sin_a = nrm[k].x * nrm[j].y - nrm[j].x * nrm[k].y;
    const double cos_a = nrm[k].x * nrm[j].x + nrm[j].y * nrm[k].y;
    if (std::fabs(sin_a * delta) < 1.0) {
      if (cos_a > 0) {  // nearly straight: one point is enough
        push(sx + nrm[k].x * delta, sy + nrm[k].y * delta);
        continue;
      }
    } else if (sin_a > 1.0) {
      sin_a = 1.0;
    } else if (sin_a < -1.0) {
      sin_a = -1.0;
    }
    if (sin_a * delta < 0) {  // concave corner: the union removes the loop
      push(sx + nrm[k].x * delta, sy + nrm[k].y * delta);
      out.push_back(src[2 * j]);
      out.push_back(src[2 * j + 1]);
      push(sx + nrm[j].x * delta, sy + nrm[j].y * delta);
    } else {  // convex corner: arc from normal k to normal j
      const double ang = std::atan2(sin_a, cos_a);
      int st = static_cast<int>(round_away(steps_per_rad * std::fabs(ang)));
      if (st < 1) st = 1;
      double X = nrm[k].x, Y = nrm[k].y;
      for (int i = 0; i < st; ++i) {
        push(sx + X * delta, sy + Y * delta);
        const double X2 = X;
        X = X * cos_s - sin_s * Y;
        Y = X2 * sin_s + Y * cos_s;
      }
      push(sx + nrm[j].x * delta, sy + nrm[j].y * delta);
    }
    k = j;
  }
  return true;
}

// Union of one closed path under the positive fill rule, in four steps:
// split every edge at its intersections with the others (O(m^2) with
// bounding-box rejection; m is a few hundred at most here), keep the pieces
// whose two sides differ in "winding > 0", orient them with the filled side
// on the left, and chain them into loops. Exact for integer input up to the
// double rounding of intersection points; loops touching at a point may be
// chained either way.
void union_positive(const std::vector<int64_t>& path,
                    std::vector<std::vector<double>>& loops) {
  loops.clear();
  const std::size_t m = path.size() / 2;
  if (m < 3) return;
  std::vector<double> px(m), py(m);
  for (std::size_t i = 0; i < m; ++i) {
    px[i] = static_cast<double>(path[2 * i]);
    py[i] = static_cast<double>(path[2 * i + 1]);
  }
  // Point ids: snap to a fine grid so coincident points share one id.
  std::vector<double> vx, vy;
  std::unordered_map<uint64_t, int> ids;
  auto point_id = [&](double x, double y) {
    const int64_t kx = static_cast<int64_t>(std::llround(x * 4096.0));
    const int64_t ky = static_cast<int64_t>(std::llround(y * 4096.0));
    const uint64_t key = (static_cast<uint64_t>(kx) * 0x9E3779B97F4A7C15ull) ^
                         static_cast<uint64_t>(ky);
    auto it = ids.find(key);
    if (it != ids.end()) return it->second;
    const int id = static_cast<int>(vx.size());
    ids.emplace(key, id);
    vx.push_back(x);
    vy.push_back(y);
    return id;
  };
  struct Split {
    double t;
    int id;
  };
  std::vector<std::vector<Split>> splits(m);
  std::vector<int> vid(m);
  for (std::size_t i = 0; i < m; ++i) vid[i] = point_id(px[i], py[i]);
  auto nxt = [&](std::size_t i) { return i + 1 < m ? i + 1 : 0; };
  // Edge pairs whose x-ranges overlap, found by sweeping edges sorted by
  // their left end (the offset of a text polygon has a few hundred edges and
  // almost no crossings). `simple` stays true if no two edges meet except
  // consecutive ones at their shared vertex.
  bool simple = static_cast<std::size_t>(vx.size()) == m;
  std::vector<std::size_t> order(m);
  std::vector<double> ex0(m), ex1(m), ey0(m), ey1(m);  // edge bounding boxes
  for (std::size_t i = 0; i < m; ++i) {
    order[i] = i;
    ex0[i] = std::min(px[i], px[nxt(i)]);
    ex1[i] = std::max(px[i], px[nxt(i)]);
    ey0[i] = std::min(py[i], py[nxt(i)]);
    ey1[i] = std::max(py[i], py[nxt(i)]);
  }
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return ex0[a] < ex0[b]; });
  std::vector<std::pair<std::size_t, std::size_t>> pairs;  // edges whose boxes overlap
  for (std::size_t oi = 0; oi < m; ++oi) {
    const std::size_t a = order[oi];
    for (std::size_t oj = oi + 1; oj < m && ex0[order[oj]] <= ex1[a]; ++oj) {
      const std::size_t b = order[oj];
      if (ey1[b] < ey0[a] || ey0[b] > ey1[a]) continue;
      pairs.emplace_back(std::min(a, b), std::max(a, b));
    }
  }
  // In index order: intersection points get their ids in that order, and the
  // loop walk below depends on it where several edges meet at one point.
  std::sort(pairs.begin(), pairs.end());
  for (const auto& ij : pairs) {
    const std::size_t i = ij.first, j = ij.second;
    const std::size_t i2 = nxt(i), j2 = nxt(j);
    const double ax = px[i], ay = py[i], rx = px[i2] - ax, ry = py[i2] - ay;
    const double cx = px[j], cy = py[j], sx = px[j2] - cx, sy = py[j2] - cy;
    if ((rx == 0 && ry == 0) || (sx == 0 && sy == 0)) continue;
    const bool consecutive = j == i + 1 || (i == 0 && j == m - 1);
    const double den = rx * sy - ry * sx;
    const double qx = cx - ax, qy = cy - ay;
    if (den != 0) {
      const double t = (qx * sy - qy * sx) / den;
      const double u = (qx * ry - qy * rx) / den;
      if (t < 0 || t > 1 || u < 0 || u > 1) continue;
      const bool ti = t > 0 && t < 1, uj = u > 0 && u < 1;
      if (!consecutive) simple = false;
      if (!ti && !uj) continue;  // shared endpoint
      const int id = point_id(ax + t * rx, ay + t * ry);
      if (ti) splits[i].push_back({t, id});
      if (uj) splits[j].push_back({u, id});
    } else if (qx * ry - qy * rx == 0) {  // collinear: split at overlap ends
      simple = false;
      const double rr = rx * rx + ry * ry, ss = sx * sx + sy * sy;
      const double tc = (qx * rx + qy * ry) / rr;
      const double td = ((px[j2] - ax) * rx + (py[j2] - ay) * ry) / rr;
      if (tc > 0 && tc < 1) splits[i].push_back({tc, vid[j]});
      if (td > 0 && td < 1) splits[i].push_back({td, vid[j2]});
      const double ta = (-qx * sx - qy * sy) / ss;
      const double tb = ((px[i2] - cx) * sx + (py[i2] - cy) * sy) / ss;
      if (ta > 0 && ta < 1) splits[j].push_back({ta, vid[i]});
      if (tb > 0 && tb < 1) splits[j].push_back({tb, vid[i2]});
    }
  }
  if (simple) {
    // No crossings or touches: the union is the polygon itself when it winds
    // positively, else empty; the kept edges are then all edges, in order.
    double area2 = 0;
    for (std::size_t i = 0; i < m; ++i) area2 += px[i] * py[nxt(i)] - px[nxt(i)] * py[i];
    if (!(area2 > 0)) return;
  }
  // Winding numbers at points beside each piece. Edges are filed under every
  // integer row their y-range touches, so a query looks at the few edges
  // crossing its row instead of all m.
  int row0 = 0, nrows = 0;
  std::vector<std::size_t> row_start, row_edges;
  if (!simple) {
    double lo = ey0[0], hi = ey1[0];
    for (std::size_t i = 1; i < m; ++i) lo = std::min(lo, ey0[i]), hi = std::max(hi, ey1[i]);
    row0 = static_cast<int>(std::floor(lo));
    nrows = static_cast<int>(std::floor(hi)) - row0 + 1;
    row_start.assign(static_cast<std::size_t>(nrows) + 1, 0);
    for (std::size_t i = 0; i < m; ++i) {
      for (int r = static_cast<int>(std::floor(ey0[i])); r <= static_cast<int>(std::floor(ey1[i])); ++r)
        ++row_start[static_cast<std::size_t>(r - row0) + 1];
    }
    for (int r = 0; r < nrows; ++r) row_start[r + 1] += row_start[r];
    row_edges.resize(row_start[nrows]);
    std::vector<std::size_t> fill(row_start.begin(), row_start.end() - 1);
    for (std::size_t i = 0; i < m; ++i) {
      for (int r = static_cast<int>(std::floor(ey0[i])); r <= static_cast<int>(std::floor(ey1[i])); ++r)
        row_edges[fill[r - row0]++] = i;
    }
  }
  auto winding = [&](double x, double y) {
    const double fr = std::floor(y) - row0;
    if (!(fr >= 0 && fr < nrows)) return 0;
    const std::size_t r = static_cast<std::size_t>(fr);
    int w = 0;
    for (std::size_t k = row_start[r]; k < row_start[r + 1]; ++k) {
      const std::size_t i = row_edges[k];
      const std::size_t i2 = nxt(i);
      const double ax = px[i], ay = py[i], bx = px[i2], by = py[i2];
      if (ay <= y) {
        if (by > y && (bx - ax) * (y - ay) - (x - ax) * (by - ay) > 0) ++w;
      } else if (by <= y && (bx - ax) * (y - ay) - (x - ax) * (by - ay) < 0) {
        --w;
      }
    }
    return w;
  };
  // Kept pieces, oriented with the filled side on the left (y-up sense).
  std::vector<std::pair<int, int>> kept;
  for (std::size_t i = 0; i < m; ++i) {
    auto& sp = splits[i];
    std::sort(sp.begin(), sp.end(), [](const Split& a, const Split& b) { return a.t < b.t; });
    int prev = vid[i];
    const int last = vid[nxt(i)];
    for (std::size_t k = 0; k <= sp.size(); ++k) {
      const int cur = k < sp.size() ? sp[k].id : last;
      if (cur == prev) continue;
      const double mx = 0.5 * (vx[prev] + vx[cur]), my = 0.5 * (vy[prev] + vy[cur]);
      const double dx = vx[cur] - vx[prev], dy = vy[cur] - vy[prev];
      const double l = std::sqrt(dx * dx + dy * dy);
      const double e = 1e-3 / l;
      const bool in_l = simple || winding(mx - dy * e, my + dx * e) > 0;
      const bool in_r = !simple && winding(mx + dy * e, my - dx * e) > 0;
      if (in_l != in_r) kept.emplace_back(in_l ? prev : cur, in_l ? cur : prev);
      prev = cur;
    }
  }
  std::sort(kept.begin(), kept.end());
  kept.erase(std::unique(kept.begin(), kept.end()), kept.end());
  // kept is sorted by start id: find outgoing edges by binary search.
  std::vector<char> used(kept.size(), 0);
  for (std::size_t e0 = 0; e0 < kept.size(); ++e0) {
    if (used[e0]) continue;
    std::vector<int> loop;
    std::size_t e = e0;
    bool closed = false;
    for (std::size_t guard = 0; guard <= kept.size(); ++guard) {
      used[e] = 1;
      loop.push_back(kept[e].first);
      const int to = kept[e].second;
      if (to == kept[e0].first) {
        closed = true;
        break;
      }
      auto it = std::lower_bound(kept.begin(), kept.end(), std::make_pair(to, -1));
      std::size_t nx = kept.size();
      for (; it != kept.end() && it->first == to; ++it) {
        const std::size_t c = static_cast<std::size_t>(it - kept.begin());
        if (!used[c]) {
          nx = c;
          break;
        }
      }
      if (nx == kept.size()) break;
      e = nx;
    }
    if (!closed) continue;
    // Clipper stores every vertex, intersections included, as integers and
    // then drops repeated points and points collinear with their neighbours
    // (spikes too) until none is left; a loop that collapses to fewer than
    // three points disappears. Doing the same keeps the number of loops (the
    // reference keeps only single-loop expansions) and the vertices equal.
    const std::size_t L = loop.size();
    std::vector<int64_t> qx(L), qy(L);
    for (std::size_t k = 0; k < L; ++k) {
      qx[k] = round_away(vx[loop[k]]);
      qy[k] = round_away(vy[loop[k]]);
    }
    std::vector<std::size_t> prv(L), nxt_(L);
    for (std::size_t k = 0; k < L; ++k) {
      prv[k] = (k + L - 1) % L;
      nxt_[k] = (k + 1) % L;
    }
    std::size_t alive = L, pp = 0, last_ok = L;
    while (alive >= 3) {
      const std::size_t a0 = prv[pp], a2 = nxt_[pp];
      const bool dup = (qx[pp] == qx[a2] && qy[pp] == qy[a2]) || (qx[pp] == qx[a0] && qy[pp] == qy[a0]);
      const bool col = (qy[a0] - qy[pp]) * (qx[pp] - qx[a2]) == (qx[a0] - qx[pp]) * (qy[pp] - qy[a2]);
      if (dup || col) {
        last_ok = L;
        nxt_[a0] = a2;
        prv[a2] = a0;
        --alive;
        pp = a0;
      } else if (pp == last_ok) {
        break;
      } else {
        if (last_ok == L) last_ok = pp;
        pp = a2;
      }
    }
    std::vector<double> poly;
    if (alive >= 3) {
      std::size_t k = pp;
      do {
        poly.push_back(static_cast<double>(qx[k]));
        poly.push_back(static_cast<double>(qy[k]));
        k = nxt_[k];
      } while (k != pp);
    }
    if (poly.size() >= 6) loops.push_back(std::move(poly));
  }
}

}  // namespace dbdetect
