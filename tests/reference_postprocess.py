"""Plain Python reference for dbdetect.postprocess (tests and benchmarks only).

PaddleOCR ``DBPostProcess`` semantics written out with cv2.findContours,
cv2.minAreaRect, cv2.fillPoly and pyclipper, one contour at a time.
"""

from __future__ import annotations

import cv2
import numpy as np
import pyclipper


def _mini_box(contour):
    rect = cv2.minAreaRect(contour)
    pts = sorted(list(cv2.boxPoints(rect)), key=lambda p: p[0])
    a, d = (0, 1) if pts[1][1] > pts[0][1] else (1, 0)
    b, c = (2, 3) if pts[3][1] > pts[2][1] else (3, 2)
    return np.array([pts[a], pts[b], pts[c], pts[d]]), min(rect[1])


def _mean_in_polygon(prob, poly):
    h, w = prob.shape
    poly = np.asarray(poly).reshape(-1, 2).copy()
    x0 = int(np.clip(np.floor(poly[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(poly[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(poly[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(poly[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    poly[:, 0] = poly[:, 0] - x0
    poly[:, 1] = poly[:, 1] - y0
    cv2.fillPoly(mask, poly.reshape(1, -1, 2).astype(np.int32), 1)
    return cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0]


def _unclip(poly, ratio):
    poly = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    length = np.linalg.norm(poly - np.roll(poly, -1, axis=0), axis=1).sum()
    dist = area * ratio / length if length > 0 else 0.0
    off = pyclipper.PyclipperOffset()
    off.AddPath(np.asarray(poly).tolist() if False else poly, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return off.Execute(dist)


def boxes_from_prob(
    prob,
    dest_shape,
    thresh=0.3,
    box_thresh=0.6,
    unclip_ratio=1.5,
    max_candidates=1000,
    min_size=3,
    box_type="quad",
    score_mode="fast",
    use_dilation=False,
):
    """Reference twin of dbdetect.postprocess.boxes_from_prob (same arguments/returns)."""
    dest_h, dest_w = dest_shape
    h, w = prob.shape
    bitmap = (prob > thresh).astype(np.uint8)
    if use_dilation:
        bitmap = cv2.dilate(bitmap, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(bitmap * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    polys, scores = [], []
    for contour in contours[:max_candidates]:
        if box_type == "quad":
            box, sside = _mini_box(contour)
            if sside < min_size:
                continue
            if score_mode == "fast":
                score = _mean_in_polygon(prob, box)
            else:
                score = _mean_in_polygon(prob, contour)
            if box_thresh > score:
                continue
            # pyclipper truncates the float corners to integers.
            expanded = _unclip(box.astype(np.float32), unclip_ratio)
            if not expanded:
                continue
            box, sside = _mini_box(np.array(expanded).reshape(-1, 1, 2))
            if sside < min_size + 2:
                continue
            box = np.array(box)
            box[:, 0] = np.clip(np.round(box[:, 0] / w * dest_w), 0, dest_w)
            box[:, 1] = np.clip(np.round(box[:, 1] / h * dest_h), 0, dest_h)
            polys.append(box.astype(np.float32))
        else:
            eps = 0.002 * cv2.arcLength(contour, True)
            pts = cv2.approxPolyDP(contour, eps, True).reshape(-1, 2)
            if pts.shape[0] < 4:
                continue
            score = _mean_in_polygon(prob, pts)
            if box_thresh > score:
                continue
            expanded = _unclip(pts, unclip_ratio)
            if len(expanded) != 1:
                continue
            box = np.array(expanded[0]).reshape(-1, 2)
            _, sside = _mini_box(box.reshape(-1, 1, 2).astype(np.int32))
            if sside < min_size + 2:
                continue
            box = box.astype(np.float64)
            box[:, 0] = np.clip(np.round(box[:, 0] / w * dest_w), 0, dest_w)
            box[:, 1] = np.clip(np.round(box[:, 1] / h * dest_h), 0, dest_h)
            polys.append(box.astype(np.float32))
        scores.append(score)
    return polys, np.array(scores, dtype=np.float32)
