"""Detection scoring with the ICDAR 2015 IoU protocol, and ``dbdetect eval``.

Protocol (Robust Reading Competition, challenge 4 "IoU" script):

* a detection is *don't care* when more than ``area_thresh`` (0.5) of its own
  area lies inside one ``###`` ground-truth region; such detections and the
  ``###`` regions take no part in the scores;
* ground truth and detections are matched one-to-one, greedily in
  (gt, detection) order, when their IoU exceeds ``iou_thresh`` (0.5) and
  neither is matched yet;
* per image and globally: recall = matched / care gt, precision = matched /
  care detections, H-mean = their harmonic mean. Globally an empty
  denominator gives 0; per image no care gt gives recall 1 and precision
  1 (no detections) or 0 (some).

Polygons may have any number of vertices; areas and intersections are exact
polygon clipping (pyclipper, non-zero fill rule).
"""

from __future__ import annotations

import numpy as np
import pyclipper

from . import regions
from .regions import as_ground_truth, as_polygon

_SCALE = float(1 << 16)  # clipper works on integers; 1/65536 px resolution


def _to_path(poly) -> list:
    p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(p).all():
        raise ValueError("polygon has NaN or infinite coordinates")
    return np.round(p * _SCALE).astype(np.int64).tolist()


def _clip_area(subject: list, clip: list | None, op) -> float:
    pc = pyclipper.Pyclipper()
    try:
        pc.AddPath(subject, pyclipper.PT_SUBJECT, True)
        if clip is not None:
            pc.AddPath(clip, pyclipper.PT_CLIP, True)
    except pyclipper.ClipperException:
        return 0.0  # degenerate (fewer than 3 distinct points / zero area)
    paths = pc.Execute(op, pyclipper.PFT_NONZERO, pyclipper.PFT_NONZERO)
    # outer rings come back positive, holes negative
    return sum(pyclipper.Area(q) for q in paths) / (_SCALE * _SCALE)


def polygon_area(poly) -> float:
    """Area of a polygon (self-intersections resolved with the non-zero rule)."""
    return _clip_area(_to_path(poly), None, pyclipper.CT_UNION)


def polygon_intersection(a, b) -> float:
    """Area of the intersection of two polygons."""
    return _clip_area(_to_path(a), _to_path(b), pyclipper.CT_INTERSECTION)


def polygon_iou(a, b) -> float:
    """Intersection over union of two polygons (0 when the union is empty)."""
    inter = polygon_intersection(a, b)
    union = polygon_area(a) + polygon_area(b) - inter
    return inter / union if union > 0 else 0.0


def _bbox(p):
    return p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()


def _boxes_overlap(a, b) -> bool:
    return not (a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1])


def evaluate_image(gt_polygons, gt_ignore, det_polygons, iou_thresh: float = 0.5, area_thresh: float = 0.5) -> dict:
    """Score the detections of one image.

    Args:
        gt_polygons: ground-truth polygons, each (K, 2) (or flat).
        gt_ignore: per gt, True for don't care (``###``).
        det_polygons: detected polygons, or objects with a ``.polygon``.
        iou_thresh: a match needs IoU strictly above this.
        area_thresh: a detection more than this fraction inside one ``###``
            region is ignored.

    Returns:
        dict with ``precision``, ``recall``, ``hmean``, ``matched``,
        ``num_gt_care``, ``num_det_care``, ``pairs`` (list of [gt, det]
        indices), ``det_dont_care`` (indices).
    """
    gts = [as_polygon(g) for g in gt_polygons]
    dets = [as_polygon(d) for d in det_polygons]
    gt_ignore = [bool(x) for x in gt_ignore]
    if len(gt_ignore) != len(gts):
        raise ValueError(f"{len(gts)} gt polygons but {len(gt_ignore)} ignore flags")
    gt_boxes = [_bbox(g) for g in gts]
    det_boxes = [_bbox(d) for d in dets]
    det_areas = [polygon_area(d) for d in dets]
    det_dc = _dont_care_detections(gts, gt_ignore, gt_boxes, dets, det_boxes, det_areas, area_thresh)
    pairs = _match(gts, gt_ignore, gt_boxes, dets, det_boxes, det_areas, det_dc, iou_thresh)
    n_gt = sum(1 for ig in gt_ignore if not ig)
    n_det = len(dets) - len(det_dc)
    return {
        **_scores(len(pairs), n_gt, n_det),
        "matched": len(pairs),
        "num_gt_care": n_gt,
        "num_det_care": n_det,
        "pairs": pairs,
        "det_dont_care": sorted(det_dc),
    }


def _dont_care_detections(gts, gt_ignore, gt_boxes, dets, det_boxes, det_areas, area_thresh) -> set:
    """Indices of detections lying mostly (> ``area_thresh`` of their area) inside one ``###`` region."""
    det_dc: set[int] = set()
    dc_gts = [i for i, ig in enumerate(gt_ignore) if ig]
    if not dc_gts:
        return det_dc
    for j, d in enumerate(dets):
        if det_areas[j] <= 0:
            continue
        for i in dc_gts:
            if (
                _boxes_overlap(gt_boxes[i], det_boxes[j])
                and polygon_intersection(gts[i], d) / det_areas[j] > area_thresh
            ):
                det_dc.add(j)
                break
    return det_dc


