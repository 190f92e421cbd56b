"""Helpers shared by the benchmarks: data paths, the PP-OCR ONNX files, timing."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DBDETECT_DATA", ROOT.parent / "shared" / "data"))
CACHE = Path(os.environ.get("DBDETECT_CACHE", Path.home() / ".cache" / "dbdetect-bench"))

ONNX_WHEELS = {
    "ppocrv3": ("1.2.13", "rapidocr_onnxruntime/models/ch_PP-OCRv3_det_infer.onnx"),
    "ppocrv4": ("1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"),
}


def onnx_path(name: str) -> Path:
    """The original PP-OCR ONNX file, taken from its rapidocr-onnxruntime wheel (pip download, cached)."""
    version, member = ONNX_WHEELS[name]
    dst = CACHE / f"{name}_det_infer.onnx"
    if dst.exists():
        return dst
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = list(CACHE.glob(f"rapidocr_onnxruntime-{version}-*.whl"))
    if not wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                str(CACHE),
                f"rapidocr-onnxruntime=={version}",
            ],
            check=True,
        )
        wheels = list(CACHE.glob(f"rapidocr_onnxruntime-{version}-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        dst.write_bytes(z.read(member))
    return dst


def median_ms(samples: list[float]) -> float:
    return 1000.0 * statistics.median(samples)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.dt = time.perf_counter() - self.t0
