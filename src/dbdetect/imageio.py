"""Turn whatever image a user holds into one canonical array.

Every entry point (``detect``, the CLI, the training data readers) goes
through :func:`load_image`, so detections and training labels always refer to
the same pixels.

EXIF orientation policy: files and encoded bytes are decoded *upright*, with
the EXIF orientation tag applied, exactly as ``cv2.imread`` and image viewers
do; PIL images get ``ImageOps.exif_transpose``. Returned coordinates and
training labels therefore refer to the rotated (displayed) image, not to the
raw sensor pixels. NumPy arrays carry no EXIF and are used as given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Union

import cv2
import numpy as np

if TYPE_CHECKING:
    import PIL.Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm")

ImageLike = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray, "PIL.Image.Image"]


def _decode(buf: np.ndarray, what: str) -> np.ndarray:
    if buf.size == 0:
        raise ValueError(f"{what} is empty (0 bytes)")
    # IMREAD_COLOR applies the EXIF orientation and gives 3-channel 8-bit BGR.
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot decode {what}: not an image, or the file is corrupt")
    # OpenCV's channel swap, not a reversed NumPy view: copying that view into a
    # contiguous array took 9.5 ms for a 1280 x 720 image, cvtColor 0.2 ms.
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _from_array(arr: np.ndarray, channel_order: str) -> np.ndarray:
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(f"image array must have shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image is empty: shape {arr.shape}")
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = (arr // 257).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError("image array contains NaN or infinite values")
        # Floats in [0, 1] are the common convention (skimage, torchvision);
        # anything larger is taken as already in [0, 255].
        scale = 255.0 if arr.size and float(arr.max()) <= 1.0 else 1.0
        out = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    elif arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"image array dtype must be uint8, uint16 or float, got {arr.dtype}")
    else:
        out = np.clip(arr, 0, 255).astype(np.uint8)
    if out.ndim == 2:
        out = out[:, :, None]
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    elif out.shape[2] == 4:
        out = out[:, :, :3]  # alpha is dropped: text is detected on the colour layers
    if channel_order == "bgr":
        out = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_BGR2RGB)
    return out


def load_image(image: ImageLike, channel_order: str = "rgb") -> np.ndarray:
    """Load an image as a contiguous ``uint8`` RGB array of shape ``(H, W, 3)``.

    Args:
        image: a path (``str`` or ``Path``), the bytes of an encoded image, a
            NumPy array ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` (uint8,
            uint16, or float in [0, 1] or [0, 255]), or a PIL image.
        channel_order: channel order of a NumPy colour array, ``"rgb"``
            (default, as PIL, docTR and EasyOCR) or ``"bgr"`` (arrays from
            ``cv2.imread``). Ignored for files, bytes and PIL images.

    Returns:
        ``np.ndarray`` uint8 ``(H, W, 3)`` in RGB order, EXIF orientation applied
        for files, bytes and PIL images.

    >>> load_image(np.zeros((4, 5), np.uint8)).shape
    (4, 5, 3)
    """
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise FileNotFoundError(f"image file not found: {path}")
        if path.is_dir():
            raise ValueError(f"expected an image file, got a directory: {path}")
        out = _decode(np.fromfile(str(path), dtype=np.uint8), f"image file {path}")
    elif isinstance(image, (bytes, bytearray, memoryview)):
        out = _decode(np.frombuffer(image, dtype=np.uint8), "image bytes")
    elif isinstance(image, np.ndarray):
        out = _from_array(image, channel_order)
    elif type(image).__module__.startswith("PIL."):
        from PIL import ImageOps

        pil = ImageOps.exif_transpose(image)
        out = np.asarray(pil.convert("RGB"))
        if out.size == 0:
            raise ValueError(f"image is empty: size {pil.size}")
    else:
        raise TypeError(f"image must be a path, bytes, a NumPy array or a PIL image, got {type(image).__name__}")
    return np.ascontiguousarray(out)


def list_images(paths: Iterable[str | os.PathLike[str]], recursive: bool = True) -> list[Path]:
    """Expand files and folders into a sorted list of image files."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            it = p.rglob("*") if recursive else p.glob("*")
            found.extend(sorted(q for q in it if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS))
        elif p.exists():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such file or directory: {p}")
    return found
