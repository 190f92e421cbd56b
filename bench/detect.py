"""dbdetect vs the reference ONNX Runtime pipeline on ICDAR 2015 test: speed and accuracy.

The reference is what RapidOCR does with the same weights: the original
PP-OCRv4 ONNX (rapidocr-onnxruntime==1.4.4) on onnxruntime, NumPy
pre-processing and PaddleOCR's Python DBPostProcess (tests/reference_postprocess.py).
Both sides get the same input size and thresholds (the model's registry
entry) and ImageNet normalisation, and both start from the image file.
Images are timed interleaved, alternating which side goes first, so machine
noise hits both alike.

    python bench/detect.py [--data ../shared/data] [--limit N] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import DEFAULT_DATA, onnx_path  # noqa: E402
from reference_postprocess import boxes_from_prob as ref_boxes_from_prob  # noqa: E402


class ReferencePipeline:
    """ONNX Runtime + NumPy pre-processing + Python post-processing, RapidOCR style."""

    def __init__(self, onnx_file, cfg, limit_side_len, limit_type, threads):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(str(onnx_file), so, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name
        self.cfg, self.limit_side_len, self.limit_type = cfg, limit_side_len, limit_type

    def _resize(self, img):
        h, w = img.shape[:2]
        if self.limit_type == "max":
            ratio = self.limit_side_len / max(h, w) if max(h, w) > self.limit_side_len else 1.0
        else:
            ratio = self.limit_side_len / min(h, w) if min(h, w) < self.limit_side_len else 1.0
        rh = int(round(int(h * ratio) / 32) * 32)
        rw = int(round(int(w * ratio) / 32) * 32)
        return cv2.resize(img, (rw, rh))

    def __call__(self, path):
        img = cv2.imread(str(path))  # BGR, as PP-OCR expects
        x = self._resize(img).astype(np.float32) / 255.0
        x = (x - np.array(self.cfg["mean"])) / np.array(self.cfg["std"])
        x = x.transpose(2, 0, 1)[None].astype(np.float32)
        prob = self.sess.run(None, {self.input: x})[0][0, 0]
        polys, _ = ref_boxes_from_prob(
            prob, img.shape[:2], thresh=self.cfg["thresh"], box_thresh=self.cfg["box_thresh"],
            unclip_ratio=self.cfg["unclip_ratio"], max_candidates=self.cfg["max_candidates"],
            use_dilation=self.cfg["use_dilation"], score_mode=self.cfg["score_mode"])
        return polys


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=0, help="use the first N test images (0: all 500)")
    ap.add_argument("--model", default="ppocrv4", choices=("ppocrv4", "ppocrv3"))
    ap.add_argument("--limit-side-len", type=int, default=736)
    ap.add_argument("--limit-type", default="min", choices=("min", "max"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)

    import torch
    from tqdm import tqdm

    from dbdetect import Detector
    from dbdetect.data import read_folder
    from dbdetect.evaluate import evaluate_detections

    torch.set_num_threads(args.threads)
    samples = read_folder(args.data / "icdar2015" / "test")
    if args.limit:
        samples = samples[: args.limit]
    det = Detector(args.model, limit_side_len=args.limit_side_len, limit_type=args.limit_type)
    ref = ReferencePipeline(onnx_path(args.model), det.cfg, args.limit_side_len, args.limit_type, args.threads)
    for s in samples[: args.warmup]:
        det(s.image_path), ref(s.image_path)

    t_ours, t_ref, d_ours, d_ref = [], [], [], []
    for i, s in enumerate(tqdm(samples, desc="detect", unit="img")):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for side in order:
            t0 = time.perf_counter()
            if side == 0:
                d_ours.append([d.polygon for d in det(s.image_path)])
                t_ours.append(time.perf_counter() - t0)
            else:
                d_ref.append(ref(s.image_path))
                t_ref.append(time.perf_counter() - t0)

    r_ours = evaluate_detections(samples, d_ours)
    r_ref = evaluate_detections(samples, d_ref)
    ms_ours, ms_ref = 1000 * np.mean(t_ours), 1000 * np.mean(t_ref)
    print(f"\n{len(samples)} ICDAR 2015 test images, {args.model}, {args.limit_type} side {args.limit_side_len}, "
          f"{args.threads} threads, thresholds {dict((k, det.cfg[k]) for k in ('thresh', 'box_thresh', 'unclip_ratio'))}")
    print(f"{'pipeline':<34}{'ms/image':>10}{'P':>8}{'R':>8}{'H':>8}")
    for name, ms, r in (("reference (onnxruntime + Python)", ms_ref, r_ref), ("dbdetect (torch + native)", ms_ours, r_ours)):
        print(f"{name:<34}{ms:>10.1f}{100 * r['precision']:>8.2f}{100 * r['recall']:>8.2f}{100 * r['hmean']:>8.2f}")
    print(f"ratio dbdetect / reference time: {ms_ours / ms_ref:.3f}x (goal <= 1.0x)")
    print(f"H-mean difference: {100 * abs(r_ours['hmean'] - r_ref['hmean']):.2f} points (goal <= 0.5)")


if __name__ == "__main__":
    main()
