#!/usr/bin/env python
"""Speed of the ported PP-OCR detectors in torch (eager, fused) vs onnxruntime, side by side.

Same input (an ICDAR 2015 test image pre-processed the PP-OCR way, 1312x736 for 1280x720),
same thread count, interleaved runs; prints median times and torch/onnxruntime ratios.

    python bench/model_speed.py [--data ../shared/data] [--threads 2] [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from test_ppocr_parity import SOURCES, preprocess  # noqa: E402

from dbdetect import models  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--wheel-dir", type=Path, default=Path.home() / ".cache" / "dbdetect-tests")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--models", nargs="+", default=["ppocrv4", "ppocrv3"])
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["eager", "fused_nchw", "fused", "frozen"],
        help="eager: as loaded; fused_nchw: models.fuse(channels_last=False); fused: models.fuse; "
        "frozen: fuse + torch.jit.trace/freeze/optimize_for_inference",
    )
    args = ap.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    img = sorted((args.data / "icdar2015" / "test" / "images").glob("*.jpg"))[0]
    for name in args.models:
        version, member = SOURCES[name]
        wheel = args.wheel_dir / f"rapidocr_onnxruntime-{version}-py3-none-any.whl"
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(zipfile.ZipFile(wheel).read(member), so, providers=["CPUExecutionProvider"])
        base = models.create(name).eval()
        x = preprocess(img, base.cfg)
        xt = torch.from_numpy(x)
        ref = sess.run(None, {"x": x})[0]
        runners = {"onnxruntime": lambda sess=sess, x=x: sess.run(None, {"x": x})[0]}
        for v in args.variants:
            m = models.create(name).eval()
            inp = xt
            if v != "eager":
                models.fuse(m, channels_last=v != "fused_nchw")
            if v == "frozen":
                with torch.no_grad():
                    m = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(m, xt)))

            def run(m=m, inp=inp):
                with torch.inference_mode():
                    return m(inp).numpy()

            runners[v] = run
        times = {k: [] for k in runners}
        for k, r in runners.items():  # warm-up + accuracy
            out = r()
            times[k] = []
            if k != "onnxruntime":
                print(f"{name} {k}: max |diff| vs onnxruntime {np.abs(out - ref).max():.2e}")
        for _ in tqdm(range(args.runs), desc=f"{name} {tuple(x.shape)}"):
            for k, r in runners.items():
                t = time.perf_counter()
                r()
                times[k].append(time.perf_counter() - t)
        ort_ms = statistics.median(times["onnxruntime"]) * 1e3
        for k, ts in times.items():
            ms = statistics.median(ts) * 1e3
            print(f"  {name:8s} {k:12s} {ms:7.1f} ms   x{ms / ort_ms:.2f} of onnxruntime")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
