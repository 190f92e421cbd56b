"""Ground truth and detections as every scoring protocol reads them."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_polygon(d) -> np.ndarray:
    """A detection (or its ``.polygon``) as a finite float64 ``(K, 2)`` array."""
    p = getattr(d, "polygon", d)
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 1:
        p = p.reshape(-1, 2)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"a polygon must be (K, 2) or flat [x1, y1, ...], got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("polygon has NaN or infinite coordinates")
    return p


def as_ground_truth(g):
    """``(polygons, ignore)`` of a Sample, a dict or a pair."""
    if isinstance(g, dict):
        return g["polygons"], g.get("ignore", [False] * len(g["polygons"]))
    if hasattr(g, "polygons"):
        return g.polygons, g.ignore
    polys, ignore = g
    return polys, ignore


def per_image(gt, dets, names=None) -> list[tuple[str, Any, Any]]:
    """``(name, ground truth, detections)`` per image; the two lists must be as long as each other."""
    gt, dets = list(gt), list(dets)
    if len(gt) != len(dets):
        raise ValueError(f"{len(gt)} ground-truth images but {len(dets)} detection lists")
    if names is None:
        names = [str(getattr(g, "image_path", i)) for i, g in enumerate(gt)]
    return [(str(n), g, d) for n, g, d in zip(names, gt, dets)]
