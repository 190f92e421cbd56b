"""Image -> network input: resize to a multiple of the stride, normalise.

One implementation for detection and evaluation, so the detector feeds the
network exactly what PaddleOCR's ``DetResizeForTest`` + ``NormalizeImage`` do.
"""

from __future__ import annotations

import cv2
import numpy as np

from dbdetect import _native

# Guards against a "min" limit blowing up very elongated images (20000x300 ->
# 49000x736); PaddleOCR has the same kind of cap (max_side_limit).
MAX_SIDE = 4000


def resized_shape(h: int, w: int, limit_side_len: int, limit_type: str, stride: int = 32) -> tuple[int, int]:
    """The (H, W) the network sees for an (h, w) image, both multiples of ``stride``."""
    if limit_type == "max":
        ratio = limit_side_len / max(h, w) if max(h, w) > limit_side_len else 1.0
    elif limit_type == "min":
        ratio = limit_side_len / min(h, w) if min(h, w) < limit_side_len else 1.0
    else:
        raise ValueError(f"limit_type must be 'max' or 'min', got {limit_type!r}")
    if max(h, w) * ratio > MAX_SIDE:
        ratio = MAX_SIDE / max(h, w)
    rh = max(stride, int(round(int(h * ratio) / stride)) * stride)
    rw = max(stride, int(round(int(w * ratio) / stride)) * stride)
    return rh, rw


def _luts(cfg: dict) -> np.ndarray:
    """(3, 256) float32: the normalised value of every uint8 level, per network channel."""
    mean = np.asarray(cfg["mean"], np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(cfg["std"], np.float32) * 255.0)
    levels = np.arange(256, dtype=np.float32)[None, :]
    # The same float32 arithmetic as the direct formula, so the table is bit-identical to it.
    return np.ascontiguousarray((levels - mean[:, None]) * inv_std[:, None], np.float32)


def normalize(img_rgb: np.ndarray, cfg: dict) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float32 (3, H, W) in the model's channel order and scale.

    A uint8 image has only 256 levels per channel, so every output value is a
    table look-up: the native core reads each pixel once and writes the three
    planes in place. Equal bit for bit to the NumPy formula (the fallback for
    other dtypes); faster than cv2.split + cv2.LUT per plane, which it replaced.
    """
    order = (2, 1, 0) if cfg.get("channel_order", "rgb") == "bgr" else (0, 1, 2)
    if img_rgb.dtype != np.uint8 or img_rgb.ndim != 3 or img_rgb.shape[2] != 3:
        img = img_rgb[:, :, list(order)].astype(np.float32)
        mean = np.asarray(cfg["mean"], np.float32) * 255.0
        inv_std = 1.0 / (np.asarray(cfg["std"], np.float32) * 255.0)
        return np.ascontiguousarray(((img - mean) * inv_std).transpose(2, 0, 1))
    img = img_rgb
    if img.strides[1:] != (3, 1) or img.strides[0] < 3 * img.shape[1]:  # e.g. a flipped or column-sliced view
        img = np.ascontiguousarray(img)
    return _native.preprocess_normalize_u8(img, _luts(cfg), order)


def prepare(img_rgb: np.ndarray, cfg: dict, limit_side_len: int, limit_type: str) -> np.ndarray:
    """Resize (bilinear, as PaddleOCR) and normalise one image for the network."""
    h, w = img_rgb.shape[:2]
    rh, rw = resized_shape(h, w, limit_side_len, limit_type, cfg.get("stride", 32))
    resized = img_rgb if (rh, rw) == (h, w) else cv2.resize(img_rgb, (rw, rh), interpolation=cv2.INTER_LINEAR)
    return normalize(resized, cfg)
