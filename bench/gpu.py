"""End-to-end images per second on a GPU: fp32 batch 1 beside fp16 batches, the forward-only bound, host decoding.

    python bench/gpu.py                           # 500 ICDAR 2015 test images x 10 = 5,000, on cuda
    python bench/gpu.py --device cpu --limit 8 --repeat 1 --batches 1,2 --precisions fp32,bf16   # a dry run

All rows run in this one process, one after another, on the same images and at
``ppocrv4``'s registry settings (side 736, ``min``), so they compare side by
side:

- ``e2e <precision> b<B> s<S>``: :func:`dbdetect.pipeline.detect_stream` from
  paths to boxes, ``--workers`` decoding threads, ``S`` streams (a second stream
  post-processes one batch on the CPU while the other's forward pass runs);
- ``forward <precision> b<B>``: the network alone on inputs prepared beforehand
  (the model bound);
- ``decode``: decoding and resizing alone in ``--workers`` threads (the host bound).

Then the goal lines: the best end-to-end rate against the slower of the two
bounds, peak GPU memory, and (``--hmean``) the H-mean of the fastest
half-precision setting against fp32 on the whole test set.
"""

from __future__ import annotations

import argparse
import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _common import DEFAULT_DATA


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _e2e(det, paths: list[str], batch: int, workers: int, streams: int) -> float:
    from dbdetect.pipeline import detect_stream

    t0 = time.perf_counter()
    n = sum(1 for _ in detect_stream(det, paths, batch_size=batch, workers=workers, streams=streams))
    _sync(str(det.device))
    return n / (time.perf_counter() - t0)


def _forward(det, inputs: list[np.ndarray], batch: int) -> float:
    stacks = [np.stack(inputs[k : k + batch]) for k in range(0, len(inputs) - batch + 1, batch)]
    det._forward(stacks[0])  # warm-up of this shape
    t0 = time.perf_counter()
    for x in stacks:
        det.runtime(x)
    _sync(str(det.device))
    return len(stacks) * batch / (time.perf_counter() - t0)


def _decode(det, paths: list[str], workers: int) -> float:
    def prep(p):
        return det._prepare(det._load(p, None))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        n = sum(1 for _ in pool.map(prep, paths))
    return n / (time.perf_counter() - t0)


def _hmean(det, samples) -> float:
    from dbdetect.evaluation.protocol import evaluate_detections

    return float(evaluate_detections(samples, [det(s.image_path) for s in samples])["hmean"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA / "icdar2015" / "test")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--limit", type=int, help="the first N images")
    ap.add_argument("--repeat", type=int, default=10, help="passes over the images (default 10: 5,000 images)")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--precisions", default="fp32,fp16")
    ap.add_argument("--workers", type=int, default=12, help="decoding threads")
    ap.add_argument("--hmean", action="store_true", help="also score fp32 and the fastest half precision")
    args = ap.parse_args()

    import torch

    from dbdetect import Detector

    paths = sorted(map(str, (args.data / "images").glob("*.jpg")), key=lambda p: int(Path(p).stem.split("_")[-1]))
    paths = paths[: args.limit] if args.limit else paths
    many = paths * args.repeat
    batches = [int(b) for b in args.batches.split(",")]
    precisions = args.precisions.split(",")
    if args.device.startswith("cuda"):
        print(torch.cuda.get_device_name(), f"torch {torch.__version__}")
    rows: dict[str, float] = {}
    dets = {p: Detector("ppocrv4", device=args.device, precision=p) for p in precisions}
    inputs = [dets[precisions[0]]._prepare(dets[precisions[0]]._load(p, None)) for p in paths[:64]]
    rows["decode"] = _decode(dets[precisions[0]], many, args.workers)
    # fp32 runs at batch 1 only: it is the baseline the faster settings are compared to
    plan = [(p, b) for p, b in itertools.product(precisions, batches) if p != "fp32" or b == 1]
    for prec, b in plan:
        det = dets[prec]
        rows[f"forward {prec} b{b}"] = _forward(det, inputs, b)
        for s in (1, 2):
            _e2e(det, paths[: 2 * b], b, args.workers, s)  # warm-up: every shape of the run, both threads
            rows[f"e2e {prec} b{b} s{s}"] = _e2e(det, many, b, args.workers, s)
        print(", ".join(f"{k} {v:.1f}" for k, v in rows.items() if prec in k and f"b{b}" in k), flush=True)
    print(f"\n{len(many)} images ({len(paths)} x {args.repeat}), {args.workers} decoding threads, device {args.device}")
    print(f"{'row':24s} {'img/s':>9s}")
    for k, v in rows.items():
        print(f"{k:24s} {v:9.1f}")
    best_e2e = max((k for k in rows if k.startswith("e2e")), key=rows.__getitem__)
    best_fwd = max((k for k in rows if k.startswith("forward")), key=rows.__getitem__)
    bound = min(rows[best_fwd], rows["decode"])
    print(
        f"best end to end: {best_e2e} {rows[best_e2e]:.1f} img/s = {rows[best_e2e] / bound:.3f} of the slower bound "
        f"({'decode' if rows['decode'] <= rows[best_fwd] else best_fwd} {bound:.1f}); "
        f"vs fp32 b1 s1: {rows[best_e2e] / rows.get('e2e fp32 b1 s1', float('nan')):.2f}x"
    )
    if args.device.startswith("cuda"):
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    if args.hmean:
        from dbdetect.data import load_samples

        samples = load_samples(args.data)[: args.limit or None]
        half = next((p for p in precisions if p != "fp32"), None)
        h32 = _hmean(dets.get("fp32") or Detector("ppocrv4", device=args.device, precision="fp32"), samples)
        line = f"H-mean on {len(samples)} images: fp32 {100 * h32:.2f}"
        if half:
            hh = _hmean(dets[half], samples)
            line += f", {half} {100 * hh:.2f} ({100 * (hh - h32):+.2f}; goal within 0.2)"
        print(line)


if __name__ == "__main__":
    main()
