"""Plain NumPy + pyclipper + OpenCV twin of dbdetect.labels.make_targets.

Written in the style of PaddleOCR's MakeShrinkMap + MakeBorderMap (and
MhLiao/DB's MakeSegDetectionData + MakeBorderMap): a Python loop over
polygons, pyclipper round-join offsets for the shrunk and dilated outlines,
cv2.fillPoly on integer points, and a per-polygon NumPy distance map over the
dilated bounding box. Only the tests and bench/labels.py use it.

Deliberate differences from those upstream loaders (they are the semantics
dbdetect documents, so the twin follows them):
- the distance to an edge is the exact point-to-segment distance (upstream
  uses a law-of-cosines formula that falls back to the nearer endpoint on the
  wrong side of some pixels);
- upstream offsets integer points by D (pyclipper truncates floats; this
  twin rounds) and fills the integer outline with cv2.fillPoly, which rounds
  every output vertex and draws the outline too. That makes regions about
  half a pixel wider on every side than the exact offset, with a
  polygon-dependent +-0.3 pixel jitter; on ICDAR 2015 words, whose kernels
  are 3-6 pixels tall, the jitter alone moves IoU by 5-20 % per word.
  dbdetect keeps the half pixel without the jitter, and so does this twin
  by default (``precise=True``): it offsets by D -+ 0.5 on coordinates
  scaled by 2**16 and fills the pixels whose centres lie inside the offset
  outline (even-odd rule). ``precise=False`` runs the upstream integer
  pipeline (for timing it and measuring the gap);
- when the shrink splits a polygon into several pieces all are filled
  (PaddleOCR retries with a larger ratio, MhLiao/DB fills the first piece).
"""

from __future__ import annotations

import cv2
import numpy as np
import pyclipper


