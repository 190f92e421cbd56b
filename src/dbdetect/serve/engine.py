"""The detector behind the service, split into the steps the service runs in different places.

The forward pass and the post-processing run in the batcher's inference thread;
decoding and resizing run there too on a CPU, or in the request's worker thread
(:attr:`Engine.decode_inline`). Each step is the one :class:`dbdetect.Detector`
runs, so an answer equals ``Detector(...)(image)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..batching import forward_group, plan_batches, runtime_pads
from ..detector import Detection, Detector
from ..imageio import load_image
from ..postprocess import boxes_from_prob
from ..preprocess import prepare
from .settings import ServeSettings


@dataclass
class Prepared:
    """One decoded upload: the upright RGB image, the network input, its post-processing settings."""

    img: np.ndarray
    x: np.ndarray
    kwargs: dict[str, Any]
    decode_ms: float


class Engine:
    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.name = str(detector.cfg.get("name") or "model")
        # On a CPU the network's threads take every core, so decoding beside them competes with
        # the pass for the same cores: the inference thread decodes each batch first, as a plain
        # loop does. A GPU waits for the host instead, so there requests decode in their own threads.
        self.decode_inline = str(detector.device).startswith("cpu")

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

    def prepare(self, data: bytes, post: dict[str, Any]) -> Prepared:
        """Decode and resize one upload; ValueError when it is not an image."""
        t0 = time.perf_counter()
        img = load_image(data)
        kwargs = dict(self.detector.post_kwargs)
        kwargs.update({k: v for k, v in post.items() if k != "limit_side_len"})
        x = self.prepare_array(img, post.get("limit_side_len"))
        return Prepared(img, x, kwargs, (time.perf_counter() - t0) * 1e3)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return self.detector._forward(batch)

    def buckets(self, inputs: list[np.ndarray]) -> list[list[int]]:
        """Indices of ``inputs`` that share a forward pass (all of them may: the batcher sized the batch)."""
        return plan_batches([x.shape[-2:] for x in inputs], max(1, len(inputs)), runtime_pads(self.detector))

    def forward_group(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Each input's probability map from one pass over one bucket of :meth:`buckets`."""
        return forward_group(self.detector, inputs)

    def boxes(self, prob: np.ndarray, shape: tuple[int, int], kwargs: dict[str, Any]) -> list[Detection]:
        polys, scores = boxes_from_prob(prob, shape, **kwargs)
        return [Detection(p, float(s)) for p, s in zip(polys, scores)]
