"""Draw detections on an image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from .imageio import ImageLike, load_image


def draw(
    image: ImageLike,
    dets: Sequence[Any],
    color: tuple[int, int, int] = (0, 255, 0),
    thickness: int | None = None,
    show_scores: bool = False,
    channel_order: str = "rgb",
) -> np.ndarray:
    """Return a copy of ``image`` (uint8 RGB) with each detection's polygon drawn.

    Args:
        image: anything :func:`dbdetect.load_image` accepts.
        dets: detections (objects with ``.polygon`` and ``.score``).
        color: RGB line colour.
        thickness: line width in pixels; scales with the image when ``None``.
        show_scores: write each score next to its polygon.
    """
    canvas = load_image(image, channel_order).copy()
    if thickness is None:
        thickness = max(1, round(max(canvas.shape[:2]) / 600))
    for d in dets:
        pts = np.round(np.asarray(d.polygon, np.float64)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [pts], True, color, thickness, cv2.LINE_AA)
        if show_scores:
            x, y = pts[:, 0, 0].min(), pts[:, 0, 1].min()
            cv2.putText(
                canvas,
                f"{d.score:.2f}",
                (int(x), max(int(y) - 3, 10)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4 * thickness,
                color,
                max(1, thickness // 2),
                cv2.LINE_AA,
            )
    return np.asarray(canvas)
