"""The parts of a ``--qat`` run: calibration from the training set, freezing the ranges, the int8 file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..deploy import qat


def prepare(model, samples, hp: dict, progress: bool) -> qat.QATNet:
    """``model`` fake-quantised, its activation ranges the min and max over ``hp["qat_calibration"]`` images.

    The images are evenly spread over the training samples and resized as the model's
    settings resize at inference (the ranges int8 will run with), not as training crops.
    """
    import torch

    from ..imageio import load_image
    from ..preprocess import prepare as prepare_image

    cfg = model.cfg
    n = min(int(hp["qat_calibration"]), len(samples))
    picks = sorted(set(np.linspace(0, len(samples) - 1, n).round().astype(int).tolist()))
    images = []
    for i in picks:
        img = load_image(samples[i].image_path)
        images.append(torch.from_numpy(prepare_image(img, cfg, cfg["limit_side_len"], cfg["limit_type"]))[None])
    return qat.prepare(model, images, progress=progress)


def maybe_freeze(model, ema, due: bool) -> None:
    """Fix every int8 range of ``model`` (and its moving average) once ``due``."""
    if not due or not isinstance(model, qat.QATNet) or model.qat.get("observers_frozen"):
        return
    model.freeze_observers()
    if ema is not None:
        ema.module.freeze_observers()


def convert_best(out: Path) -> Path:
    """``out/best.pt`` of a ``--qat`` run as ``out/best_int8.torchscript``."""
    import torch

    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    return qat.to_int8(qat.from_checkpoint(best), out / "best_int8.torchscript", best["step"], overwrite=True)
