"""Image normalisation and training augmentations that move polygons with the pixels.

Coordinate convention: a polygon vertex ``(x, y)`` is a pixel *centre* in
the same convention as ``cv2.fillPoly`` and ``cv2.warpAffine`` (pixel ``i``
has centre ``i``). Every geometric transform below maps points with exactly
the mapping OpenCV applies to the pixels, so labels stay aligned.

All random choices come from an explicit ``numpy.random.Generator`` so a
sample's augmentation is reproducible from its seed (exact resume).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# The single normalisation (channel order, mean/std) shared with the detector,
# so training sees exactly the pixels inference will feed the network.
from ..preprocess import normalize  # noqa: F401  (re-exported)


def _affine_points(polys, m: np.ndarray):
    return [(p.astype(np.float64) @ m[:, :2].T + m[:, 2]).astype(np.float32) for p in polys]


def hflip(img: np.ndarray, polys: list):
    """Mirror left-right; pixel ``x`` goes to ``W - 1 - x``."""
    w = img.shape[1]
    out = []
    for p in polys:
        q = p.copy()
        q[:, 0] = (w - 1) - q[:, 0]
        out.append(q[::-1].copy())  # keep the vertex winding (clockwise stays clockwise)
    return np.ascontiguousarray(img[:, ::-1]), out


def rotate(img: np.ndarray, polys: list, angle: float):
    """Rotate by ``angle`` degrees (counter-clockwise) on a canvas grown to keep every pixel."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw = int(math.ceil(w * c + h * s))
    nh = int(math.ceil(w * s + h * c))
    m[0, 2] += (nw - 1) / 2.0 - (w - 1) / 2.0
    m[1, 2] += (nh - 1) / 2.0 - (h - 1) / 2.0
    out = cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out, _affine_points(polys, m)


