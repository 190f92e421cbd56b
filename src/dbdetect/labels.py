"""DBNet training targets (shrink map/mask, threshold map/mask) built in C++.

Semantics follow the DBNet paper (section 3.3) and the reference loaders
(PaddleOCR MakeShrinkMap + MakeBorderMap, MhLiao/DB MakeSegDetectionData +
MakeBorderMap), computed per polygon inside its bounding box as distance
thresholds instead of polygon offsets:

- points are clamped to the image, as the reference loaders do;
- a polygon is ignored (``shrink_mask`` 0 over it, nothing in the other maps)
  when it is tagged, its area is < 1, the shorter side of its bounding box is
  < ``min_text_size``, or its shrunk kernel covers no pixel;
- D = area * (1 - shrink_ratio**2) / perimeter;
- ``shrink_map`` is 1 on pixels whose centre is inside the polygon (even-odd
  rule) at distance >= D - 0.5 from the outline: the erosion by D (what a
  round-join inward Clipper offset computes) widened by half a pixel;
- ``thresh_mask`` is 1 on pixels inside the polygon or within D + 0.5 of its
  outline (the round-join dilation by D, widened by half a pixel);
- ignored polygons zero ``shrink_mask`` inside or within 0.5 of the outline;
- ``thresh_map`` is the maximum over polygons of 1 - d / D where d < D
  (d = exact distance from the pixel centre to the nearest edge segment),
  rescaled to [thresh_min, thresh_max] (thresh_min elsewhere).

Where the output differs from the reference loaders, and why:
- the half-pixel widening: the loaders fill integer-rounded Clipper outlines
  with cv2.fillPoly, which rounds every vertex and also draws the outline,
  so their regions are about half a pixel wider than the exact offset on
  every side (best fit 0.4-0.6 px at every edge angle on ICDAR 2015), with
  a polygon-dependent +-0.3 px jitter. We keep the half pixel (the kernel
  size models were trained with) and drop the jitter. On ICDAR 2015 words,
  whose kernels are 3-6 pixels tall, that jitter alone makes the per-image
  IoU against the integer pipeline ~0.9-0.97 (see bench/labels.py), while
  against the exact offsets (tests/reference_labels.py) it is >= 0.99;
- distances are exact point-to-segment distances (the upstream
  law-of-cosines formula falls back to the nearer endpoint on some pixels
  beside long edges);
- a shrink that splits the polygon keeps every piece (PaddleOCR retries with a
  larger ratio, MhLiao/DB keeps the first piece);
- "shrinks to nothing" is decided on the pixel grid (no pixel passes the
  shrink threshold) rather than on the continuous offset.

Bad input raises ValueError (values, shapes, lengths) or TypeError (types):
NaN/inf coordinates, fewer than 3 points, non-(N, 2) arrays, non-positive
shape, mismatched lengths. Polygons far outside the image are clamped onto
the border, have zero area, and are ignored (the reference does the same; the
half-pixel fill then zeroes ``shrink_mask`` along that border segment).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from . import _native

MAP_KEYS = ("shrink_map", "shrink_mask", "thresh_map", "thresh_mask")


def _check_shape(shape) -> tuple[int, int]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a (H, W) tuple, got {type(shape).__name__}") from None
    if len(dims) != 2:
        raise ValueError(f"shape must be (H, W), got {dims!r}")
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (numbers.Integral, np.integer)):
            raise TypeError(f"shape entries must be integers, got {dims!r}")
    h, w = int(dims[0]), int(dims[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"shape must be positive, got ({h}, {w})")
    return h, w


def _pack(polygons, ignore_tags):
    """Validate polygons/tags and pack them as (xy (P, 2) f64, offsets (K+1,) i64, ignore (K,) u8)."""
    if isinstance(polygons, np.ndarray) and polygons.ndim == 3:
        # Fast path: a (K, N, 2) array of equal-length polygons (quads).
        if polygons.dtype.kind not in "iuf":
            raise TypeError(f"polygons must be real numbers, got dtype {polygons.dtype}")
        k, n, c = polygons.shape
        if c != 2:
            raise ValueError(f"polygons must have shape (K, N, 2), got {polygons.shape}")
        if k > 0 and n < 3:
            raise ValueError(f"polygons need at least 3 points, got {n}")
        xy = np.ascontiguousarray(polygons.reshape(-1, 2), dtype=np.float64)
        offsets = np.arange(k + 1, dtype=np.int64) * n
    else:
        if isinstance(polygons, (str, bytes)) or not isinstance(polygons, (Sequence, np.ndarray)):
            raise TypeError(f"polygons must be a sequence of (N, 2) arrays, got {type(polygons).__name__}")
        arrays = []
        for i, p in enumerate(polygons):
            a = np.asarray(p)
            if a.dtype.kind not in "iuf":
                raise TypeError(f"polygon {i} must hold real numbers, got dtype {a.dtype}")
            if a.ndim != 2 or a.shape[1] != 2:
                raise ValueError(f"polygon {i} must have shape (N, 2), got {a.shape}")
            if a.shape[0] < 3:
                raise ValueError(f"polygon {i} has {a.shape[0]} points; at least 3 are needed")
            arrays.append(a)
        k = len(arrays)
        if k:
            xy = np.ascontiguousarray(np.concatenate(arrays, axis=0), dtype=np.float64)
            offsets = np.zeros(k + 1, dtype=np.int64)
            np.cumsum([a.shape[0] for a in arrays], out=offsets[1:])
        else:
            xy = np.zeros((0, 2), dtype=np.float64)
            offsets = np.zeros(1, dtype=np.int64)
    tags = np.asarray(ignore_tags)
    if tags.ndim != 1:
        raise ValueError(f"ignore_tags must be a 1-D sequence, got shape {tags.shape}")
    if tags.size and tags.dtype.kind not in "biu":
        raise TypeError(f"ignore_tags must be booleans, got dtype {tags.dtype}")
    if tags.shape[0] != k:
        raise ValueError(f"got {k} polygons but {tags.shape[0]} ignore_tags")
    ignore = np.ascontiguousarray(tags != 0, dtype=np.uint8)
    if not np.isfinite(xy).all():
        bad = int(np.searchsorted(offsets, np.flatnonzero(~np.isfinite(xy).all(axis=1))[0], "right") - 1)
        raise ValueError(f"polygon {bad} has a NaN or infinite coordinate")
    return xy, offsets, ignore


def _outputs(h: int, w: int, out: dict | None) -> dict:
    if out is None:
        # np.empty: the C++ side writes every pixel, so zero-filling here would be wasted.
        return {k: np.empty((h, w), dtype=np.float32) for k in MAP_KEYS}
    if not isinstance(out, dict):
        raise TypeError(f"out must be a dict of arrays, got {type(out).__name__}")
    for k in MAP_KEYS:
        a = out.get(k)
        if not isinstance(a, np.ndarray):
            raise TypeError(f"out[{k!r}] must be a numpy array")
        if a.dtype != np.float32 or a.shape != (h, w) or not a.flags.c_contiguous or not a.flags.writeable:
            raise ValueError(
                f"out[{k!r}] must be a writable C-contiguous float32 array of shape {(h, w)}, got {a.dtype} {a.shape}"
            )
    ids = {id(out[k]) for k in MAP_KEYS}
    if len(ids) != len(MAP_KEYS):
        raise ValueError("out must hold four distinct arrays")
    return {k: out[k] for k in MAP_KEYS}


def _check_params(shrink_ratio, thresh_min, thresh_max, min_text_size):
    vals = dict(shrink_ratio=shrink_ratio, thresh_min=thresh_min, thresh_max=thresh_max, min_text_size=min_text_size)
    for name, v in vals.items():
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.floating, np.integer)):
            raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
        if not np.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
    if not 0.0 <= shrink_ratio < 1.0:
        raise ValueError(f"shrink_ratio must be in [0, 1), got {shrink_ratio}")
    if thresh_min > thresh_max:
        raise ValueError(f"thresh_min ({thresh_min}) must not exceed thresh_max ({thresh_max})")
    return float(shrink_ratio), float(thresh_min), float(thresh_max), float(min_text_size)


def make_targets(
    polygons,
    ignore_tags,
    shape,
    shrink_ratio: float = 0.4,
    thresh_min: float = 0.3,
    thresh_max: float = 0.7,
    min_text_size: float = 8,
    out: dict | None = None,
) -> dict:
    """Build the DBNet training targets of one image.

    Args:
        polygons: sequence of (N_i, 2) arrays (N_i >= 3), x/y in pixels; or a
            (K, N, 2) array.
        ignore_tags: sequence of K bools (True for '###' / don't care).
        shape: (H, W) of the maps.
        shrink_ratio: r in D = area * (1 - r**2) / perimeter, in [0, 1).
        thresh_min, thresh_max: range the threshold map is rescaled to.
        min_text_size: polygons whose bounding box is thinner are ignored.
        out: optional dict of four writable C-contiguous float32 (H, W) arrays
            (keys as returned) to fill in place instead of allocating.

    Returns:
        dict of float32 (H, W) arrays: "shrink_map", "shrink_mask",
        "thresh_map", "thresh_mask".
    """
    h, w = _check_shape(shape)
    params = _check_params(shrink_ratio, thresh_min, thresh_max, min_text_size)
    xy, offsets, ignore = _pack(polygons, ignore_tags)
    maps = _outputs(h, w, out)
    _native.labels_make_targets(xy, offsets, ignore, *(maps[k] for k in MAP_KEYS), *params)
    return maps


def make_targets_batch(
    polygons_list,
    ignore_tags_list,
    shapes,
    shrink_ratio: float = 0.4,
    thresh_min: float = 0.3,
    thresh_max: float = 0.7,
    min_text_size: float = 8,
    threads: int = 0,
) -> list:
    """Build the targets of several images on C++ threads (the GIL is released).

    Args:
        polygons_list: one polygons argument of make_targets per image.
        ignore_tags_list: one ignore_tags argument per image.
        shapes: one (H, W) per image.
        shrink_ratio, thresh_min, thresh_max, min_text_size: as make_targets.
        threads: number of threads; 0 uses every hardware thread.

    Returns:
        list of dicts as returned by make_targets, in input order.
    """
    polygons_list, ignore_tags_list, shapes = list(polygons_list), list(ignore_tags_list), list(shapes)
    if not (len(polygons_list) == len(ignore_tags_list) == len(shapes)):
        raise ValueError(
            f"got {len(polygons_list)} polygon lists, {len(ignore_tags_list)} ignore_tags "
            f"lists and {len(shapes)} shapes"
        )
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (numbers.Integral, np.integer)):
        raise TypeError(f"threads must be an integer, got {type(threads).__name__}")
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    params = _check_params(shrink_ratio, thresh_min, thresh_max, min_text_size)
    jobs, results = [], []
    for i, (polys, tags, shape) in enumerate(zip(polygons_list, ignore_tags_list, shapes)):
        try:
            h, w = _check_shape(shape)
            xy, offsets, ignore = _pack(polys, tags)
        except (ValueError, TypeError) as e:
            raise type(e)(f"image {i}: {e}") from None
        maps = _outputs(h, w, None)
        results.append(maps)
        jobs.append((xy, offsets, ignore, *(maps[k] for k in MAP_KEYS)))
    _native.labels_make_targets_batch(jobs, *params, int(min(threads, 1 << 16)))
    return results
