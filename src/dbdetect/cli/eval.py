"""``dbdetect eval``: detect on a labelled set and score it (ICDAR 2015 protocol)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..defaults import PRECISIONS
from ..evaluation.protocol import PROTOCOLS, evaluate_detections


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``dbdetect eval``."""
    p = subparsers.add_parser(
        "eval",
        help="score a model on a labelled dataset (ICDAR 2015 IoU protocol)",
        description="Detect text in every image of a labelled dataset and report precision, recall and H-mean "
        "(ICDAR 2015 IoU protocol: one-to-one matching at IoU > 0.5, detections inside ### regions ignored).",
    )
    p.add_argument("--data", required=True, help="dataset folder (images/ + gts/) or PaddleOCR label file")
    p.add_argument("--model", default="ppocrv4", help="model name or checkpoint path (default: ppocrv4)")
    p.add_argument("--format", default="auto", help="label format: auto, icdar2015, polygon, totaltext, paddle, funsd")
    p.add_argument("--root", default=None, help="image root for PaddleOCR label files")
    p.add_argument("--lenient", action="store_true", help="skip malformed label lines with a warning")
    p.add_argument("--limit-side-len", type=int, default=None, help="resize limit (default: the model's)")
    p.add_argument("--limit-type", choices=("min", "max"), default=None, help="resize rule (default: the model's)")
    p.add_argument("--thresh", type=float, default=None, help="binarisation threshold (default: the model's)")
    p.add_argument("--box-thresh", type=float, default=None, help="box score threshold (default: the model's)")
    p.add_argument("--unclip-ratio", type=float, default=None, help="box expansion ratio (default: the model's)")
    p.add_argument(
        "--dilation",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="2x2 dilation of the bitmap (default: the model's)",
    )
    p.add_argument(
        "--score-mode",
        choices=("fast", "slow"),
        default=None,
        help="box score: mean over the bounding rectangle (fast) or the contour (slow) (default: the model's)",
    )
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="icdar2015",
        help="icdar2015 (default: polygons, greedy matching at IoU > 0.5, ### ignored) or doctr "
        "(docTR's: straight boxes, Hungarian matching at IoU >= 0.5, recall, precision and mean IoU)",
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="number format of the torch network: auto (fp16 on CUDA, fp32 on a CPU), fp32, fp16, bf16",
    )
    p.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default=None,
        help="inference backend (default: onnxruntime for a .onnx model, else torch)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default=None, help="write the full results (global + per image) as JSON here")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """``dbdetect eval``: detect with :class:`dbdetect.Detector`, score, print, save JSON."""
    from tqdm import tqdm

    from ..data import load_samples
    from ..detector import Detector

    samples = load_samples(args.data, fmt=args.format, root=args.root, lenient=args.lenient)
    if args.limit is not None:
        samples = samples[: args.limit]
    kw = {
        k: v
        for k, v in (
            ("limit_side_len", args.limit_side_len),
            ("limit_type", args.limit_type),
            ("thresh", args.thresh),
            ("box_thresh", args.box_thresh),
            ("unclip_ratio", args.unclip_ratio),
            ("use_dilation", args.dilation),
            ("score_mode", args.score_mode),
        )
        if v is not None
    }
    det = Detector(
        model=args.model,
        device=args.device,
        num_threads=args.threads,
        backend=args.backend,
        precision=args.precision,
        **kw,
    )
    t0 = time.perf_counter()
    dets = [det(s.image_path) for s in tqdm(samples, desc="eval", unit="img", disable=args.no_progress)]
    elapsed = time.perf_counter() - t0
    res = evaluate_detections(samples, dets, protocol=args.protocol)
    res = {
        "model": str(args.model),
        "backend": det.backend,
        "data": str(args.data),
        "images": len(samples),
        "seconds": round(elapsed, 2),
        "settings": kw,
        "protocol": args.protocol,
        **res,
    }
    ms = 1000 * elapsed / max(1, len(samples))
    if args.protocol == "doctr":
        print(
            f"recall {res['recall']:.4f}  precision {res['precision']:.4f}  mean IoU {res['mean_iou']:.4f}  "
            f"hmean {res['hmean']:.4f}  ({res['matched']} matched / {res['num_gt']} gt / {res['num_det']} det, "
            f"{len(samples)} images, {ms:.0f} ms/image)"
        )
    else:
        print(
            f"precision {res['precision']:.4f}  recall {res['recall']:.4f}  hmean {res['hmean']:.4f}  "
            f"({res['matched']} matched / {res['num_gt_care']} gt / {res['num_det_care']} det, "
            f"{len(samples)} images, {ms:.0f} ms/image)"
        )
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1))
        print(f"results written to {out}")
    return 0