def polygon_area(poly: np.ndarray) -> float:
    """Absolute shoelace area of an (N, 2) polygon."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def polygon_length(poly: np.ndarray) -> float:
    """Perimeter of the closed (N, 2) polygon."""
    return float(np.sqrt(((poly - np.roll(poly, -1, axis=0)) ** 2).sum(axis=1)).sum())


SHIFT = 16
SCALE = 1 << SHIFT


def _offset(poly: np.ndarray, delta: float, precise: bool) -> list:
    """Round-join offset of poly by delta; pieces as float (M, 2) arrays."""
    scale = SCALE if precise else 1
    pco = pyclipper.PyclipperOffset()
    if precise:
        pco.ArcTolerance = 0.25 * scale / 16
    pco.AddPath(
        [tuple(p) for p in np.round(poly * scale).astype(np.int64).tolist()],
        pyclipper.JT_ROUND,
        pyclipper.ET_CLOSEDPOLYGON,
    )
    return [np.array(piece, dtype=np.float64).reshape(-1, 2) / scale for piece in pco.Execute(delta * scale)]


TOL = 0.5  # the half-pixel widening of upstream's fillPoly (precise mode only)


def _fill_centres(img: np.ndarray, poly: np.ndarray, value: float) -> None:
    """Set the pixels whose centres lie inside poly (even-odd rule)."""
    h, w = img.shape
    x0, x1 = max(0, int(np.floor(poly[:, 0].min()))), min(w - 1, int(np.ceil(poly[:, 0].max())))
    y0, y1 = max(0, int(np.floor(poly[:, 1].min()))), min(h - 1, int(np.ceil(poly[:, 1].max())))
    if x0 > x1 or y0 > y1:
        return
    ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1].astype(np.float64)
    inside = np.zeros(xs.shape, dtype=bool)
    for i in range(len(poly)):
        (ax, ay), (bx, by) = poly[i], poly[(i + 1) % len(poly)]
        if ay == by:
            continue
        crosses = (ay <= ys) != (by <= ys)
        xc = ax + (ys - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (xs < xc)
    img[y0 : y1 + 1, x0 : x1 + 1][inside] = value


def _fill_offset(img: np.ndarray, poly: np.ndarray, delta: float, value: float, precise: bool) -> bool:
    """Fill poly offset by delta (upstream: by the integer rule). False if nothing is left."""
    if not precise:
        cv2.fillPoly(
            img,
            [np.round(poly).astype(np.int32)]
            if delta == 0
            else [np.round(p).astype(np.int32) for p in _offset(poly, delta, False)],
            value,
        )
        return delta == 0 or bool(_offset(poly, delta, False))
    pieces = _offset(poly, delta + TOL, True)  # widened by the half pixel
    for piece in pieces:
        _fill_centres(img, piece, value)
    return bool(pieces)


def _segment_distance(xs, ys, p1, p2):
    """Exact distance from grid points to the segment p1-p2."""
    dx, dy = p2[0] - p1[0], p2[1] - p1[1]
    len2 = dx * dx + dy * dy
    if len2 > 0:
        t = np.clip(((xs - p1[0]) * dx + (ys - p1[1]) * dy) / len2, 0.0, 1.0)
    else:
        t = np.zeros_like(xs)
    return np.hypot(xs - (p1[0] + t * dx), ys - (p1[1] + t * dy))


def make_shrink_map(polygons, ignore_tags, h, w, shrink_ratio=0.4, min_text_size=8, precise=True):
    """MakeShrinkMap: returns (gt, mask, polygons, ignore_tags) after clamping."""
    gt = np.zeros((h, w), dtype=np.float32)
    mask = np.ones((h, w), dtype=np.float32)
    polys = []
    tags = []
    for poly, tag in zip(polygons, ignore_tags):
        poly = np.array(poly, dtype=np.float64).reshape(-1, 2)
        poly[:, 0] = np.clip(poly[:, 0], 0, w - 1)
        poly[:, 1] = np.clip(poly[:, 1], 0, h - 1)
        polys.append(poly)
        tags.append(bool(tag) or polygon_area(poly) < 1)
    for i, poly in enumerate(polys):
        height = poly[:, 1].max() - poly[:, 1].min()
        width = poly[:, 0].max() - poly[:, 0].min()
        if tags[i] or min(height, width) < min_text_size:
            _fill_offset(mask, poly, 0.0, 0, precise)
            tags[i] = True
            continue
        distance = polygon_area(poly) * (1 - shrink_ratio**2) / polygon_length(poly)
        if not _fill_offset(gt, poly, -distance, 1, precise):
            _fill_offset(mask, poly, 0.0, 0, precise)
            tags[i] = True
    return gt, mask, polys, tags


def draw_border_map(poly, canvas, mask, shrink_ratio, precise=True):
    """MakeBorderMap.draw_border_map with an exact segment distance."""
    poly = np.array(poly, dtype=np.float64)
    area = polygon_area(poly)
    if area <= 0:
        return
    distance = area * (1 - shrink_ratio**2) / polygon_length(poly)
    padded = _offset(poly, distance, precise)[0]
    _fill_offset(mask, poly, distance, 1.0, precise)

    xmin, xmax = int(np.floor(padded[:, 0].min())), int(np.ceil(padded[:, 0].max()))
    ymin, ymax = int(np.floor(padded[:, 1].min())), int(np.ceil(padded[:, 1].max()))
    width, height = xmax - xmin + 1, ymax - ymin + 1
    poly = poly - [xmin, ymin]
    xs = np.broadcast_to(np.arange(width, dtype=np.float64).reshape(1, width), (height, width))
    ys = np.broadcast_to(np.arange(height, dtype=np.float64).reshape(height, 1), (height, width))
    dist = np.zeros((poly.shape[0], height, width), dtype=np.float32)
    for i in range(poly.shape[0]):
        j = (i + 1) % poly.shape[0]
        dist[i] = np.clip(_segment_distance(xs, ys, poly[i], poly[j]) / distance, 0, 1)
    dist = dist.min(axis=0)

    H, W = canvas.shape
    x0, x1 = min(max(0, xmin), W - 1), min(max(0, xmax), W - 1)
    y0, y1 = min(max(0, ymin), H - 1), min(max(0, ymax), H - 1)
    canvas[y0 : y1 + 1, x0 : x1 + 1] = np.fmax(
        1 - dist[y0 - ymin : y1 - ymax + height, x0 - xmin : x1 - xmax + width], canvas[y0 : y1 + 1, x0 : x1 + 1]
    )


def make_targets(
    polygons, ignore_tags, shape, shrink_ratio=0.4, thresh_min=0.3, thresh_max=0.7, min_text_size=8, precise=True
):
    """Reference twin of dbdetect.labels.make_targets (same arguments and keys).

    precise=False runs the upstream integer pipeline (see the module docstring).
    """
    h, w = shape
    gt, mask, polys, tags = make_shrink_map(polygons, ignore_tags, h, w, shrink_ratio, min_text_size, precise)
    canvas = np.zeros((h, w), dtype=np.float32)
    tmask = np.zeros((h, w), dtype=np.float32)
    for poly, tag in zip(polys, tags):
        if not tag:
            draw_border_map(poly, canvas, tmask, shrink_ratio, precise)
    canvas = canvas * (thresh_max - thresh_min) + thresh_min
    return {"shrink_map": gt, "shrink_mask": mask, "thresh_map": canvas.astype(np.float32), "thresh_mask": tmask}


# ----------------------------------------------------------------- comparison helpers
# Shared by tests/test_labels.py and bench/labels.py.


def read_icdar_gt(path):
    """Parse an ICDAR 2015 gt file: 8 numbers then the transcription ('###' = ignore)."""
    polys, tags = [], []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        parts = line.strip().split(",")
        if len(parts) < 9:
            continue
        polys.append(np.array(parts[:8], dtype=np.float64).reshape(4, 2))
        tags.append(",".join(parts[8:]).strip() == "###")
    return polys, tags


def mask_iou(a, b) -> float:
    a, b = a > 0.5, b > 0.5
    union = (a | b).sum()
    return 1.0 if union == 0 else (a & b).sum() / union


def compare(mine, theirs):
    """(shrink IoU, thresh_mask IoU, mean |thresh_map diff| in thresh_mask, ignore-mask IoU)."""
    inside = theirs["thresh_mask"] > 0.5
    diff = float(np.abs(mine["thresh_map"] - theirs["thresh_map"])[inside].mean()) if inside.any() else 0.0
    return (
        mask_iou(mine["shrink_map"], theirs["shrink_map"]),
        mask_iou(mine["thresh_mask"], theirs["thresh_mask"]),
        diff,
        mask_iou(1 - mine["shrink_mask"], 1 - theirs["shrink_mask"]),
    )
