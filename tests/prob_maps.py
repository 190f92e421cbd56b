"""Probability maps for post-processing tests and benchmarks.

One place decides how maps are made: the bundled PyTorch model
(``dbdetect.models.create("ppocrv4")``) when it is importable, else the
PP-OCRv4 detector ONNX file from a cached rapidocr-onnxruntime wheel through
onnxruntime, else the caller skips with the reason returned here.
Maps are cached as .npy under a temp dir (never committed).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WHEEL_NAME = "rapidocr_onnxruntime-1.4.4-py3-none-any.whl"
ONNX_MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
CACHE = Path(os.environ.get("DBDETECT_MAP_CACHE", Path(tempfile.gettempdir()) / "dbdetect_prob_maps"))
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _wheel_candidates():
    env = os.environ.get("DBDETECT_RAPIDOCR_WHEEL")
    if env:
        yield Path(env)
    yield ROOT.parent / "cache" / WHEEL_NAME
    yield Path("/work/cache") / WHEEL_NAME


def resize_for_det(img: np.ndarray, short_side: int = 736, stride: int = 32) -> np.ndarray:
    """Resize so the short side is ~short_side and both sides are multiples of stride."""
    h, w = img.shape[:2]
    r = short_side / min(h, w)
    nh = max(stride, int(round(h * r / stride)) * stride)
    nw = max(stride, int(round(w * r / stride)) * stride)
    return cv2.resize(img, (nw, nh))


class MapMaker:
    """Callable image-path -> float32 (H, W) probability map, or .reason when unavailable."""

    def __init__(self):
        self.reason = None
        self.kind = None
        self._fn = None
        try:  # the bundled model, once it lands in main
            import torch

            from dbdetect import models  # noqa: F401

            model = models.create("ppocrv4").eval()
            torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

            def run_torch(bgr):
                x = (bgr.astype(np.float32) / 255.0 - MEAN) / STD
                with torch.no_grad():
                    t = torch.from_numpy(x.transpose(2, 0, 1)[None].copy())
                    return model(t)[0, 0].numpy()

            self._fn, self.kind = run_torch, "torch-ppocrv4"
            return
        except Exception:  # noqa: BLE001 - any failure means: not available yet
            pass
        try:
            import onnxruntime as ort
        except ImportError:
            self.reason = "neither dbdetect.models nor onnxruntime is available"
            return
        wheel = next((p for p in _wheel_candidates() if p.is_file()), None)
        if wheel is None:
            self.reason = f"{WHEEL_NAME} not found (set DBDETECT_RAPIDOCR_WHEEL)"
            return
        CACHE.mkdir(parents=True, exist_ok=True)
        onnx_path = CACHE / "ch_PP-OCRv4_det_infer.onnx"
        if not onnx_path.is_file():
            with zipfile.ZipFile(wheel) as z:
                onnx_path.write_bytes(z.read(ONNX_MEMBER))
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def run_onnx(bgr):
            x = (bgr.astype(np.float32) / 255.0 - MEAN) / STD
            return sess.run(None, {name: x.transpose(2, 0, 1)[None].copy()})[0][0, 0]

        self._fn, self.kind = run_onnx, "onnx-ppocrv4"

    def __call__(self, image_path) -> np.ndarray:
        """Probability map of one image (cached), float32 (H, W) in [0, 1]."""
        image_path = Path(image_path)
        key = hashlib.sha1(f"{self.kind}:{image_path.resolve()}".encode()).hexdigest()[:16]
        cached = CACHE / f"{image_path.stem}_{key}.npy"
        if cached.is_file():
            return np.load(cached)
        bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(image_path)
        prob = np.ascontiguousarray(self._fn(resize_for_det(bgr)), dtype=np.float32)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(cached, prob)
        return prob


def dense_map(n_regions: int = 500, shape=(736, 1312), seed: int = 0) -> np.ndarray:
    """Deterministic synthetic map with about n_regions text-like blobs (mixed angles)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    prob = np.zeros(shape, np.float32)
    rows = int(np.ceil(np.sqrt(n_regions * h / w)))
    cols = int(np.ceil(n_regions / rows))
    ch, cw = h / rows, w / cols
    k = 0
    for r in range(rows):
        for c in range(cols):
            if k >= n_regions:
                break
            k += 1
            cx, cy = (c + 0.5) * cw, (r + 0.5) * ch
            size = (float(rng.uniform(0.4, 0.85) * cw), float(rng.uniform(0.25, 0.55) * ch))
            ang = float(rng.choice([0.0, rng.uniform(-30, 30)]))
            pts = cv2.boxPoints(((cx, cy), size, ang))
            cv2.fillPoly(prob, [np.round(pts).astype(np.int32)], float(rng.uniform(0.7, 0.95)))
    prob = cv2.GaussianBlur(prob, (5, 5), 1.2)
    return prob
