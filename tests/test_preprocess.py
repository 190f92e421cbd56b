"""Native normalisation (csrc/normalize.cpp) against its NumPy twin, and its bad input."""

import numpy as np
import pytest

from dbdetect import _native
from dbdetect.preprocess import _luts, normalize, prepare

CFG = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "channel_order": "bgr"}


def reference_normalize(img: np.ndarray, cfg: dict) -> np.ndarray:
    """The plain NumPy formula the look-up tables must reproduce bit for bit."""
    order = [2, 1, 0] if cfg.get("channel_order", "rgb") == "bgr" else [0, 1, 2]
    x = img[:, :, order].astype(np.float32)
    mean = np.asarray(cfg["mean"], np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(cfg["std"], np.float32) * 255.0)
    return np.ascontiguousarray(((x - mean) * inv_std).transpose(2, 0, 1))


@pytest.mark.parametrize("seed", range(12))
def test_native_matches_numpy_twin(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 700, 2))
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    cfg = {
        "mean": tuple(rng.uniform(0, 1, 3)),
        "std": tuple(rng.uniform(0.05, 1, 3)),
        "channel_order": ("rgb", "bgr")[seed % 2],
    }
    if seed % 3 == 0:  # a cropped, row-strided view, as a caller's slice would be
        img = img[::2, w // 4 :]
    elif seed % 3 == 1:  # flipped views (negative strides)
        img = img[::-1, ::-1]
    got = normalize(img, cfg)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, reference_normalize(img, cfg))


def test_large_image_matches_twin():
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (1001, 1300, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        _native.preprocess_normalize_u8(img, _luts(CFG), (2, 1, 0)), reference_normalize(img, CFG)
    )


@pytest.mark.parametrize("w", [1, 2, 3, 5, 7, 1299])
@pytest.mark.parametrize("extra_rows", [0, 1])
def test_streamed_output_matches_twin_at_every_alignment(w, extra_rows):
    # Outputs of 4 MiB or more whose plane size is a multiple of 4 take the
    # non-temporal store path: odd widths start rows at every 16-byte offset, so
    # head, body and tail all run; an odd plane size takes the plain path.
    rng = np.random.default_rng(w)
    h = ((4 << 20) // (12 * w) + 3) // 4 * 4 + 4 + extra_rows
    img = rng.integers(0, 256, (h, w + 1, 3), dtype=np.uint8)[:, 1:]  # row stride != 3 * w
    np.testing.assert_array_equal(
        _native.preprocess_normalize_u8(img, _luts(CFG), (2, 1, 0)), reference_normalize(img, CFG)
    )


def test_every_level_and_empty_images():
    img = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    np.testing.assert_array_equal(normalize(img, CFG), reference_normalize(img, CFG))
    for shape in ((0, 5, 3), (5, 0, 3)):
        out = normalize(np.zeros(shape, np.uint8), CFG)
        assert out.shape == (3,) + shape[:2]


def test_other_dtypes_take_the_numpy_path():
    img = np.random.default_rng(3).uniform(0, 255, (9, 11, 3)).astype(np.float32)
    np.testing.assert_allclose(normalize(img, CFG), reference_normalize(img, CFG), rtol=0, atol=1e-6)


def test_prepare_resizes_then_normalises():
    import cv2

    img = np.random.default_rng(4).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    x = prepare(img, CFG, 180, "min")  # x2 -> 180 x 260 -> multiples of 32
    np.testing.assert_array_equal(x, reference_normalize(cv2.resize(img, (256, 192)), CFG))


GOOD = np.zeros((4, 5, 3), np.uint8)
LUT = _luts(CFG)


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.zeros((4, 5, 4), np.uint8), LUT, (0, 1, 2)), "3 channels"),
        ((np.zeros((4, 5, 6), np.uint8)[:, :, ::2], LUT, (0, 1, 2)), "contiguous"),
        ((np.zeros((4, 10, 3), np.uint8)[:, ::2], LUT, (0, 1, 2)), "contiguous"),
        ((GOOD, LUT[:2], (0, 1, 2)), r"lut must have shape \(3, 256\)"),
        ((GOOD, np.zeros((3, 255), np.float32), (0, 1, 2)), r"lut must have shape \(3, 256\)"),
        ((GOOD, LUT, (0, 1)), "3 channels"),
        ((GOOD, LUT, (0, 1, 3)), "source channels must be 0, 1 or 2"),
        ((GOOD, LUT, (-1, 1, 2)), "source channels must be 0, 1 or 2"),
        ((GOOD[::-1], LUT, (0, 1, 2)), "row stride"),
    ],
)
def test_native_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        _native.preprocess_normalize_u8(*args)


@pytest.mark.parametrize(
    "img", [np.zeros((4, 5, 3), np.float32), np.zeros((4, 5), np.uint8), np.zeros((2, 4, 5, 3), np.uint8)]
)
def test_native_rejects_wrong_dtype_or_rank(img):
    with pytest.raises((ValueError, TypeError)):
        _native.preprocess_normalize_u8(img, LUT, (0, 1, 2))


def test_native_rejects_random_bad_buffers():
    # Random shapes, dtypes and strides: each call returns planes of the right shape or raises, never crashes.
    rng = np.random.default_rng(11)
    for _ in range(200):
        shape = tuple(int(v) for v in rng.integers(0, 6, rng.integers(1, 5)))
        dtype = rng.choice([np.uint8, np.int8, np.float32, np.uint16])
        img = np.zeros(shape, dtype)
        if img.ndim == 3 and rng.random() < 0.5:
            img = img[::-1]
        chans = tuple(int(v) for v in rng.integers(-1, 4, 3))
        try:
            out = _native.preprocess_normalize_u8(img, LUT, chans)
        except (ValueError, TypeError):
            continue
        assert out.shape == (3,) + img.shape[:2]
