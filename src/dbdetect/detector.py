"""The detection predictor: pre-processing -> model -> native post-processing.

>>> import dbdetect
>>> det = dbdetect.Detector("ppocrv4")                 # doctest: +SKIP
>>> dets = det("street.jpg")                           # doctest: +SKIP
>>> dets[0].polygon.shape, dets[0].score               # doctest: +SKIP
((4, 2), 0.87)
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import postprocess
from .imageio import ImageLike, load_image
from .memory import keep_freed_memory
from .preprocess import prepare
from .runtime.base import Runtime, check_device
from .runtime.choose import open_runtime

__all__ = ["Detection", "Detector", "detect", "to_json"]


@dataclass(frozen=True)
class Detection:
    """One text region: a polygon in original-image pixels and its score.

    ``polygon`` is float32 ``(K, 2)`` of (x, y); for ``box_type="quad"``,
    K == 4, clockwise from the top-left corner.
    """

    polygon: np.ndarray
    score: float

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """Axis-aligned (x_min, y_min, x_max, y_max)."""
        x, y = self.polygon[:, 0], self.polygon[:, 1]
        return float(x.min()), float(y.min()), float(x.max()), float(y.max())

    def to_dict(self) -> dict[str, Any]:
        return {"polygon": np.round(self.polygon.astype(np.float64), 2).tolist(), "score": round(float(self.score), 5)}

    def __repr__(self) -> str:
        pts = ", ".join(f"({x:.0f},{y:.0f})" for x, y in self.polygon)
        return f"Detection(score={self.score:.3f}, polygon=[{pts}])"


def to_json(dets: Sequence[Detection], **extra: Any) -> str:
    """Serialise detections as one JSON object: ``{..extra, "detections": [{"polygon", "score"}, ...]}``."""
    return json.dumps({**extra, "detections": [d.to_dict() for d in dets]}, ensure_ascii=False)


class Detector:
    """A text detector that keeps its model, for repeated use.

    Args:
        model: a registry name (``dbdetect.models.list_models()``), a bundled
            int8 model's name (``dbdetect.models.list_int8_models()``: x86 CPUs), the path of
            a checkpoint written by ``dbdetect train``, an ``.onnx`` file or a
            torch int8 ``.torchscript`` file written by ``dbdetect export``, or
            an ``nn.Module`` with a ``cfg`` dict.
        device: torch device string ("cpu", "cuda", "cuda:1", ...).
        limit_side_len: the side length of the resize policy; ``None`` takes the model's default.
        limit_type: "max" caps the longer side at ``limit_side_len``; "min" raises the
            shorter side to it. Both then round to a multiple of 32. ``None``: the model's.
        thresh: probability threshold of the text map (``None``: the model's recommended
            value, its registry entry's ``cfg``; the same for the settings below).
        box_thresh: minimum mean probability inside a box.
        unclip_ratio: how far a shrunk text region is grown back.
        use_dilation: dilate the binary map before finding contours.
        score_mode: "fast" (mean inside the box) or "slow" (inside the contour).
        max_candidates: at most this many contours per image.
        box_type: "quad" (rotated rectangles) or "poly" (curved polygons).
        min_size: as in :func:`dbdetect.postprocess.boxes_from_prob`.
        channel_order: channel order of NumPy colour images given to this
            detector, "rgb" (default) or "bgr" (``cv2.imread`` output).
        num_threads: intra-op threads of torch (or of the onnxruntime
            session); ``None`` leaves the library's setting.
        backend: "torch" or "onnxruntime" (``pip install "dbdetect[onnx]"``).
            ``None``: onnxruntime for an ``.onnx`` file, torch otherwise. With
            "onnxruntime", a registry name, checkpoint or module is exported
            once into the cache folder of :func:`dbdetect.runtime.onnx.cache_dir`.
            An ``.onnx`` file written by ``dbdetect export`` carries its own
            settings; one without them runs with the PP-OCR defaults and a warning.
        precision: the torch network's number format: "fp32", "fp16", "bf16"
            or "auto" (default: fp16 on CUDA, fp32 on a CPU). The probability
            map comes back as float32 whatever runs; exported models
            (``.onnx``, int8 ``.torchscript``) take only "auto" or "fp32".

    >>> det = Detector("ppocrv4.onnx")                     # doctest: +SKIP
    >>> det = Detector("ppocrv4", backend="onnxruntime")   # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | torch.nn.Module = "ppocrv4",
        device: str = "cpu",
        limit_side_len: int | None = None,
        limit_type: str | None = None,
        thresh: float | None = None,
        box_thresh: float | None = None,
        unclip_ratio: float | None = None,
        box_type: str = "quad",
        use_dilation: bool | None = None,
        score_mode: str | None = None,
        max_candidates: int | None = None,
        min_size: int = 3,
        channel_order: str = "rgb",
        num_threads: int | None = None,
        backend: str | None = None,
        precision: str = "auto",
    ):
        if check_device(device).type == "cpu":
            keep_freed_memory()  # pre-processing's arrays too, not only torch's feature maps
        explicit = dict(
            limit_side_len=limit_side_len,
            limit_type=limit_type,
            thresh=thresh,
            box_thresh=box_thresh,
            unclip_ratio=unclip_ratio,
            use_dilation=use_dilation,
            score_mode=score_mode,
            max_candidates=max_candidates,
        )
        self.runtime: Runtime = open_runtime(model, backend, device, num_threads, explicit, precision)
        self.precision: str = getattr(self.runtime, "precision", "fp32")
        self.backend = self.runtime.backend
        self.device = self.runtime.device
        self.cfg = self.runtime.cfg
        self._init_settings(
            limit_side_len,
            limit_type,
            thresh,
            box_thresh,
            unclip_ratio,
            box_type,
            use_dilation,
            score_mode,
            max_candidates,
            min_size,
            channel_order,
        )

    @property
    def model(self) -> Any:
        """The torch module that runs (None on onnxruntime); assignable, for benchmarks that swap it."""
        return getattr(self.runtime, "module", None)

    @model.setter
    def model(self, module: Any) -> None:
        if not hasattr(self.runtime, "module"):
            raise AttributeError(f"a {self.backend} detector runs no torch module")
        self.runtime.module = module

    def _init_settings(
        self,
        limit_side_len: int | None,
        limit_type: str | None,
        thresh: float | None,
        box_thresh: float | None,
        unclip_ratio: float | None,
        box_type: str,
        use_dilation: bool | None,
        score_mode: str | None,
        max_candidates: int | None,
        min_size: int,
        channel_order: str,
    ) -> None:
        self.limit_side_len = int(limit_side_len if limit_side_len is not None else self.cfg["limit_side_len"])
        self.limit_type = limit_type if limit_type is not None else self.cfg["limit_type"]
        if self.limit_side_len < 32:
            raise ValueError(f"limit_side_len must be >= 32, got {self.limit_side_len}")
        if self.limit_type not in ("max", "min"):
            raise ValueError(f"limit_type must be 'max' or 'min', got {self.limit_type!r}")
        if box_type not in ("quad", "poly"):
            raise ValueError(f"box_type must be 'quad' or 'poly', got {box_type!r}")
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        self.channel_order = channel_order

        def pick(value: Any, key: str, default: Any) -> Any:
            return value if value is not None else self.cfg.get(key, default)

        self.post_kwargs = dict(
            thresh=float(pick(thresh, "thresh", 0.3)),
            box_thresh=float(pick(box_thresh, "box_thresh", 0.6)),
            unclip_ratio=float(pick(unclip_ratio, "unclip_ratio", 1.5)),
            max_candidates=int(pick(max_candidates, "max_candidates", 1000)),
            min_size=int(min_size),
            box_type=box_type,
            score_mode=pick(score_mode, "score_mode", "fast"),
            use_dilation=bool(pick(use_dilation, "use_dilation", False)),
        )

    def __repr__(self) -> str:
        return (
            f"Detector(model={self.cfg.get('name')!r}, backend={self.backend!r}, device={str(self.device)!r}, "
            f"limit_side_len={self.limit_side_len}, limit_type={self.limit_type!r}, "
            + ", ".join(f"{k}={v!r}" for k, v in self.post_kwargs.items())
            + ")"
        )

    # -- stages -----------------------------------------------------------
    def _load(self, image: ImageLike, channel_order: str | None) -> np.ndarray:
        return load_image(image, channel_order or self.channel_order)

    def _prepare(self, img: np.ndarray) -> np.ndarray:
        return prepare(img, self.cfg, self.limit_side_len, self.limit_type)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return self._checked(self.runtime(batch))

    @staticmethod
    def _checked(out: np.ndarray) -> np.ndarray:
        # Post-processing reads only the rows near text, so a broken model
        # (NaN weights or input) would pass unnoticed there: check here.
        if np.isnan(out).any():
            raise ValueError("the model produced NaN probabilities (broken weights or a NaN in the input?)")
        return np.asarray(out, dtype=np.float32)

    def _boxes(self, prob: np.ndarray, shape: tuple[int, int]) -> list[Detection]:
        polys, scores = postprocess.boxes_from_prob(prob, shape, **self.post_kwargs)
        return [Detection(p, float(s)) for p, s in zip(polys, scores)]

    # -- public -----------------------------------------------------------
    def probability_map(self, image: ImageLike, channel_order: str | None = None) -> np.ndarray:
        """The probability map, float32 ``(H', W')`` at the network's input resolution."""
        x = self._prepare(self._load(image, channel_order))
        return np.asarray(self._forward(x[None])[0])

    def __call__(self, image: ImageLike, channel_order: str | None = None) -> list[Detection]:
        """Detect text in one image; returns a list of :class:`Detection`."""
        img = self._load(image, channel_order)
        prob = self._forward(self._prepare(img)[None])[0]
        return self._boxes(prob, img.shape[:2])

    def detect_batch(
        self,
        images: Iterable[ImageLike],
        batch_size: int = 8,
        channel_order: str | None = None,
        workers: int | None = None,
        streams: int | str = "auto",
    ) -> list[list[Detection]]:
        """Detect text in several images; one list of detections per image, in order.

        ``images`` may be any iterable, a generator of paths included. It is
        read as a stream (see :meth:`stream`): only the returned detections
        accumulate, never the decoded images. Images that resize to the same
        network shape share a forward pass; on a GPU, images of different
        shapes share padded passes too (:mod:`dbdetect.batching`), computed
        so that each result still equals the single-image call
        (:mod:`dbdetect.models.padding`).

        >>> Detector().detect_batch(p for p in ["a.jpg", "b.jpg"])  # doctest: +SKIP
        [[Detection(...), ...], [...]]
        """
        return list(self.stream(images, batch_size, channel_order, workers, streams))

    def stream(
        self,
        images: Iterable[ImageLike],
        batch_size: int = 8,
        channel_order: str | None = None,
        workers: int | None = None,
        streams: int | str = "auto",
    ) -> Iterator[list[Detection]]:
        """Yield one list of detections per image, in input order, as they are ready.

        ``workers`` threads decode and pre-process upcoming images while the
        model runs (0: inline). At most about ``4 * batch_size + 2 * workers``
        prepared images are held at once, however long ``images`` is. The
        first image that cannot be read raises its error; for skip-and-go-on
        behaviour use :func:`dbdetect.pipeline.detect_stream`.

        Args:
            images: an iterable of paths, bytes, arrays or PIL images.
            batch_size: images per forward pass (>= 1).
            channel_order: as in :meth:`__call__`.
            workers: pre-processing threads (>= 0); ``None`` chooses (see
                :func:`dbdetect.pipeline.detect_stream`).
            streams: forward passes run at once (>= 1), each with its share
                of torch's CPU threads; ``"auto"`` chooses 1 or 2 by
                measurement on a CPU (see :mod:`dbdetect.pipeline`).

        Returns:
            An iterator of ``list[Detection]``.

        >>> for dets in Detector().stream(Path("scans").glob("*.jpg")):  # doctest: +SKIP
        ...     print(len(dets))
        """
        from .pipeline import detect_stream

        for res in detect_stream(self, images, batch_size, workers, channel_order, streams):
            if res.error is not None:
                raise res.error
            yield res.detections or []


_default: dict[tuple[Any, ...], Detector] = {}
_default_lock = threading.Lock()


def detect(
    image: ImageLike, model: str | os.PathLike[str] | torch.nn.Module = "ppocrv4", device: str = "cpu", **kwargs: Any
) -> list[Detection]:
    """Detect text in one image with a cached :class:`Detector`.

    The first call loads the model (bundled weights, no network); later calls
    with the same arguments reuse it. Keyword arguments are those of
    :class:`Detector`.

    >>> dets = dbdetect.detect("street.jpg")   # doctest: +SKIP
    """
    key = (model if isinstance(model, str) else id(model), device, tuple(sorted(kwargs.items())))
    with _default_lock:
        det = _default.get(key)
        if det is None:
            det = _default[key] = Detector(model, device=device, **kwargs)
    return det(image)
