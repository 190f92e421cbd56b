"""Box matching used by the post-processing tests and benchmark."""

from __future__ import annotations

import cv2
import numpy as np


def poly_iou(a: np.ndarray, b: np.ndarray, scale: int = 4) -> float:
    """IoU of two simple polygons, rasterised at 1/scale pixel (cv2.fillPoly with shift)."""
    a = np.asarray(a, np.float64).reshape(-1, 2)
    b = np.asarray(b, np.float64).reshape(-1, 2)
    lo = np.floor(np.minimum(a.min(0), b.min(0))) - 1
    hi = np.ceil(np.maximum(a.max(0), b.max(0))) + 1
    size = ((hi - lo) * scale).astype(int) + 2
    ma = np.zeros((size[1], size[0]), np.uint8)
    mb = np.zeros_like(ma)
    cv2.fillPoly(ma, [np.round((a - lo) * scale * 16).astype(np.int32)], 1, shift=4)
    cv2.fillPoly(mb, [np.round((b - lo) * scale * 16).astype(np.int32)], 1, shift=4)
    union = int((ma | mb).sum())
    return float((ma & mb).sum()) / union if union else 1.0


def match(ref_polys, ref_scores, polys, scores, iou_thr=0.95, score_tol=0.01):
    """Greedy best-IoU matching both ways.

    Returns dict: n_ref, n_out, ref_matched (ref boxes with an output box of
    IoU >= iou_thr), out_matched (the converse), score_ok (matched ref boxes
    whose best match's score is within score_tol).
    """

    def boxes(ps):
        return [(p.min(0), p.max(0)) for p in ps]

    rb, ob = boxes(ref_polys), boxes(polys)

    def best(i, src, sb, dst, db):
        lo, hi = sb[i]
        top, arg = 0.0, -1
        for j, (l2, h2) in enumerate(db):
            if (l2 > hi).any() or (h2 < lo).any():
                continue
            v = poly_iou(src[i], dst[j])
            if v > top:
                top, arg = v, j
        return top, arg

    ref_matched = score_ok = 0
    for i in range(len(ref_polys)):
        v, j = best(i, ref_polys, rb, polys, ob)
        if v >= iou_thr:
            ref_matched += 1
            score_ok += abs(float(ref_scores[i]) - float(scores[j])) <= score_tol
    out_matched = sum(best(i, polys, ob, ref_polys, rb)[0] >= iou_thr for i in range(len(polys)))
    return dict(
        n_ref=len(ref_polys), n_out=len(polys), ref_matched=ref_matched, out_matched=int(out_matched), score_ok=score_ok
    )


def add(total: dict, part: dict) -> dict:
    for k, v in part.items():
        total[k] = total.get(k, 0) + v
    return total
