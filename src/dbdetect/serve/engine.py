"""The detector behind the service, split into the steps the service runs in different places.

Decoding and resizing run in the request's worker thread, the forward pass and the
post-processing in the batcher's inference thread; each step is the one
:class:`dbdetect.Detector` runs, so an answer equals ``Detector(...)(image)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..detector import Detection, Detector
from ..imageio import load_image
from ..postprocess import boxes_from_prob
from ..preprocess import prepare
from .settings import ServeSettings


class Engine:
    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.name = str(detector.cfg.get("name") or "model")

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> Engine:
        threads = settings.streams_and_threads()[1]
        return cls(Detector(settings.model, device=settings.device, num_threads=threads, **dict(settings.detector)))

    def warm_up(self) -> None:
        """One forward pass, so the first request does not pay for lazy initialisation."""
        img = np.full((256, 256, 3), 255, np.uint8)
        self.forward(self.prepare_array(img, None)[None])

    def prepare_array(self, img: np.ndarray, side: int | None) -> np.ndarray:
        det = self.detector
        return prepare(img, det.cfg, side or det.limit_side_len, det.limit_type)

    def prepare(self, data: bytes, post: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """(upright RGB image, network input, post-processing settings) of one upload."""
        img = load_image(data)
        kwargs = dict(self.detector.post_kwargs)
        kwargs.update({k: v for k, v in post.items() if k != "limit_side_len"})
        return img, self.prepare_array(img, post.get("limit_side_len")), kwargs

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return self.detector._forward(batch)

    def boxes(self, prob: np.ndarray, shape: tuple[int, int], kwargs: dict[str, Any]) -> list[Detection]:
        polys, scores = boxes_from_prob(prob, shape, **kwargs)
        return [Detection(p, float(s)) for p, s in zip(polys, scores)]