def brightness_contrast(img: np.ndarray, rng: np.random.Generator, brightness: float = 32.0, contrast: float = 0.3):
    """Random brightness shift in ``[-brightness, brightness]`` and contrast scale ``1 +- contrast``."""
    alpha = rng.uniform(1.0 - contrast, 1.0 + contrast)
    beta = rng.uniform(-brightness, brightness)
    mean = img.reshape(-1, 3).mean(axis=0)
    out = (img.astype(np.float32) - mean) * alpha + mean + beta
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def scan_artefacts(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a scanner or a fax adds to a page: one or more of blur, sensor noise and JPEG blocks.

    Each is drawn with probability 1/2 (at least one is applied), in the order
    a scan goes through them: optics, sensor, compression.
    """
    picks = rng.random(3) < 0.5
    if not picks.any():
        picks[rng.integers(3)] = True
    out = img
    if picks[0]:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=float(rng.uniform(0.3, 1.2)))
    if picks[1]:
        noise = rng.normal(0.0, float(rng.uniform(2.0, 10.0)), size=out.shape[:2] + (1,))
        out = np.clip(out.astype(np.float32) + noise.astype(np.float32), 0, 255).astype(np.uint8)
    if picks[2]:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 91))])
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            out = decoded
    return np.ascontiguousarray(out)


def _allowed_cuts(n: int, spans: list) -> np.ndarray:
    # Cut line c sits between pixel c-1 and c; it may not pass through a text span.
    ok = np.ones(n + 1, dtype=bool)
    for lo, hi in spans:
        lo, hi = max(int(math.floor(lo)), 0), min(int(math.ceil(hi)), n - 1)
        if hi >= lo:
            ok[lo + 1 : hi + 1] = False
    return ok


def _pick_pair(cuts: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    # Choose the two cuts from different free stretches when there are several,
    # so crops tend to contain text rather than sit in one empty gap.
    idx = np.flatnonzero(cuts)
    breaks = np.flatnonzero(np.diff(idx) > 1) + 1
    segments = np.split(idx, breaks)
    if len(segments) > 1:
        a, b = rng.choice(len(segments), size=2, replace=False)
        x = (int(rng.choice(segments[a])), int(rng.choice(segments[b])))
    else:
        first, second = (int(v) for v in rng.choice(segments[0], size=2))
        x = (first, second)
    return min(x), max(x)


def random_crop_box(
    shape,
    polys: list,
    ignore: list,
    rng: np.random.Generator,
    min_crop_ratio: float = 0.1,
    max_tries: int = 20,
    max_aspect: float = 2.0,
) -> tuple[int, int, int, int]:
    """Pick a crop ``(x0, y0, x1, y1)`` (end exclusive) that cuts no text box.

    Crop edges are only placed on rows/columns that no polygon's bounding box
    spans, and the crop must hold at least one whole non-ignored polygon.
    Falls back to the whole image after ``max_tries`` (as the DBNet reference
    ``RandomCropData``). Unlike the reference, crops longer than ``max_aspect``
    times their width (or vice versa) are rejected: a thin strip fitted into
    a square canvas is mostly padding, which wastes compute and skews the
    BatchNorm statistics.
    """
    h, w = shape[:2]
    full = (0, 0, w, h)
    care = [p for p, ig in zip(polys, ignore) if not ig]
    if not care:
        return full
    xcuts = _allowed_cuts(w, [(p[:, 0].min(), p[:, 0].max()) for p in polys])
    ycuts = _allowed_cuts(h, [(p[:, 1].min(), p[:, 1].max()) for p in polys])
    for _ in range(max_tries):
        x0, x1 = _pick_pair(xcuts, rng)
        y0, y1 = _pick_pair(ycuts, rng)
        cw, ch = x1 - x0, y1 - y0
        if cw < min_crop_ratio * w or ch < min_crop_ratio * h or max(cw, ch) > max_aspect * max(min(cw, ch), 1):
            continue
        for p in care:
            if p[:, 0].min() >= x0 and p[:, 0].max() <= x1 - 1 and p[:, 1].min() >= y0 and p[:, 1].max() <= y1 - 1:
                return x0, y0, x1, y1
    return full


def crop(img: np.ndarray, polys: list, ignore: list, box):
    """Cut ``box = (x0, y0, x1, y1)`` out; drop polygons wholly outside it."""
    x0, y0, x1, y1 = box
    out_p, out_i = [], []
    for p, ig in zip(polys, ignore):
        if p[:, 0].max() < x0 or p[:, 0].min() > x1 - 1 or p[:, 1].max() < y0 or p[:, 1].min() > y1 - 1:
            continue
        out_p.append(p - np.array([x0, y0], dtype=np.float32))
        out_i.append(ig)
    return np.ascontiguousarray(img[y0:y1, x0:x1]), out_p, out_i


def resize_pad(img: np.ndarray, polys: list, size: int):
    """Scale to fit ``size x size`` keeping the aspect ratio, pad bottom/right with zeros."""
    h, w = img.shape[:2]
    scale = min(size / w, size / h)
    nw, nh = max(1, min(size, int(round(w * scale)))), max(1, min(size, int(round(h * scale))))
    sx, sy = nw / w, nh / h
    resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)
    canvas = np.zeros((size, size, 3), dtype=img.dtype)
    canvas[:nh, :nw] = resized
    # cv2.resize maps pixel centres by (x + 0.5) * s - 0.5
    out = [((p + 0.5) * np.array([sx, sy], dtype=np.float32) - 0.5).astype(np.float32) for p in polys]
    return canvas, out


def augment(
    img: np.ndarray,
    polys: list,
    ignore: list,
    size: int,
    rng: np.random.Generator,
    flip_prob: float = 0.5,
    max_angle: float = 15.0,
    crop_prob: float = 1.0,
    color_prob: float = 0.5,
    scan_prob: float = 0.0,
):
    """The training pipeline: brightness/contrast, flip, rotate, text-safe crop, resize+pad, scan artefacts.

    Args:
        img: uint8 RGB ``(H, W, 3)``.
        polys: float32 ``(K, 2)`` arrays in image pixels.
        ignore: don't-care flags, one per polygon.
        size: output side (square).
        rng: the sample's random generator.

    Returns:
        ``(image (size, size, 3) uint8, polygons, ignore)``.
    """
    if color_prob > 0 and rng.random() < color_prob:
        img = brightness_contrast(img, rng)
    if flip_prob > 0 and rng.random() < flip_prob:
        img, polys = hflip(img, polys)
    if max_angle > 0:
        img, polys = rotate(img, polys, float(rng.uniform(-max_angle, max_angle)))
    ignore = list(ignore)
    if crop_prob > 0 and rng.random() < crop_prob:
        box = random_crop_box(img.shape, polys, ignore, rng)
        img, polys, ignore = crop(img, polys, ignore, box)
    img, polys = resize_pad(img, polys, size)
    # drawn last, so it never changes the random draws of runs without it (exact resume)
    if scan_prob > 0 and rng.random() < scan_prob:
        img = scan_artefacts(img, rng)
    return img, polys, ignore
