"""Images per second of a folder run: plain loop, the `dbdetect detect` pipeline, the forward-pass bound, Ray Data.

    python bench/throughput.py                 # all 500 ICDAR 2015 test images
    python bench/throughput.py --limit 50      # a quick look

Each measurement runs in its own subprocess (a fair max RSS for each) and
excludes model loading (one warm-up image first). The images are cut into
chunks and the in-process variants take turns on each chunk, so background
load hits them alike:

- loop:      ``for p in paths: dbdetect.detect(p)`` (torch's default threads)
- pipeline:  what ``dbdetect detect --workers W`` runs by default: :func:`dbdetect.pipeline.detect_stream`
             with 2 streams of 1 torch thread each (``--streams 2``), plus a JSON line per image
- pipe-1s:   the same with one stream of torch's default threads (``--streams 1``)
- bound:     the network's forward pass alone on the same prepared inputs (torch's default threads,
             one pass at a time: the bound the issue names); inputs are prepared 8 at a time,
             untimed, and only the forward passes are timed
- bound-2s:  the same forward passes in 2 threads of 1 torch thread each: the pipeline's own ideal
- pipe-1t:   the pipeline with 1 torch thread and no worker thread: one Ray actor's work, in-process

Then Ray Data (``dbdetect.distributed.detect_dataset``) with 1 and 2 actors of
1 CPU / 1 torch thread, in one Ray instance: an untimed warm-up run (Ray's first
run also starts its worker processes and imports torch in them), then one run on
10 images per actor and one on the whole set (``--ray-limit``); their difference
in wall time over the difference in images is the steady-state rate (actor
start-up and model loading cancel). Ray's overhead per image is taken against
the in-process run doing the same work on the same images just before: pipe-1t
for 1 actor, the pipeline (2 streams of 1 thread) for 2 actors.
"""
from __future__ import annotations

import os

from dbdetect.distributed import keep_on_loopback

keep_on_loopback()  # Ray stays on 127.0.0.1 and probes no cloud metadata; before ray is imported
import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DEFAULT_DATA

LOCAL = ("loop", "pipeline", "pipe-1s", "bound", "bound-2s", "pipe-1t")


def _forward_seconds(det, paths: list[str], streams: int, window: int = 8) -> float:
    """Seconds spent in forward passes alone: inputs are prepared ``window`` at a time, untimed.

    Holding a few prepared inputs rather than all of them keeps the memory (and
    the allocator's state) like a real run's: with 100 inputs held, about 1.2 GB,
    the forward passes ran slower than inside the plain loop.
    """
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(streams) if streams > 1 else None
    total = 0.0
    for start in range(0, len(paths), window):
        inputs = [det._prepare(det._load(p, None))[None] for p in paths[start : start + window]]
        t0 = time.perf_counter()
        if pool is None:
            for x in inputs:
                det._forward(x)
        else:
            list(pool.map(lambda k: [det._forward(x) for x in inputs[k::streams]], range(streams)))
        total += time.perf_counter() - t0
    if pool is not None:
        pool.shutdown()
    return total


