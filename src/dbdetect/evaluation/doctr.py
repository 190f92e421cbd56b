"""Detection scoring with docTR's protocol (``LocalizationConfusion``), the usual one for FUNSD.

* every ground-truth region and every detection becomes its straight
  bounding box (``xmin, ymin, xmax, ymax``);
* per image, ground truth and detections are paired one-to-one by the
  assignment that maximises the summed IoU (the Hungarian method, as
  ``scipy.optimize.linear_sum_assignment`` on ``-IoU``); a pair with IoU >=
  ``iou_thresh`` (0.5) is a match;
* over the dataset: recall = matches / ground truth, precision = matches /
  detections, mean IoU = the mean over detections of their best IoU with
  any ground truth;
* docTR has no don't-care regions: ``###`` ground truth is dropped, and
  detections are all counted.

>>> r = evaluate_doctr([([[[0, 0], [10, 0], [10, 10], [0, 10]]], [False])], [[[[0, 0], [10, 0], [10, 9], [0, 9]]]])
>>> (r["recall"], r["precision"], round(r["mean_iou"], 2))
(1.0, 1.0, 0.9)
"""

from __future__ import annotations

import numpy as np

from . import regions
from .regions import as_ground_truth, as_polygon


def straight_boxes(polygons) -> np.ndarray:
    """``(N, 4)`` float64 ``xmin, ymin, xmax, ymax`` of each polygon (or object with ``.polygon``)."""
    boxes = np.zeros((len(polygons), 4), dtype=np.float64)
    for i, p in enumerate(polygons):
        q = as_polygon(p)
        boxes[i] = q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()
    return boxes


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of straight boxes; 0 where the union is empty."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _hungarian_min(cost: np.ndarray) -> np.ndarray:
    """For an ``(n, m)`` cost with n <= m, the column of each row in a minimum-cost assignment.

    The shortest-augmenting-path form of the Hungarian method with row and
    column potentials, O(n^2 m); the inner minimum over columns is one NumPy
    operation.
    """
    n, m = cost.shape
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    row_of = np.zeros(m + 1, dtype=np.int64)  # column j (1-based) -> row (1-based), 0 free
    way = np.zeros(m + 1, dtype=np.int64)
    c = np.zeros((n + 1, m + 1))
    c[1:, 1:] = cost
    for i in range(1, n + 1):
        row_of[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = row_of[j0]
            free = ~used
            free[0] = False
            cur = c[i0] - u[i0] - v
            better = free & (cur < minv)
            minv[better] = cur[better]
            way[better] = j0
            cand = np.where(free, minv, np.inf)
            j1 = int(np.argmin(cand))
            delta = cand[j1]
            u[row_of[used]] += delta
            v[used] -= delta
            minv[free] -= delta
            j0 = j1
            if row_of[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            row_of[j0] = row_of[j1]
            j0 = j1
    col_of = np.full(n, -1, dtype=np.int64)
    for j in range(1, m + 1):
        if row_of[j]:
            col_of[row_of[j] - 1] = j - 1
    return col_of


def _components(iou: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rows and columns of each connected group of overlapping boxes (pairs outside them have IoU 0)."""
    n, m = iou.shape
    parent = list(range(n + m))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in zip(*np.nonzero(iou > 0)):
        a, b = find(int(i)), find(n + int(j))
        if a != b:
            parent[a] = b
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for i, j in zip(*np.nonzero(iou > 0)):
        rows, cols = groups.setdefault(find(int(i)), ([], []))
        rows.append(int(i))
        cols.append(int(j))
    return [(np.unique(r), np.unique(c)) for r, c in groups.values()]


def assign_max_iou(iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of a one-to-one assignment with the largest summed IoU.

    Pairs with IoU 0 are left out: they add nothing to the sum, and any
    assignment of them is as good as another.
    """
    iou = np.asarray(iou, dtype=np.float64)
    if iou.ndim != 2:
        raise ValueError(f"the IoU matrix must be 2-D, got shape {iou.shape}")
    if not np.isfinite(iou).all():
        raise ValueError("the IoU matrix has NaN or infinite values")
    rows_out, cols_out = [], []
    for rows, cols in _components(iou):
        sub = iou[np.ix_(rows, cols)]
        if len(rows) <= len(cols):
            r, c = np.arange(len(rows)), _hungarian_min(-sub)
        else:
            c, r = np.arange(len(cols)), _hungarian_min(-sub.T)
        keep = sub[r, c] > 0
        rows_out.append(rows[r[keep]])
        cols_out.append(cols[c[keep]])
    if not rows_out:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    r_all, c_all = np.concatenate(rows_out), np.concatenate(cols_out)
    order = np.argsort(r_all)
    return r_all[order], c_all[order]


def evaluate_doctr_image(gt_polygons, det_polygons, iou_thresh: float = 0.5) -> dict:
    """Score one image: ``matched``, ``num_gt``, ``num_det``, ``iou_sum`` and the matched ``pairs``."""
    gt_boxes, det_boxes = straight_boxes(gt_polygons), straight_boxes(det_polygons)
    iou = box_iou(gt_boxes, det_boxes)
    rows, cols = assign_max_iou(iou)
    hit = iou[rows, cols] >= iou_thresh
    return {
        "matched": int(hit.sum()),
        "num_gt": len(gt_boxes),
        "num_det": len(det_boxes),
        "iou_sum": float(iou.max(axis=0).sum()) if iou.size else 0.0,
        "pairs": [[int(r), int(c)] for r, c in zip(rows[hit], cols[hit])],
    }


def evaluate_doctr(gt, dets, names=None, iou_thresh: float = 0.5) -> dict:
    """Score a dataset's detections with docTR's protocol.

    Args:
        gt: per image, a :class:`~dbdetect.data.Sample`, a dict with
            ``polygons``/``ignore`` or a ``(polygons, ignore)`` pair; ignored
            (``###``) regions are dropped.
        dets: per image, a list of polygons or objects with ``.polygon``.
        names: optional per-image names for the report.
        iou_thresh: a pair is a match at IoU >= this.

    Returns:
        dict with global ``recall``, ``precision``, ``hmean``, ``mean_iou``,
        ``matched``, ``num_gt``, ``num_det`` and ``per_image``.
    """
    per_image = []
    for name, g, d in regions.per_image(gt, dets, names):
        polys, ignore = as_ground_truth(g)
        polys = [p for p, ig in zip(polys, ignore) if not ig]
        r = evaluate_doctr_image(polys, list(d), iou_thresh)
        per_image.append({"name": str(name), **r})
    matched = sum(r["matched"] for r in per_image)
    n_gt = sum(r["num_gt"] for r in per_image)
    n_det = sum(r["num_det"] for r in per_image)
    recall = matched / n_gt if n_gt else 0.0
    precision = matched / n_det if n_det else 0.0
    return {
        "protocol": "doctr",
        "recall": recall,
        "precision": precision,
        "hmean": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
        "mean_iou": sum(r["iou_sum"] for r in per_image) / n_det if n_det else 0.0,
        "matched": matched,
        "num_gt": n_gt,
        "num_det": n_det,
        "per_image": per_image,
    }
