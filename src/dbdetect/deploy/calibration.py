"""Calibration images for int8: which files, read how, fed to which quantiser."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np


def calibration_paths(source, n: int = 100) -> list[Path]:
    """Up to ``n`` image files from a folder, a label file (any dbdetect format) or a list.

    Taken evenly spread over the sorted list, so a folder's first images do
    not dominate. Use training images: never calibrate on images you score.
    """
    from ..imageio import IMAGE_EXTENSIONS, list_images

    if isinstance(source, (str, os.PathLike)):
        src = Path(source)
        if not src.exists():
            raise FileNotFoundError(f"calibration source not found: {src}")
        if src.is_dir() or src.suffix.lower() in IMAGE_EXTENSIONS:
            paths = list_images([src])
        else:
            from ..data import load_samples

            paths = [s.image_path for s in load_samples(src)]
    else:
        paths = [Path(p) for p in source]
    if n < 1:
        raise ValueError(f"the number of calibration images must be >= 1, got {n}")
    if not paths:
        raise ValueError(f"calibration source {source} holds no image files ({', '.join(IMAGE_EXTENSIONS[:4])}, ...)")
    if len(paths) > n:
        paths = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, n).round()]
    return paths


def calibration_reader(input_name: str, paths, cfg: dict, limit_side_len, limit_type, progress: bool):
    """A CalibrationDataReader feeding dbdetect-pre-processed images, one per batch."""
    from onnxruntime.quantization import CalibrationDataReader
    from tqdm import tqdm

    from ..imageio import load_image
    from ..preprocess import prepare

    side = int(limit_side_len or cfg["limit_side_len"])
    ltype = limit_type or cfg["limit_type"]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.ok = 0
            self.it = iter(tqdm(paths, desc="calibrate", unit="img", disable=not progress))

        def get_next(self):
            for p in self.it:
                try:
                    img = load_image(p)
                except (ValueError, OSError) as exc:
                    warnings.warn(f"calibration: skipping {p}: {exc}", stacklevel=2)
                    continue
                self.ok += 1
                return {input_name: prepare(img, cfg, side, ltype)[None]}
            return None

    return Reader()


def first_readable(paths, source) -> None:
    """Fail early, with the source named, when no calibration file decodes."""
    from ..imageio import load_image

    for p in paths:
        try:
            load_image(p)
            return
        except (ValueError, OSError):
            continue
    raise ValueError(f"calibration source {source}: none of its {len(paths)} image files is readable")