def _measure(variant: str, paths: list[str], workers: int, batch_size: int) -> dict:
    """Runs in the child process: time one variant on ``paths`` (the first image is the untimed warm-up)."""
    import torch

    import dbdetect
    from dbdetect.pipeline import detect_stream, single_malloc_arena

    streams = 2 if variant in ("pipeline", "bound-2s") else 1
    if variant == "pipe-1t" or streams == 2:
        torch.set_num_threads(1)
    if streams == 2:
        single_malloc_arena()  # as dbdetect detect does before it starts two streams
    if variant == "loop":
        dbdetect.detect(paths[0])  # loads and caches the default model
    else:
        det = dbdetect.Detector()
        det(paths[0])
    t0 = time.perf_counter()
    if variant == "loop":
        for p in paths:
            dbdetect.detect(p)
    elif variant.startswith("pipe"):
        w = 0 if variant == "pipe-1t" else workers
        with tempfile.TemporaryFile("w") as out:
            for res in detect_stream(det, paths, batch_size=batch_size, workers=w, streams=streams):
                out.write(json.dumps({"path": str(res.source), "scores": [d.score for d in res.detections]}) + "\n")
                out.flush()
    elif variant.startswith("bound"):
        dt = _forward_seconds(det, paths, streams)
    if not variant.startswith("bound"):
        dt = time.perf_counter() - t0
    return {"variant": variant, "images": len(paths), "seconds": dt,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _ray_run(ray, paths: list[str], actors: int, batch_size: int) -> float:
    from dbdetect.distributed import detect_dataset

    t0 = time.perf_counter()
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(actors, len(paths) // 10))
    n = sum(1 for _ in detect_dataset(ds, batch_size=batch_size, concurrency=actors).iter_rows())
    assert n == len(paths)
    return time.perf_counter() - t0


def _measure_ray(actors: int, paths: list[str], batch_size: int) -> dict:
    """Wall time of a small and a full run; their difference is the steady state (actor start-up cancels)."""
    import ray

    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        k = 10 * actors
        _ray_run(ray, paths[:k], actors, batch_size)  # warm-up: worker processes, imports
        t_small = _ray_run(ray, paths[:k], actors, batch_size)
        t_full = _ray_run(ray, paths, actors, batch_size)
    finally:
        ray.shutdown()
    return {"variant": f"ray-{actors}", "images": len(paths) - k, "seconds": t_full - t_small,
            "startup_s": t_small, "max_rss_mb": float("nan")}


def _child(args) -> None:
    paths = Path(args.paths_file).read_text().split("\n")
    if args.variant.startswith("ray-"):
        res = _measure_ray(int(args.variant[4:]), paths, args.batch_size)
    else:
        res = _measure(args.variant, paths, args.workers, args.batch_size)
    print("RESULT " + json.dumps(res))


def _spawn(variant: str, paths: list[str], args) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(paths))
    cmd = [sys.executable, __file__, "--child", variant, "--paths-file", f.name, "--workers", str(args.workers),
           "--batch-size", str(args.batch_size)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    Path(f.name).unlink()
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    if r.returncode or not lines:
        raise RuntimeError(f"{variant} failed:\n{r.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA / "icdar2015" / "test" / "images")
    ap.add_argument("--limit", type=int, help="use the first N images")
    ap.add_argument("--chunk", type=int, default=100, help="images per turn of the in-process variants")
    ap.add_argument("--workers", type=int, default=1, help="pipeline pre-processing threads")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--ray-limit", type=int, help="images for the Ray runs (default: all)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--paths-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.variant = args.child
        return _child(args)

    paths = sorted(map(str, args.data.glob("*.jpg")), key=lambda p: int(Path(p).stem.split("_")[-1]))
    paths = paths[: args.limit] if args.limit else paths
    totals = {v: {"images": 0, "seconds": 0.0, "max_rss_mb": 0.0} for v in LOCAL}
    ratios = []  # pipeline / bound per chunk
    for start in range(0, len(paths), args.chunk):
        chunk = paths[start : start + args.chunk]
        got = {v: _spawn(v, chunk, args) for v in LOCAL}
        for v, r in got.items():
            t = totals[v]
            t["images"] += r["images"]
            t["seconds"] += r["seconds"]
            t["max_rss_mb"] = max(t["max_rss_mb"], r["max_rss_mb"])
        ratios.append(got["bound"]["seconds"] / got["pipeline"]["seconds"])
        print(f"chunk {start // args.chunk}: " + ", ".join(f"{v} {got[v]['images'] / got[v]['seconds']:.2f} img/s"
                                                          for v in LOCAL), flush=True)
    ray_ref = {}
    if not args.no_ray:
        ray_paths = paths[: args.ray_limit or len(paths)]
        for actors in (1, 2):
            # the in-process twin right before each Ray run: the overhead compares neighbours in time
            ray_ref[actors] = _spawn("pipe-1t" if actors == 1 else "pipeline", ray_paths, args)
            totals[f"ray-{actors}"] = _spawn(f"ray-{actors}", ray_paths, args)
    ips = {v: t["images"] / t["seconds"] for v, t in totals.items()}
    print(f"\n{len(paths)} images, {args.chunk} per turn, pipeline workers={args.workers}, batch={args.batch_size}")
    print(f"{'variant':10s} {'img/s':>7s} {'ms/img':>7s} {'vs bound':>8s} {'max RSS MB':>10s}")
    for v, t in totals.items():
        rss = "-" if t["max_rss_mb"] != t["max_rss_mb"] else f"{t['max_rss_mb']:.0f}"
        print(f"{v:10s} {ips[v]:7.2f} {1000 / ips[v]:7.1f} {ips[v] / ips['bound']:8.3f} {rss:>10s}")
    print(f"pipeline / bound: {ips['pipeline'] / ips['bound']:.3f} (median of chunks {statistics.median(ratios):.3f}); "
          f"pipeline / loop: {ips['pipeline'] / ips['loop']:.3f}; pipeline / bound-2s: "
          f"{ips['pipeline'] / ips['bound-2s']:.3f}; pipe-1s / bound: {ips['pipe-1s'] / ips['bound']:.3f}; "
          f"RSS pipeline - loop: {totals['pipeline']['max_rss_mb'] - totals['loop']['max_rss_mb']:+.0f} MB")
    for actors, ref_run in ray_ref.items():
        ref = ref_run["images"] / ref_run["seconds"]
        r = ips[f"ray-{actors}"]
        twin = "pipe-1t" if actors == 1 else "pipeline (2 streams x 1 thread)"
        print(f"ray-{actors}: {r:.2f} img/s vs {ref:.2f} in-process ({twin}, run just before): "
              f"overhead {(1 / r - 1 / ref) * 1000:+.1f} ms/img ({(ref / r - 1) * 100:+.1f}%); "
              f"run on {10 * actors} images incl. start-up {totals[f'ray-{actors}']['startup_s']:.1f} s")


if __name__ == "__main__":
    main()
