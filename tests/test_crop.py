"""`dbdetect.crop` on real ICDAR 2015 boxes: slices, rotated boxes upright, polygons, bad input,
and `dbdetect detect --crops`."""

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

import dbdetect
from dbdetect.crops import corners_of, order_corners
from dbdetect.data import load_samples


@pytest.fixture(scope="module")
def sample(ic15):
    # img_108 of the test set: 13 legible word boxes
    (s,) = [s for s in load_samples(ic15 / "test") if s.image_path.name == "img_108.jpg"]
    img = dbdetect.load_image(s.image_path)
    boxes = [p for p, ign in zip(s.polygons, s.ignore) if not ign]
    assert len(boxes) == 13
    return img, boxes


def _integer_box(poly):
    x0, y0 = np.floor(poly.min(0)).astype(int)
    x1, y1 = np.ceil(poly.max(0)).astype(int)
    return x0, y0, x1, y1, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def test_an_axis_aligned_box_is_the_slice(sample):
    img, boxes = sample
    checked = 0
    for poly in boxes:
        x0, y0, x1, y1, box = _integer_box(poly)
        if y1 - y0 >= 1.5 * (x1 - x0):
            continue
        checked += 1
        # corners in any order: the crop orders them itself
        (piece,) = dbdetect.crop(img, [box[[2, 0, 3, 1]]])
        np.testing.assert_array_equal(piece, img[y0:y1, x0:x1])
    assert checked >= 10


def _rotate(img, pts, degrees):
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    out = cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    return out, (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)


@pytest.mark.parametrize("degrees", [20, -35])
def test_a_rotated_box_comes_out_upright(sample, degrees):
    img, boxes = sample
    checked = 0
    for poly in boxes:
        x0, y0, x1, y1, box = _integer_box(poly)
        if y1 - y0 >= 1.5 * (x1 - x0) or min(x1 - x0, y1 - y0) < 12:
            continue
        checked += 1
        turned, quad = _rotate(img, box, degrees)
        (piece,) = dbdetect.crop(turned, [quad])
        assert abs(piece.shape[0] - (y1 - y0)) <= 1 and abs(piece.shape[1] - (x1 - x0)) <= 1
        upright = cv2.resize(img[y0:y1, x0:x1], piece.shape[1::-1]).astype(np.float32)
        err = np.abs(piece.astype(np.float32) - upright).mean()
        flipped = np.abs(piece.astype(np.float32) - upright[::-1, ::-1]).mean()
        assert err < 12 and err < 0.5 * flipped, (err, flipped)
    assert checked >= 5


def test_tall_crops_are_turned_unless_asked_not_to(sample):
    img, _ = sample
    box = np.array([[10, 10], [30, 10], [30, 70], [10, 70]], np.float32)
    (turned,) = dbdetect.crop(img, [box])
    (kept,) = dbdetect.crop(img, [box], rotate_vertical=False)
    assert kept.shape == (60, 20, 3) and turned.shape == (20, 60, 3)
    np.testing.assert_array_equal(turned, np.rot90(img[10:70, 10:30]))


def test_a_curved_polygon_uses_its_minimum_area_rectangle(sample):
    img, _ = sample
    # an 8-point outline of the rectangle (100, 50)-(160, 80)
    poly = np.array([[100, 50], [130, 50], [160, 50], [160, 80], [130, 80], [100, 80], [100, 65], [160, 65]], float)
    np.testing.assert_array_equal(
        order_corners(corners_of(poly.astype(np.float32))), [[100, 50], [160, 50], [160, 80], [100, 80]]
    )
    (piece,) = dbdetect.crop(img, [poly])
    np.testing.assert_array_equal(piece, img[50:80, 100:160])


def test_detections_and_bgr_arrays(sample):
    img, boxes = sample
    dets = dbdetect.detect(img)
    assert dets
    crops = dbdetect.crop(img, dets)
    assert len(crops) == len(dets) and all(c.dtype == np.uint8 and c.ndim == 3 and c.size for c in crops)
    bgr = dbdetect.crop(np.ascontiguousarray(img[:, :, ::-1]), dets[:1], channel_order="bgr")
    np.testing.assert_array_equal(bgr[0], crops[0])
    assert dbdetect.crop(img, []) == []


@pytest.mark.parametrize(
    "dets, message",
    [
        ([np.zeros((2, 2))], "K >= 3"),
        ([np.zeros((4, 3))], "shape \\(K, 2\\)"),
        ([[[0, 0], [1, np.nan], [1, 1]]], "non-finite"),
        ([["a", "b", "c"]], "polygon of \\(x, y\\) points|shape"),
        ([object()], "polygon"),
        ([[[0, 0], [1e9, 0], [1e9, 5], [0, 5]]], "far larger than the image"),
        (np.zeros((4, 2)), "wrap a single"),
    ],
)
def test_bad_detections_are_named(sample, dets, message):
    img, _ = sample
    with pytest.raises(ValueError, match=message):
        dbdetect.crop(img, dets)


def test_random_bad_polygons_never_crash(sample):
    img, _ = sample
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(0, 7))
        pts = rng.normal(32, 60, (k, int(rng.integers(1, 4))))
        if rng.random() < 0.2 and pts.size:
            pts.flat[0] = rng.choice([np.inf, -np.inf, np.nan, 1e12, -1e300])
        try:
            out = dbdetect.crop(img[:64, :64], [pts])
        except ValueError:
            continue
        assert out[0].dtype == np.uint8 and out[0].shape[0] >= 1 and out[0].shape[1] >= 1


def test_cli_writes_crops(ic15, tmp_path):
    shutil.copy(ic15 / "test" / "images" / "img_108.jpg", tmp_path / "a.jpg")
    out = tmp_path / "crops"
    r = subprocess.run(
        [sys.executable, "-m", "dbdetect", "detect", "--no-progress", str(tmp_path / "a.jpg"), "--crops", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert len(rec["crops"]) == len(rec["polygons"]) > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"a_{k}.png" for k in range(len(rec["polygons"])))
    first = cv2.imread(rec["crops"][0])
    assert first is not None and first.size
    r = subprocess.run(
        [sys.executable, "-m", "dbdetect", "detect", str(tmp_path / "a.jpg"), "--crops", str(out), "--ray"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "run them without --ray" in r.stderr
