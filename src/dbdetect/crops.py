"""Crops: each text region as an upright, rectified image, the input a text recogniser needs.

A quad is warped by the perspective transform that maps its corners onto a
rectangle as wide and tall as its longer opposite sides (RapidOCR's
``get_rotate_crop_image``, docTR's ``extract_rcrops``); a polygon of more
points (a curved text) is first replaced by its minimum-area rectangle.
Corners are ordered geometrically (left pair, then right pair, each top
first), so a region rotated by up to 45 degrees comes out upright; a crop at
least 1.5 times as tall as wide is then turned 90 degrees counter-clockwise,
as RapidOCR does, since words and lines are wider than tall.

>>> import numpy as np
>>> img = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
>>> box = np.array([[1, 1], [4, 1], [4, 3], [1, 3]], np.float32)
>>> bool((crop(img, [box])[0] == img[1:3, 1:4]).all())
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from .imageio import ImageLike, load_image

VERTICAL_RATIO = 1.5


def _polygon_of(region: Any, k: int) -> np.ndarray:
    """A region's polygon as float32 ``(K, 2)``: a Detection's ``.polygon``, or the points themselves."""
    pts = getattr(region, "polygon", region)
    try:
        arr = np.asarray(pts, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"detection {k}: expected a polygon of (x, y) points, got {type(pts).__name__}") from None
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 3:
        raise ValueError(f"detection {k}: expected a polygon of shape (K, 2) with K >= 3, got shape {arr.shape}")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"detection {k}: polygon has non-finite (or out-of-range) coordinates")
    return out


def order_corners(quad: np.ndarray) -> np.ndarray:
    """Four corners as top-left, top-right, bottom-right, bottom-left (image axes, y down)."""
    by_x = quad[np.argsort(quad[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.stack([left[0], right[0], right[1], left[1]]).astype(np.float32)


def corners_of(polygon: np.ndarray) -> np.ndarray:
    """The quad a polygon is cropped by: itself when it has 4 points, else its minimum-area rectangle."""
    quad = polygon if len(polygon) == 4 else cv2.boxPoints(cv2.minAreaRect(polygon.astype(np.float32)))
    return order_corners(np.asarray(quad, np.float32))


def crop_quad(image: np.ndarray, quad: np.ndarray, rotate_vertical: bool = True, k: int = 0) -> np.ndarray:
    """The rectified crop of one ordered quad (see :func:`order_corners`) of ``image``."""
    tl, tr, br, bl = quad.astype(np.float64)
    w = max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl))
    h = max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr))
    # a region inside the image is at most its diagonal long; far beyond is a wrong polygon, and
    # warping it would allocate without bound
    limit = 2 * max(image.shape[:2]) + 2
    if w > limit or h > limit:
        raise ValueError(
            f"detection {k}: the region ({w:.0f} x {h:.0f} px) is far larger than the image "
            f"({image.shape[1]} x {image.shape[0]}): are its coordinates in this image's pixels?"
        )
    width, height = max(1, int(round(w))), max(1, int(round(h)))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    m = cv2.getPerspectiveTransform(quad, target)
    out = cv2.warpPerspective(image, m, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    if rotate_vertical and height >= VERTICAL_RATIO * width:
        out = np.ascontiguousarray(np.rot90(out))
    return out


def crop(
    image: ImageLike,
    detections: Sequence[Any],
    channel_order: str = "rgb",
    rotate_vertical: bool = True,
) -> list[np.ndarray]:
    """Each detection's region of ``image`` as an upright, perspective-rectified crop.

    Args:
        image: anything :func:`dbdetect.load_image` accepts (a path, bytes, an array, a PIL image).
        detections: :class:`~dbdetect.Detection` objects, or polygons as ``(K, 2)`` arrays of (x, y)
            in image pixels; quads are cropped by their corners, longer polygons by their
            minimum-area rectangle.
        channel_order: ``"rgb"`` or ``"bgr"``, the order of a NumPy colour ``image``.
        rotate_vertical: turn a crop at least 1.5 times as tall as wide 90 degrees
            counter-clockwise (default True).

    Returns:
        one uint8 RGB array ``(h, w, 3)`` per detection, in order.

    Raises:
        ValueError: a detection that is not a polygon of at least 3 finite points.

    >>> crops = crop("photo.jpg", dbdetect.detect("photo.jpg"))  # doctest: +SKIP
    """
    img = load_image(image, channel_order)
    if isinstance(detections, np.ndarray) and detections.ndim == 2:
        raise ValueError("detections must be a list of polygons; wrap a single (K, 2) polygon in a list")
    polygons = [_polygon_of(d, k) for k, d in enumerate(detections)]
    return [crop_quad(img, corners_of(p), rotate_vertical, k) for k, p in enumerate(polygons)]