def _match(gts, gt_ignore, gt_boxes, dets, det_boxes, det_areas, det_dc, iou_thresh) -> list:
    """One-to-one [gt, det] pairs, greedily in gt order: the first free detection with IoU > ``iou_thresh``."""
    gt_used = [False] * len(gts)
    det_used = [False] * len(dets)
    pairs = []
    for i, g in enumerate(gts):
        if gt_ignore[i]:
            continue
        g_area = None
        for j, d in enumerate(dets):
            if gt_used[i] or det_used[j] or j in det_dc or not _boxes_overlap(gt_boxes[i], det_boxes[j]):
                continue
            if g_area is None:
                g_area = polygon_area(g)
            inter = polygon_intersection(g, d)
            union = g_area + det_areas[j] - inter
            if union > 0 and inter / union > iou_thresh:
                gt_used[i] = det_used[j] = True
                pairs.append([i, j])
    return pairs


def _scores(matched: int, n_gt: int, n_det: int) -> dict:
    """Precision, recall and H-mean; an image with nothing to find scores recall 1."""
    if n_gt == 0:
        recall, precision = 1.0, (0.0 if n_det > 0 else 1.0)
    else:
        recall = matched / n_gt
        precision = matched / n_det if n_det > 0 else 0.0
    hmean = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "hmean": hmean}


PROTOCOLS = ("icdar2015", "doctr")


def evaluate_detections(
    gt, dets, names=None, iou_thresh: float = 0.5, area_thresh: float = 0.5, protocol: str = "icdar2015"
) -> dict:
    """Score a dataset's detections with the ICDAR 2015 protocol (or docTR's).

    Args:
        gt: per image, a :class:`~dbdetect.data.Sample`, a dict with
            ``polygons``/``ignore`` or a ``(polygons, ignore)`` pair.
        dets: per image, a list of polygons (K, 2) or objects with ``.polygon``.
        names: optional per-image names for the report.
        iou_thresh, area_thresh: see :func:`evaluate_image`.
        protocol: ``icdar2015`` or ``doctr`` (:func:`dbdetect.evaluation.doctr.evaluate_doctr`:
            straight boxes, Hungarian matching at IoU >= ``iou_thresh``; ``area_thresh`` unused).

    Returns:
        dict with global ``precision``, ``recall``, ``hmean``, ``matched``,
        ``num_gt_care``, ``num_det_care`` and ``per_image`` (list of
        :func:`evaluate_image` results with a ``name``); for ``doctr`` the
        keys of :func:`~dbdetect.evaluation.doctr.evaluate_doctr`.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if protocol == "doctr":
        from .doctr import evaluate_doctr

        return evaluate_doctr(gt, dets, names=names, iou_thresh=iou_thresh)
    per_image = []
    matched = n_gt = n_det = 0
    for name, g, d in regions.per_image(gt, dets, names):
        polys, ignore = as_ground_truth(g)
        r = evaluate_image(polys, ignore, d, iou_thresh, area_thresh)
        r = {"name": str(name), **r}
        per_image.append(r)
        matched += r["matched"]
        n_gt += r["num_gt_care"]
        n_det += r["num_det_care"]
    recall = matched / n_gt if n_gt else 0.0
    precision = matched / n_det if n_det else 0.0
    hmean = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "hmean": hmean,
        "matched": matched,
        "num_gt_care": n_gt,
        "num_det_care": n_det,
        "per_image": per_image,
    }


# ---------------------------------------------------------------- model side


def evaluate_model(
    model,
    samples,
    limit_side_len=None,
    limit_type=None,
    box_thresh=None,
    device=None,
    progress: bool = False,
    *,
    thresh=None,
    unclip_ratio=None,
    use_dilation=None,
    score_mode=None,
) -> dict:
    """Score an in-memory ``nn.Module`` on samples (validation during training).

    Runs a :class:`dbdetect.Detector` on a copy of the model (the detector
    fuses BatchNorm in place), so validation uses exactly the pre- and
    post-processing of ``dbdetect eval`` and ``dbdetect detect``.

    Args:
        model: a model with a ``cfg`` dict (train or eval mode; left untouched).
        samples: list of :class:`~dbdetect.data.Sample`.
        limit_side_len, limit_type, box_thresh, thresh, unclip_ratio,
            use_dilation, score_mode: detector settings; ``None`` takes the model cfg's.
        device: torch device for the forward passes (default: the model's).
        progress: show a tqdm bar.

    Returns:
        :func:`evaluate_detections` result.
    """
    import copy

    from tqdm import tqdm

    from ..detector import Detector

    if device is None:
        device = next(model.parameters()).device
    kw = {
        k: v
        for k, v in (
            ("limit_side_len", limit_side_len),
            ("limit_type", limit_type),
            ("box_thresh", box_thresh),
            ("thresh", thresh),
            ("unclip_ratio", unclip_ratio),
            ("use_dilation", use_dilation),
            ("score_mode", score_mode),
        )
        if v is not None
    }
    det = Detector(model=copy.deepcopy(model).eval(), device=str(device), **kw)
    dets = [det(s.image_path) for s in tqdm(samples, desc="val", disable=not progress, leave=False)]
    return evaluate_detections(samples, dets)


# ---------------------------------------------------------------- CLI
