"""Benchmark dbdetect.labels.make_targets against the Python reference, side by side.

Workloads:
  1. ICDAR 2015 training images at full size (1280x720, ~14 quads each);
  2. a dense page: 300 word quads + 30 curved 16-point polygons on 1280x720.

The reference timed is the upstream-style integer pipeline (PaddleOCR
MakeShrinkMap + MakeBorderMap: pyclipper offsets, cv2.fillPoly, NumPy distance
maps), single-threaded. Parity is measured against the exact-offset twin
(tests/reference_labels.py, precise=True) and, for information, against the
integer pipeline.

Usage: python bench/labels.py [--data ../shared/data] [--limit N] [--threads T]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import reference_labels as ref  # noqa: E402

from dbdetect import labels  # noqa: E402

H, W = 720, 1280
KEYS = ("shrink_map", "shrink_mask", "thresh_map", "thresh_mask")


read_gt = ref.read_icdar_gt


def dense_page(seed: int = 0):
    """300 word quads (a few degrees of rotation) and 30 curved 16-point lines."""
    rng = np.random.default_rng(seed)
    polys = []
    for _ in range(300):
        w, h = rng.uniform(30, 140), rng.uniform(12, 32)
        cx, cy = rng.uniform(20, W - 20), rng.uniform(15, H - 15)
        a = np.radians(rng.uniform(-8, 8))
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        box = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
        polys.append(np.round(box @ rot.T + [cx, cy]))
    for _ in range(30):
        r, t = rng.uniform(80, 300), rng.uniform(18, 40)
        cx, cy = rng.uniform(200, W - 200), rng.uniform(150, H - 150)
        ang = np.linspace(s := rng.uniform(0, 2 * np.pi), s + rng.uniform(0.6, 1.4), 8)
        outer = np.stack([cx + (r + t) * np.cos(ang), cy + (r + t) * np.sin(ang)], 1)
        inner = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1)[::-1]
        polys.append(np.round(np.concatenate([outer, inner]), 1))
    tags = list(rng.random(len(polys)) < 0.05)
    return polys, tags


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t0, out


def floor_maps():
    """Allocate and fill the four output maps, nothing else: the floor for any implementation.

    np.empty + fill rather than np.zeros: calloc'd pages are only zeroed when first
    written, which every implementation does, so zeros alone would hide that cost.
    """
    maps = [np.empty((H, W), np.float32) for _ in range(4)]
    for m, v in zip(maps, (0.0, 1.0, 0.3, 0.0)):
        m.fill(v)
    return maps


def parity(mine, theirs):
    return ref.compare(mine, theirs)[:3]


def report_parity(name, rows):
    a = np.array(rows)
    print(
        f"  parity vs {name}: shrink IoU min {a[:, 0].min():.4f} mean {a[:, 0].mean():.4f} "
        f"(< 0.98: {(a[:, 0] < 0.98).sum()}), thresh_mask IoU min {a[:, 1].min():.4f} mean {a[:, 1].mean():.4f} "
        f"(< 0.98: {(a[:, 1] < 0.98).sum()}), mean |thresh_map diff| max {a[:, 2].max():.2e}"
    )


def ms(x):
    return f"{1e3 * x:8.2f} ms"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--limit", type=int, default=0, help="use only the first N ICDAR images (0: all)")
    ap.add_argument("--dense-repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-parity", action="store_true", help="skip the exact-twin parity check")
    args = ap.parse_args()
    cv2.setNumThreads(1)

    gts = sorted((Path(args.data) / "icdar2015" / "train" / "gts").glob("*.txt"))
    if args.limit:
        gts = gts[: args.limit]
    if not gts:
        sys.exit(f"no gt files under {args.data}/icdar2015/train/gts")
    data = [read_gt(p) for p in gts]
    print(
        f"ICDAR 2015 train: {len(data)} images, {np.mean([len(p) for p, _ in data]):.1f} polygons/image, "
        f"{W}x{H}; cpu_count {os.cpu_count()}"
    )

    t_ref, t_nat, t_out, t_floor, t_floor_out, par_exact, par_int = [], [], [], [], [], [], []
    out = {k: np.empty((H, W), np.float32) for k in KEYS}
    for polys, tags in tqdm(data, desc="icdar2015", leave=False):
        dt, theirs = timed(ref.make_targets, [p.copy() for p in polys], tags, (H, W), precise=False)
        t_ref.append(dt)
        dt, mine = timed(labels.make_targets, polys, tags, (H, W))
        t_nat.append(dt)
        t_out.append(timed(labels.make_targets, polys, tags, (H, W), out=out)[0])
        t_floor.append(timed(floor_maps)[0])
        t_floor_out.append(timed(lambda: [m.fill(0.5) for m in out.values()])[0])
        par_int.append(parity(mine, theirs))
        if not args.no_parity:
            par_exact.append(parity(mine, ref.make_targets([p.copy() for p in polys], tags, (H, W))))
    r, n, o, f, fo = (statistics.median(x) for x in (t_ref, t_nat, t_out, t_floor, t_floor_out))
    print("Workload 1: ICDAR 2015 train, median per image, single thread")
    print(f"  reference (Python)         {ms(r)}")
    print(f"  dbdetect, fresh arrays     {ms(n)}   speed-up {r / n:6.1f}x")
    print(f"  dbdetect, out= reused      {ms(o)}   speed-up {r / o:6.1f}x")
    print(f"  floor: allocate + fill 4 maps (NumPy) {ms(f)}; fill 4 reused maps {ms(fo)}")
    if par_exact:
        report_parity("exact-offset twin (acceptance)", par_exact)
    report_parity("upstream integer pipeline (info)", par_int)

    polys, tags = dense_page()
    t_ref, t_nat, t_out = [], [], []
    for _ in tqdm(range(args.dense_repeat), desc="dense page", leave=False):
        t_ref.append(timed(ref.make_targets, [p.copy() for p in polys], tags, (H, W), precise=False)[0])
        t_nat.append(timed(labels.make_targets, polys, tags, (H, W))[0])
        t_out.append(timed(labels.make_targets, polys, tags, (H, W), out=out)[0])
    r, n, o = statistics.median(t_ref), statistics.median(t_nat), statistics.median(t_out)
    print(
        f"Workload 2: dense page ({len(polys)} polygons: 300 quads + 30 curved 16-point), median of "
        f"{args.dense_repeat}, single thread"
    )
    print(f"  reference (Python)         {ms(r)}")
    print(f"  dbdetect, fresh arrays     {ms(n)}   speed-up {r / n:6.1f}x")
    print(f"  dbdetect, out= reused      {ms(o)}   speed-up {r / o:6.1f}x")
    if not args.no_parity:
        mine = labels.make_targets(polys, tags, (H, W))
        report_parity(
            "exact-offset twin (acceptance)", [parity(mine, ref.make_targets([p.copy() for p in polys], tags, (H, W)))]
        )

    # Chunks of 16 images (a training batch): 1000 images of four 1280x720 float32 maps
    # at once would need ~15 GB.
    chunk, n_items = 16, min(len(data), 64)
    print(f"Batch throughput (make_targets_batch on {n_items} images in chunks of {chunk}, images/s)")
    for name, items in (("icdar2015", data[:n_items]), ("dense page", [dense_page(s) for s in range(32)])):
        res = {}
        for th in (1, args.threads):
            best = float("inf")
            for _ in range(2):
                t0 = time.perf_counter()
                for c in range(0, len(items), chunk):
                    part = items[c : c + chunk]
                    labels.make_targets_batch(
                        [p for p, _ in part], [t for _, t in part], [(H, W)] * len(part), threads=th
                    )
                best = min(best, time.perf_counter() - t0)
            res[th] = len(items) / best
        print(
            f"  {name:10s}: {res[1]:8.1f} img/s with 1 thread, {res[args.threads]:8.1f} img/s "
            f"with {args.threads} threads"
        )


if __name__ == "__main__":
    main()
