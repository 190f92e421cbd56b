"""The ported PP-OCR detectors against onnxruntime running PaddleOCR's original ONNX files.

The ONNX models are read from the rapidocr-onnxruntime wheels (``pip download --no-deps`` into
a cache dir, DBDETECT_WHEEL_DIR overrides it); the test skips, saying why, only when the wheel
is neither cached nor downloadable.
"""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dbdetect import models

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the [test] extra")

WHEEL_DIR = Path(os.environ.get("DBDETECT_WHEEL_DIR", Path.home() / ".cache" / "dbdetect-tests"))
SOURCES = {
    "ppocrv3": ("1.2.13", "rapidocr_onnxruntime/models/ch_PP-OCRv3_det_infer.onnx"),
    "ppocrv4": ("1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"),
}
N_IMAGES = 5


def _onnx_bytes(version: str, member: str) -> bytes:
    wheel = WHEEL_DIR / f"rapidocr_onnxruntime-{version}-py3-none-any.whl"
    if not wheel.is_file():
        WHEEL_DIR.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                str(WHEEL_DIR),
                f"rapidocr-onnxruntime=={version}",
            ],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0 or not wheel.is_file():
            pytest.skip(
                f"rapidocr-onnxruntime=={version} not cached in {WHEEL_DIR} and pip download "
                f"failed (registry unreachable?): {r.stderr.strip()[-300:]}"
            )
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(member)


def preprocess(path: Path, cfg: dict) -> np.ndarray:
    """rapidocr's det pre-processing: BGR, limit_type "min" resize to multiples of 32, normalise."""
    img = cv2.imread(str(path))  # BGR, as the wheel's loader gives
    assert cfg["channel_order"] == "bgr" and cfg["limit_type"] == "min"
    h, w = img.shape[:2]
    ratio = cfg["limit_side_len"] / min(h, w) if min(h, w) < cfg["limit_side_len"] else 1.0
    rh = int(round(int(h * ratio) / 32) * 32)
    rw = int(round(int(w * ratio) / 32) * 32)
    img = cv2.resize(img, (rw, rh))
    mean = np.array(cfg["mean"], np.float32).reshape(1, 1, 3)
    std = np.array(cfg["std"], np.float32).reshape(1, 1, 3)
    x = (img.astype(np.float32) * np.float32(1 / 255.0) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


@pytest.fixture(scope="module")
def images(ic15):
    paths = sorted((ic15 / "test" / "images").glob("*.jpg"))[:N_IMAGES]
    assert len(paths) == N_IMAGES
    return paths


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_matches_onnxruntime(name, images):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    sess = ort.InferenceSession(_onnx_bytes(*SOURCES[name]), providers=["CPUExecutionProvider"])
    model = models.create(name).eval()
    fused = models.fuse(models.create(name).eval())
    worst = {"plain": 0.0, "fused": 0.0}
    text_px = 0
    for path in images:
        x = preprocess(path, model.cfg)
        ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        assert ref.shape == (1, 1) + x.shape[2:]
        text_px += int((ref > model.cfg["thresh"]).sum())
        with torch.no_grad():
            for key, net in (("plain", model), ("fused", fused)):
                out = net(torch.from_numpy(x)).numpy()
                assert out.shape == ref.shape
                worst[key] = max(worst[key], float(np.abs(out - ref).max()))
    # The maps must carry text, or agreement would say little.
    assert text_px > 10000, text_px
    assert worst["plain"] <= 1e-4, worst
    assert worst["fused"] <= 1e-4, worst
