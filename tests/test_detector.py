"""The inference API: input types, batching, serialisation, bad input, accuracy floor."""

import json

import numpy as np
import pytest
import torch

import dbdetect
from dbdetect import Detection, Detector

SAMPLE = [
    "img_1.jpg",
    "img_2.jpg",
    "img_5.jpg",
    "img_10.jpg",
    "img_25.jpg",
    "img_37.jpg",
    "img_61.jpg",
    "img_108.jpg",
    "img_150.jpg",
    "img_222.jpg",
    "img_301.jpg",
    "img_444.jpg",
]


@pytest.fixture(scope="module")
def det():
    return Detector("ppocrv4", limit_side_len=736, limit_type="min")


@pytest.fixture(scope="module")
def image_path(ic15):
    return ic15 / "test" / "images" / "img_1.jpg"


def _same(a, b, tol=1.0):
    assert len(a) == len(b)
    for x, y in zip(sorted(a, key=lambda d: tuple(d.polygon[0])), sorted(b, key=lambda d: tuple(d.polygon[0]))):
        assert np.abs(x.polygon - y.polygon).max() <= tol
        assert abs(x.score - y.score) <= 1e-3


def test_every_input_type_gives_the_same_detections(det, image_path):
    from PIL import Image

    from dbdetect.imageio import load_image

    ref = det(str(image_path))
    assert len(ref) > 0
    rgb = load_image(image_path)
    _same(ref, det(image_path))  # Path
    _same(ref, det(image_path.read_bytes()))  # encoded bytes
    _same(ref, det(rgb))  # NumPy RGB
    _same(ref, det(np.ascontiguousarray(rgb[:, :, ::-1]), channel_order="bgr"))  # cv2.imread style
    _same(ref, det(Image.open(image_path)))  # PIL
    _same(ref, det(rgb.astype(np.float32) / 255.0))  # float in [0, 1]
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    _same(ref, det(rgba))  # RGBA: alpha dropped
    gray = det(rgb.mean(axis=2).astype(np.uint8))  # grayscale works too
    assert all(isinstance(d, Detection) for d in gray)


def test_detection_fields_and_json(det, image_path):
    dets = det(image_path)
    for d in dets:
        assert d.polygon.dtype == np.float32 and d.polygon.shape == (4, 2)
        assert 0 <= d.score <= 1
        assert (d.polygon[:, 0] >= 0).all() and (d.polygon[:, 0] <= 1280).all()
        assert (d.polygon[:, 1] >= 0).all() and (d.polygon[:, 1] <= 720).all()
    doc = json.loads(dbdetect.to_json(dets, path="x.jpg"))
    assert doc["path"] == "x.jpg" and len(doc["detections"]) == len(dets)
    assert np.allclose(np.array(doc["detections"][0]["polygon"]), dets[0].polygon, atol=0.01)


def test_batch_equals_single_calls(det, ic15):
    paths = [ic15 / "test" / "images" / n for n in SAMPLE[:3]]
    small = np.zeros((100, 300, 3), np.uint8)
    batch = det.detect_batch([*paths, small], batch_size=2)
    assert len(batch) == 4
    for p, b in zip(paths, batch):
        _same(det(p), b, tol=1e-3)
    assert batch[3] == []


def test_probability_map_shape(det, image_path):
    prob = det.probability_map(image_path)
    assert prob.dtype == np.float32 and prob.shape == (736, 1312)
    assert 0.0 <= prob.min() and prob.max() <= 1.0


def test_module_level_detect_reuses_the_detector(image_path):
    a = dbdetect.detect(image_path, limit_side_len=736, limit_type="min")
    n = len(dbdetect.detector._default)
    b = dbdetect.detect(image_path, limit_side_len=736, limit_type="min")
    assert len(dbdetect.detector._default) == n
    _same(a, b, tol=0)


def test_poly_box_type(image_path):
    det = Detector("ppocrv4", box_type="poly", limit_side_len=736, limit_type="min")
    dets = det(image_path)
    assert dets and all(d.polygon.shape[0] >= 4 for d in dets)


def test_draw_returns_annotated_copy(det, image_path):
    from dbdetect.imageio import load_image

    img = load_image(image_path)
    out = dbdetect.draw(img, det(img))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out != img).any()


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (np.zeros((0, 10, 3), np.uint8), ValueError, "empty"),
        (np.zeros((10, 10, 2), np.uint8), ValueError, "shape"),
        (np.zeros((10, 10), bool), TypeError, "dtype"),
        (np.full((10, 10, 3), np.nan, np.float32), ValueError, "NaN"),
        ("/nonexistent/file.jpg", FileNotFoundError, "not found"),
        (b"not an image", ValueError, "decode"),
        (12345, TypeError, "path, bytes"),
    ],
)
def test_bad_input_gives_clear_errors(det, bad, exc, match):
    with pytest.raises(exc, match=match):
        det(bad)


def test_tiny_and_huge_images(det):
    assert det(np.zeros((1, 1, 3), np.uint8)) == []
    long = np.full((300, 20000, 3), 255, np.uint8)
    long[100:200, 1000:5000] = 0
    out = det(long)
    assert isinstance(out, list)
    for d in out:
        assert d.polygon[:, 0].max() <= 20000 and d.polygon[:, 1].max() <= 300


def test_bad_options():
    with pytest.raises(ValueError, match="limit_type"):
        Detector("ppocrv4", limit_type="mid")
    with pytest.raises(ValueError, match="box_type"):
        Detector("ppocrv4", box_type="circle")
    with pytest.raises(ValueError, match="no_such_model"):
        Detector("no_such_model")
    with pytest.raises(ValueError, match="device"):
        Detector("ppocrv4", device="gpu0")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            Detector("ppocrv4", device="cuda")


def test_accuracy_floor_on_icdar2015(det, ic15):
    """Zero-shot PP-OCRv4 finds lines where ICDAR 2015 labels words, so the floor is modest but real."""
    from dbdetect.data import read_folder
    from dbdetect.evaluate import evaluate_detections

    wanted = set(SAMPLE)
    gts = [s for s in read_folder(ic15 / "test") if s.image_path.name in wanted]
    assert len(gts) == len(SAMPLE)
    preds = [det(s.image_path) for s in gts]
    res = evaluate_detections(gts, preds)
    assert res["precision"] >= 0.35, res
    assert res["recall"] >= 0.25, res


def test_nan_from_the_model_is_reported():
    broken = Detector("ppocrv4", limit_side_len=64)
    with torch.no_grad():
        next(broken.model.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN probabilities"):
        broken(np.zeros((64, 64, 3), np.uint8))


def test_fine_tuned_model_beats_zero_shot_on_icdar2015(det, ic15):
    """ppocrv4_ic15 (word boxes, with its own registry settings) against ppocrv4 on the same images."""
    from dbdetect.data import read_folder
    from dbdetect.evaluate import evaluate_detections

    wanted = set(SAMPLE)
    gts = [s for s in read_folder(ic15 / "test") if s.image_path.name in wanted]
    tuned = Detector("ppocrv4_ic15")
    assert (tuned.limit_side_len, tuned.post_kwargs["thresh"]) == (1440, 0.25)
    zero = evaluate_detections(gts, [det(s.image_path) for s in gts])
    fine = evaluate_detections(gts, [tuned(s.image_path) for s in gts])
    assert fine["hmean"] > zero["hmean"] + 0.05, (zero["hmean"], fine["hmean"])
