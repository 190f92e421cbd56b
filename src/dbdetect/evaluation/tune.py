"""``dbdetect tune``: choose a model's post-processing on a validation set.

Searches a grid of input sizes (``limit_side_len``) and post-processing
settings (``thresh``, ``box_thresh``, ``unclip_ratio``, ``use_dilation``,
``score_mode``),
scores every point with the ICDAR 2015 protocol (:mod:`dbdetect.evaluate`),
and can write the best point into a copy of the checkpoint's ``cfg``, which
:class:`dbdetect.Detector` and ``dbdetect eval`` then use by default.

The network runs once per image and input size; every post-processing
setting of that size reuses the same probability map, so a grid of 3 sizes x
36 settings costs 3 forward passes per image, not 108.

Command line (lists are comma-separated; the defaults are shown)::

    dbdetect tune --data ic15_split/val100 --model runs/ic15/best.pt \\
        --sizes 736,960,1280 --thresh 0.2,0.3 --box-thresh 0.5,0.6,0.7 \\
        --unclip-ratio 1.3,1.5,1.7 --dilation on,off --out runs/ic15/tuned.pt

Python:

>>> from dbdetect.tune import Grid, tune, save_tuned          # doctest: +SKIP
>>> rows = tune("ppocrv4", load_samples("val"), Grid(limit_side_len=(960,)))  # doctest: +SKIP
>>> save_tuned("ppocrv4", rows[0], "tuned.pt")                # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

    from ..data import Sample

# cfg keys a tuned checkpoint sets (those Detector reads by default)
SETTING_KEYS = ("limit_side_len", "limit_type", "thresh", "box_thresh", "unclip_ratio", "use_dilation", "score_mode")
# checkpoint entries only training needs; a tuned copy is for inference and is not resumable
_TRAINING_KEYS = ("optimizer", "scheduler", "scaler", "train_state", "ema")


@dataclass(frozen=True)
class Grid:
    """The settings searched; every combination is one row of the result.

    Args:
        limit_side_len: input sizes (the resize limit of the model's ``limit_type``).
        thresh: binarisation thresholds.
        box_thresh: box score thresholds.
        unclip_ratio: box expansion ratios.
        use_dilation: 2x2 dilation of the bitmap, True and/or False.
        score_mode: how a box is scored against ``box_thresh``: "fast" (mean of
            the map over the box's bounding rectangle, masked by the box) and/or
            "slow" (over the contour itself, PaddleOCR's ``score_mode``).

    >>> len(Grid(limit_side_len=(960,), thresh=(0.3,), box_thresh=(0.5, 0.7)))
    12
    """

    limit_side_len: tuple[int, ...] = (736, 960, 1280)
    thresh: tuple[float, ...] = (0.2, 0.3)
    box_thresh: tuple[float, ...] = (0.5, 0.6, 0.7)
    unclip_ratio: tuple[float, ...] = (1.3, 1.5, 1.7)
    use_dilation: tuple[bool, ...] = (True, False)
    score_mode: tuple[str, ...] = ("fast",)

    def __post_init__(self) -> None:
        for f in fields(self):
            values = getattr(self, f.name)
            values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
            if not values:
                raise ValueError(f"grid: {f.name} needs at least one value")
            object.__setattr__(self, f.name, values)
        for s in self.limit_side_len:
            if isinstance(s, bool) or int(s) != s or s < 32:
                raise ValueError(f"grid: limit_side_len values must be integers >= 32, got {s!r}")
        for name, lo, hi in (("thresh", 0.0, 1.0), ("box_thresh", 0.0, 1.0), ("unclip_ratio", 0.0, math.inf)):
            for v in getattr(self, name):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                    raise ValueError(f"grid: {name} values must be numbers in [{lo}, {hi}], got {v!r}")
        if any(not isinstance(v, bool) for v in self.use_dilation):
            raise ValueError(f"grid: use_dilation values must be True/False, got {self.use_dilation!r}")
        if any(v not in ("fast", "slow") for v in self.score_mode):
            raise ValueError(f"grid: score_mode values must be 'fast' or 'slow', got {self.score_mode!r}")

    def __len__(self) -> int:
        return len(self.limit_side_len) * len(self.post_settings())

    def post_settings(self) -> list[dict[str, Any]]:
        """The post-processing combinations searched for each input size."""
        return [
            dict(thresh=float(t), box_thresh=float(b), unclip_ratio=float(u), use_dilation=d, score_mode=m)
            for t, b, u, d, m in itertools.product(
                self.thresh, self.box_thresh, self.unclip_ratio, self.use_dilation, self.score_mode
            )
        ]


def _is_exported(model: object) -> bool:
    """An ``.onnx`` or int8 ``.torchscript`` file: Detector runs it, but it has no checkpoint to copy."""
    from ..runtime.choose import is_file_of
    from ..runtime.torchscript import SUFFIX as TORCHSCRIPT

    return is_file_of(model, ".onnx") or is_file_of(model, TORCHSCRIPT)


def _as_module(model: Any) -> Any:
    """What tune runs: an unfused module, or an exported file as its path (Detector opens it)."""
    from torch import nn

    from .. import models

    if isinstance(model, nn.Module):
        if getattr(model, "fused", False):
            raise ValueError("the model is fused (BatchNorm folded): pass the unfused model or its checkpoint")
        return model
    if _is_exported(model):
        if not Path(model).is_file():
            raise FileNotFoundError(f"model file not found: {model}")
        return str(model)
    return models.create(model, pretrained=True)


def _check_writable_source(model: object) -> None:
    if _is_exported(model):
        raise ValueError(
            f"{model} is an exported file: tune can score it, but writes settings only into a "
            "checkpoint; tune the checkpoint it was exported from (its settings go into the next "
            "export), or pass the best settings to dbdetect detect / eval"
        )


def _rows(grid: Grid, limit_type: str, counts: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for k, size in enumerate(grid.limit_side_len):
        for j, post in enumerate(grid.post_settings()):
            matched, n_gt, n_det = (int(v) for v in counts[k, j])
            recall = matched / n_gt if n_gt else 0.0
            precision = matched / n_det if n_det else 0.0
            hmean = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
            rows.append(
                {
                    "limit_side_len": int(size),
                    "limit_type": limit_type,
                    **post,
                    "precision": precision,
                    "recall": recall,
                    "hmean": hmean,
                    "matched": matched,
                    "num_gt_care": n_gt,
                    "num_det_care": n_det,
                }
            )
    # best first; among equals the smaller (faster) input, then the grid order
    order = sorted(range(len(rows)), key=lambda i: (-rows[i]["hmean"], rows[i]["limit_side_len"], i))
    return [rows[i] for i in order]


def _score(protocol: str, sample: Sample, polys: list[Any]) -> tuple[int, int, int]:
    """Matched, counted ground truth and counted detections of one image."""
    from .protocol import evaluate_image

    if protocol == "doctr":
        from .doctr import evaluate_doctr_image

        care = [p for p, ig in zip(sample.polygons, sample.ignore) if not ig]
        d = evaluate_doctr_image(care, polys)
        return d["matched"], d["num_gt"], d["num_det"]
    r = evaluate_image(sample.polygons, sample.ignore, polys)
    return r["matched"], r["num_gt_care"], r["num_det_care"]


def tune(
    model: str | os.PathLike[str] | torch.nn.Module,
    samples: Sequence[Sample],
    grid: Grid | dict[str, Any] | None = None,
    limit_type: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    protocol: str = "icdar2015",
) -> list[dict[str, Any]]:
    """Score every grid point on labelled samples (ICDAR 2015 protocol, or docTR's), best first.

    Each image is decoded once and goes through the network once per input
    size; all post-processing settings of that size share the probability
    map. The global counts are those :func:`dbdetect.evaluate.evaluate_model`
    reports for the same settings.

    Args:
        model: registry name, checkpoint path, unfused ``nn.Module`` with a ``cfg``, or
            an exported ``.onnx`` / int8 ``.torchscript`` file (to score its settings;
            :func:`save_tuned` writes only checkpoints).
        samples: list of :class:`~dbdetect.data.Sample` (``load_samples(...)``).
        grid: a :class:`Grid` (or a dict of its fields); default ``Grid()``.
        limit_type: "min" or "max" for every size; default the model's.
        device: torch device of the forward passes.
        progress: show a tqdm bar (images x sizes).
        protocol: ``icdar2015`` or ``doctr`` (see :func:`dbdetect.evaluation.protocol.evaluate_detections`);
            with ``doctr`` the ``num_gt_care`` and ``num_det_care`` count every region.

    Returns:
        list of dicts, one per grid point, sorted by H-mean (best first):
        the settings (:data:`SETTING_KEYS`) and ``precision``, ``recall``,
        ``hmean``, ``matched``, ``num_gt_care``, ``num_det_care``.
    """
    from tqdm import tqdm

    from .. import postprocess
    from ..detector import Detector
    from ..imageio import load_image
    from .protocol import PROTOCOLS

    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    grid = Grid(**grid) if isinstance(grid, dict) else (grid or Grid())
    samples = list(samples)
    if not samples:
        raise ValueError("tune needs at least one labelled image")
    net = _as_module(model)
    detectors = [
        Detector(net, device=device, limit_side_len=int(s), limit_type=limit_type) for s in grid.limit_side_len
    ]
    posts = grid.post_settings()
    counts = np.zeros((len(detectors), len(posts), 3), np.int64)  # matched, care gt, care detections
    with tqdm(total=len(samples) * len(detectors), desc="tune", unit="pass", disable=not progress) as bar:
        for s in samples:
            img = load_image(s.image_path)
            for k, det in enumerate(detectors):
                prob = det.probability_map(img, channel_order="rgb")
                for j, post in enumerate(posts):
                    polys, _ = postprocess.boxes_from_prob(prob, img.shape[:2], **{**det.post_kwargs, **post})
                    counts[k, j] += _score(protocol, s, polys)
                bar.update(1)
    return _rows(grid, detectors[0].limit_type, counts)


def _check_out(path: str | os.PathLike[str], overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists: pass --overwrite (overwrite=True) to replace it, or choose another path")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name such as {path / 'tuned.pt'}")
    return path


def save_tuned(
    model: str | os.PathLike[str] | torch.nn.Module,
    settings: dict[str, Any],
    out: str | os.PathLike[str],
    overwrite: bool = False,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint whose ``cfg`` carries ``settings`` (a :func:`tune` row).

    A checkpoint path is copied without its training state (optimizer,
    scheduler, ...), so the copy is for inference; a registry name or a
    module becomes a checkpoint of its weights. ``Detector(out)`` and
    ``dbdetect eval --model out`` then use the settings by default.

    Args:
        model: checkpoint path, registry name or unfused ``nn.Module``.
        settings: dict[str, Any] with the :data:`SETTING_KEYS` (extra keys are ignored).
        out: the new checkpoint file; never replaced unless ``overwrite``.
        info: stored under the checkpoint's ``"tuned"`` key (data, scores...).

    Returns:
        ``out`` as a Path.

    >>> save_tuned("ppocrv4", {"limit_side_len": 960, "thresh": 0.3}, "v4_960.pt")  # doctest: +SKIP
    """
    import torch

    _check_writable_source(model)
    out = _check_out(out, overwrite)
    new = {k: settings[k] for k in SETTING_KEYS if k in settings}
    if not new:
        raise ValueError(f"settings hold none of {', '.join(SETTING_KEYS)}")
    if isinstance(model, (str, os.PathLike)) and Path(model).is_file():
        ckpt = torch.load(model, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or not {"arch", "model"} <= set(ckpt):
            raise ValueError(f"{model} is not a dbdetect checkpoint (expected a dict with 'arch' and 'model')")
        ckpt = {k: v for k, v in ckpt.items() if k not in _TRAINING_KEYS}
        ckpt["cfg"] = {**(ckpt.get("cfg") or {}), **new}
    else:
        net = _as_module(model)
        ckpt = {
            "arch": net.cfg["arch"],
            "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "cfg": {**net.cfg, **new},
        }
    if info is not None:
        ckpt["tuned"] = info
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, out)
    return out


def format_table(rows: list[dict[str, Any]], show: int | None = None) -> str:
    """The rows as a text table, best first, the best marked with ``*``."""
    head = (
        f"{'':2}{'side':>5} {'thresh':>6} {'box':>5} {'unclip':>6} {'dil':>4} {'score':>5} {'P':>7} {'R':>7} {'H':>7}"
    )
    lines = [head]
    for i, r in enumerate(rows[:show] if show else rows):
        lines.append(
            f"{'*' if i == 0 else '':2}{r['limit_side_len']:>5} {r['thresh']:>6g} {r['box_thresh']:>5g} "
            f"{r['unclip_ratio']:>6g} {'on' if r['use_dilation'] else 'off':>4} {r.get('score_mode', 'fast'):>5} "
            f"{100 * r['precision']:7.2f} {100 * r['recall']:7.2f} {100 * r['hmean']:7.2f}"
        )
    if show and len(rows) > show:
        lines.append(f"  ... {len(rows) - show} more rows (--show 0 prints all, --json saves them)")
    return "\n".join(lines)


# ---------------------------------------------------------------- CLI
