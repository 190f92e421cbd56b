"""Every augmentation moves polygons exactly with the pixels; normalisation follows the cfg."""

import cv2
import numpy as np
import pytest

from dbdetect.data import transforms as T


def _scene(rng, h=120, w=160, n=3):
    """Image with n filled quads, each in its own colour channel value; returns image and polygons."""
    img = np.zeros((h, w, 3), np.uint8)
    polys = []
    for _k in range(n):
        cx, cy = rng.uniform(25, w - 25), rng.uniform(20, h - 20)
        a = rng.uniform(0, np.pi)
        hw, hh = rng.uniform(6, 20), rng.uniform(4, 10)
        c, s = np.cos(a), np.sin(a)
        pts = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]]) @ np.array([[c, s], [-s, c]]) + [cx, cy]
        polys.append(pts.astype(np.float32))
    return img, polys


def _mask_of(shape, poly):
    m = np.zeros(shape[:2], np.uint8)
    # sub-pixel vertices (shift=4) so rounding does not blur the comparison
    cv2.fillPoly(m, [np.round(poly * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return m.astype(bool)


def _draw(img, polys):
    img = img.copy()
    for k, p in enumerate(polys):
        layer = _mask_of(img.shape, p)
        img[layer, k % 3] = 255  # one polygon per channel (n <= 3), overlaps stay visible
    return img


def _check_aligned(img, polys, min_iou=0.85, tol=1):
    assert len(polys) > 0
    for k, p in enumerate(polys):
        drawn = img[:, :, k % 3] > 127
        pm = _mask_of(img.shape, p)
        if drawn.sum() == 0:
            pytest.fail("a drawn polygon vanished")
        inter, union = (drawn & pm).sum(), (drawn | pm).sum()
        assert inter / union >= min_iou, (k, inter / union)
        # every drawn pixel is covered by the transformed polygon, up to `tol` px of resampling blur
        near = cv2.dilate(pm.astype(np.uint8), np.ones((2 * tol + 1, 2 * tol + 1), np.uint8)).astype(bool)
        assert (drawn & ~near).sum() == 0


@pytest.mark.parametrize("seed", range(4))
def test_hflip_aligned(seed):
    img, polys = _scene(np.random.default_rng(seed))
    img = _draw(img, polys)
    out, q = T.hflip(img, polys)
    _check_aligned(out, q, min_iou=0.95)


def test_hflip_exact_on_axis_aligned_box():
    img = np.zeros((10, 20, 3), np.uint8)
    img[2:5, 3:7, 0] = 255
    box = np.array([[3, 2], [6, 2], [6, 4], [3, 4]], np.float32)
    out, (q,) = T.hflip(img, [box])
    np.testing.assert_array_equal(out[:, :, 0] > 0, _mask_of(out.shape, q))
    assert q[:, 0].min() == 20 - 1 - 6 and q[:, 0].max() == 20 - 1 - 3


@pytest.mark.parametrize("angle", [-15, -7.3, 0.0, 4.0, 15])
def test_rotate_aligned(angle):
    img, polys = _scene(np.random.default_rng(int(angle * 10) + 200))
    img = _draw(img, polys)
    out, q = T.rotate(img, polys, angle)
    assert out.shape[0] >= img.shape[0] and out.shape[1] >= img.shape[1]
    for p in q:  # the grown canvas keeps every polygon inside
        assert p.min() >= -0.5 and p[:, 0].max() <= out.shape[1] - 0.5 and p[:, 1].max() <= out.shape[0] - 0.5
    _check_aligned(out, q)


@pytest.mark.parametrize("seed", range(6))
def test_random_crop_never_cuts_text(seed):
    rng = np.random.default_rng(seed)
    img, polys = _scene(rng)
    img = _draw(img, polys)
    box = T.random_crop_box(img.shape, polys, [False] * 3, rng)
    out, q, ign = T.crop(img, polys, [False] * 3, box)
    assert len(q) == len(ign) >= 1
    x0, y0, x1, y1 = box
    for p in polys:  # each polygon is wholly inside or wholly outside the crop
        inside = (p[:, 0].min() >= x0) & (p[:, 0].max() <= x1 - 1) & (p[:, 1].min() >= y0) & (p[:, 1].max() <= y1 - 1)
        outside = (p[:, 0].max() < x0) | (p[:, 0].min() > x1 - 1) | (p[:, 1].max() < y0) | (p[:, 1].min() > y1 - 1)
        assert inside or outside
    kept = [
        k
        for k, p in enumerate(polys)
        if p[:, 0].min() >= x0 and p[:, 0].max() <= x1 - 1 and p[:, 1].min() >= y0 and p[:, 1].max() <= y1 - 1
    ]
    for k, p in zip(kept, q):
        np.testing.assert_array_equal(out[:, :, k] > 127, _mask_of(out.shape, p))


def test_random_crop_without_text_or_free_lines_is_full_image():
    rng = np.random.default_rng(0)
    assert T.random_crop_box((50, 60, 3), [], [], rng) == (0, 0, 60, 50)
    whole = np.array([[0, 0], [59, 0], [59, 49], [0, 49]], np.float32)
    assert T.random_crop_box((50, 60, 3), [whole], [False], rng) == (0, 0, 60, 50)
    assert T.random_crop_box((50, 60, 3), [whole], [True], rng) == (0, 0, 60, 50)


@pytest.mark.parametrize("shape", [(120, 160), (300, 90), (64, 64)])
def test_resize_pad_aligned(shape):
    rng = np.random.default_rng(shape[0])
    img, polys = _scene(rng, *shape) if min(shape) > 80 else _scene(rng, 120, 160)
    img = _draw(img, polys)
    out, q = T.resize_pad(img, polys, 256)
    assert out.shape == (256, 256, 3)
    scale = 256 / max(img.shape[:2])
    # a drawn source pixel reaches half a pixel past the edge; upscaling stretches that
    _check_aligned(out, q, min_iou=0.8, tol=int(np.ceil(scale)))


@pytest.mark.parametrize("seed", range(8))
def test_full_augment_pipeline_aligned(seed):
    rng = np.random.default_rng(seed)
    img, polys = _scene(rng, 180, 240)
    img = _draw(img, polys)
    # colour jitter off so the drawn channels stay separable; it is checked separately
    out, q, ign = T.augment(img, polys, [False] * 3, 256, np.random.default_rng(seed), color_prob=0.0)
    assert out.shape == (256, 256, 3) and len(q) == len(ign)
    # after a crop, some polygons may be gone: match the survivors by channel content
    for p in q:
        pm = _mask_of(out.shape, p)
        k = int(np.argmax([out[:, :, c][pm].mean() for c in range(3)]))
        drawn = out[:, :, k] > 127
        lab = cv2.connectedComponents(drawn.astype(np.uint8))[1]
        ids = np.bincount(lab[pm & drawn]) if (pm & drawn).any() else np.array([0])
        comp = lab == int(np.argmax(ids))
        assert (comp & pm).sum() / (comp | pm).sum() > 0.75


def test_augment_is_reproducible_from_seed():
    img, polys = _scene(np.random.default_rng(3))
    a = T.augment(img, polys, [False] * 3, 128, np.random.default_rng([1, 2, 3]))
    b = T.augment(img, polys, [False] * 3, 128, np.random.default_rng([1, 2, 3]))
    np.testing.assert_array_equal(a[0], b[0])
    for p, r in zip(a[1], b[1]):
        np.testing.assert_array_equal(p, r)


def test_brightness_contrast_keeps_geometry_and_changes_values():
    img = np.zeros((20, 20, 3), np.uint8)
    img[5:10, 5:10] = 200
    out = T.brightness_contrast(img, np.random.default_rng(1))
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert not np.array_equal(out, img)
    # the bright square is still the brightest region
    assert out[5:10, 5:10].min() > out[12:, 12:].max()


def test_normalize_follows_cfg():
    # training uses the detector's own normalisation (one implementation)
    from dbdetect import preprocess

    assert T.normalize is preprocess.normalize
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 0] = 255  # pure red
    cfg = {"mean": (0.5, 0.25, 0.0), "std": (0.5, 0.25, 1.0), "channel_order": "bgr"}
    x = T.normalize(img, cfg)
    assert x.shape == (3, 2, 3) and x.dtype == np.float32 and x.flags.c_contiguous
    # BGR: channel 0 is blue (0), channel 2 is red (1)
    np.testing.assert_allclose(x[:, 0, 0], [(0 - 0.5) / 0.5, (0 - 0.25) / 0.25, (1 - 0.0) / 1.0], rtol=1e-5, atol=1e-6)
    x = T.normalize(img, {**cfg, "channel_order": "rgb"})
    np.testing.assert_allclose(x[:, 0, 0], [(1 - 0.5) / 0.5, -1.0, 0.0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(10))
def test_random_crop_limits_aspect(seed):
    rng = np.random.default_rng(seed)
    img, polys = _scene(rng, 180, 480)
    x0, y0, x1, y1 = T.random_crop_box(img.shape, polys, [False] * 3, rng, max_aspect=2.0)
    cw, ch = x1 - x0, y1 - y0
    assert (x0, y0, x1, y1) == (0, 0, 480, 180) or max(cw, ch) <= 2.0 * min(cw, ch)
