"""Benchmark: native post-processing vs the plain Python reference.

Prints the median time per map of tests/reference_postprocess.py (cv2 +
pyclipper, PaddleOCR DBPostProcess style) and of dbdetect.postprocess on
ICDAR 2015 test maps (short side 736, ~1312x736) and on a dense synthetic map
with ~500 text regions, measured in the same run, plus their ratio and the
box agreement (IoU >= 0.95 both ways, scores within 0.01).

    PYTHONPATH=src python bench/postprocess.py [--limit N] [--data DIR] [--box-type quad|poly]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import reference_postprocess as ref  # noqa: E402
from postprocess_match import add, match  # noqa: E402
from prob_maps import MapMaker, dense_map  # noqa: E402

from dbdetect import postprocess  # noqa: E402


def _time(fn, repeat):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--limit", type=int, default=None, help="use the first N test images")
    ap.add_argument("--repeat", type=int, default=3, help="runs per map (the fastest counts)")
    ap.add_argument("--box-type", default="quad", choices=["quad", "poly"])
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    kw = dict(box_type=args.box_type)

    images = sorted((Path(args.data) / "icdar2015" / "test" / "images").glob("*.jpg"))[: args.limit]
    maker = MapMaker()
    maps = []
    if not images:
        print(f"no ICDAR 2015 test images under {args.data}; only the dense map is timed")
    elif maker.reason:
        print(f"no probability-map source ({maker.reason}); only the dense map is timed")
    else:
        for p in tqdm(images, desc=f"maps ({maker.kind})"):
            maps.append((maker(p), cv2.imread(str(p)).shape[:2]))

    def run(name, items):
        t_ref, t_nat, agree = [], [], {}
        for prob, dest in tqdm(items, desc=f"timing {name}", leave=False):
            r = ref.boxes_from_prob(prob, dest, **kw)
            m = postprocess.boxes_from_prob(prob, dest, **kw)
            add(agree, match(*r, *m))
            t_ref.append(_time(lambda prob=prob, dest=dest: ref.boxes_from_prob(prob, dest, **kw), args.repeat))
            t_nat.append(_time(lambda prob=prob, dest=dest: postprocess.boxes_from_prob(prob, dest, **kw), args.repeat))
        mr, mn = statistics.median(t_ref), statistics.median(t_nat)
        h, w = items[0][0].shape
        print(f"{name}: {len(items)} map(s) {w}x{h}, box_type={args.box_type}")
        print(f"  reference median {mr * 1e3:8.3f} ms/map")
        print(f"  dbdetect  median {mn * 1e3:8.3f} ms/map")
        print(f"  speed-up  {mr / mn:6.1f}x")
        nr, no = max(agree["n_ref"], 1), max(agree["n_out"], 1)
        print(
            f"  boxes: reference {agree['n_ref']}, dbdetect {agree['n_out']}; "
            f"matched IoU>=0.95: {agree['ref_matched'] / nr:.2%} of reference, "
            f"{agree['out_matched'] / no:.2%} of dbdetect; "
            f"scores within 0.01: {agree['score_ok'] / max(agree['ref_matched'], 1):.2%}"
        )

    if maps:
        run("ICDAR 2015 test", maps)
    dense = dense_map(500)
    run("dense synthetic (~500 regions)", [(dense, (720, 1280))])


if __name__ == "__main__":
    main()
