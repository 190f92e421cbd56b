"""Images per second of a folder run: plain loop, the `dbdetect detect` pipeline, the forward-pass bound, Ray Data.

    python bench/throughput.py                 # all 500 ICDAR 2015 test images
    python bench/throughput.py --limit 50      # a quick look

Each measurement runs in its own subprocess (a fair max RSS for each) and
excludes model loading (one warm-up image first). The images are cut into
chunks and the in-process variants take turns on each chunk (in reverse order
every other chunk), so background load hits them alike:

- loop:      ``for p in paths: dbdetect.detect(p)`` (torch's default threads)
- pipeline:  what ``dbdetect detect`` runs by default: :func:`dbdetect.pipeline.detect_stream` choosing
             its plan (1 or 2 streams, 0 or 1 decoding workers) on the first images, plus a JSON line per image.
             The bench starts from an empty plan file (:mod:`dbdetect.plan_cache`), so the first chunk's
             run probes and the later chunks' runs use what it chose, as repeated ``dbdetect detect`` runs
             on one machine do; ``--no-plan-cache`` makes every chunk's run probe
- pipe-1s:   the same with one stream of torch's default threads and ``--workers W`` (``--streams 1``)
- pipe-2s:   2 streams of half the threads each and ``--workers W`` (``--streams 2``)
- pipe-0w:   one stream, decoding inline (``--streams 1 --workers 0``): a loop with the JSON lines
- bound:     the network's forward pass alone on the same prepared inputs (torch's default threads,
             one pass at a time: the bound the issue names); inputs are prepared 8 at a time,
             untimed, and only the forward passes are timed
- bound-2s:  the same forward passes in 2 threads of 1 torch thread each: the pipeline's own ideal
- pipe-1t:   the pipeline with 1 torch thread and no worker thread: one Ray actor's work, in-process

Then Ray Data (``dbdetect.distributed.detect_dataset``) with 1 and 2 actors of
1 CPU / 1 torch thread, in one Ray instance per actor count: an untimed warm-up
run (Ray's first run also starts its worker processes and imports torch in
them), then ``--ray-rounds`` rounds on disjoint parts of the first
``--ray-limit`` images. A round runs the in-process twin on its part (pipe-1t
for 1 actor, the pipeline of 2 streams x 1 thread for 2 actors; Ray idle), then
Ray on 10 images per actor and on the whole part: the difference of the two
Ray runs over the difference in images is the steady-state rate (actor start-up
and model loading cancel). Ray's overhead is the median over rounds of how much
slower Ray ran than its twin just before it.
"""

from __future__ import annotations

from dbdetect.distributed import keep_on_loopback

keep_on_loopback()  # Ray stays on 127.0.0.1 and probes no cloud metadata; before ray is imported
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DEFAULT_DATA

LOCAL = ("loop", "pipeline", "pipe-1s", "pipe-2s", "pipe-0w", "bound", "bound-2s", "pipe-1t")
# the pipeline's own variants: the plans its default chooses from
PLANS = ("pipe-1s", "pipe-2s", "pipe-0w")


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
            list(pool.map(lambda k, inputs=inputs: [det._forward(x) for x in inputs[k::streams]], range(streams)))
        total += time.perf_counter() - t0
    if pool is not None:
        pool.shutdown()
    return total


def _measure(variant: str, paths: list[str], workers: int, batch_size: int) -> dict:
    """Runs in the child process: time one variant on ``paths`` (the first image is the untimed warm-up)."""
    import torch

    import dbdetect
    from dbdetect.pipeline import detect_stream, single_malloc_arena

    streams = {"pipeline": "auto", "pipe-2s": 2, "bound-2s": 2}.get(variant, 1)
    if variant in ("pipe-1t", "bound-2s"):
        torch.set_num_threads(1)
    if streams != 1:
        single_malloc_arena()  # as dbdetect detect does before it may start two streams
    plan_lines: list[str] = []
    if variant == "pipeline":
        import logging

        class _Plans(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "stream plan" in record.getMessage():
                    plan_lines.append(record.getMessage())

        logging.getLogger("dbdetect.pipeline").addHandler(_Plans())
        logging.getLogger("dbdetect.pipeline").setLevel(logging.INFO)
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
        w = {"pipe-1t": 0, "pipe-0w": 0, "pipeline": None}.get(variant, workers)
        with tempfile.TemporaryFile("w") as out:
            for res in detect_stream(det, paths, batch_size=batch_size, workers=w, streams=streams):
                out.write(json.dumps({"path": str(res.source), "scores": [d.score for d in res.detections]}) + "\n")
                out.flush()
    elif variant.startswith("bound"):
        dt = _forward_seconds(det, paths, streams)
    if not variant.startswith("bound"):
        dt = time.perf_counter() - t0
    return {
        "variant": variant,
        "images": len(paths),
        "seconds": dt,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "plan": " | ".join(plan_lines),
    }


def _ray_run(ray, paths: list[str], actors: int, batch_size: int) -> float:
    from dbdetect.distributed import detect_dataset

    t0 = time.perf_counter()
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(actors, len(paths) // 10))
    n = sum(1 for _ in detect_dataset(ds, batch_size=batch_size, concurrency=actors).iter_rows())
    assert n == len(paths)
    return time.perf_counter() - t0


def _measure_ray(actors: int, paths: list[str], args) -> dict:
    """Ray Data against its in-process twin, in ``--ray-rounds`` rounds on disjoint parts of ``paths``.

    Each round runs the twin (a subprocess, Ray idle), then Ray on 10 images per
    actor and on the whole part: the difference of the two Ray runs is the steady
    state (actor start-up cancels). Neighbours in time are compared, round by
    round, because this machine's speed drifts by tens of percent within minutes.
    """
    import ray

    twin = "pipe-1t" if actors == 1 else "pipeline"
    k = 10 * actors
    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    rounds = []
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        _ray_run(ray, paths[:k], actors, args.batch_size)  # warm-up: worker processes, imports
        size = len(paths) // args.ray_rounds
        for r in range(args.ray_rounds):
            part = paths[r * size : (r + 1) * size]
            ref = _spawn(twin, part, args)
            t_small = _ray_run(ray, part[:k], actors, args.batch_size)
            t_full = _ray_run(ray, part, actors, args.batch_size)
            rounds.append(
                {
                    "ray_ips": (len(part) - k) / (t_full - t_small),
                    "twin_ips": ref["images"] / ref["seconds"],
                    "startup_s": t_small,
                }
            )
    finally:
        ray.shutdown()
    steady = len(paths) // args.ray_rounds - k  # images per round in the steady state
    return {
        "variant": f"ray-{actors}",
        "images": steady * len(rounds),
        "twin": twin,
        "rounds": rounds,
        "seconds": sum(steady / r["ray_ips"] for r in rounds),
        "max_rss_mb": float("nan"),
    }


def _child(args) -> None:
    paths = Path(args.paths_file).read_text().split("\n")
    if args.variant.startswith("ray-"):
        res = _measure_ray(int(args.variant[4:]), paths, args)
    else:
        res = _measure(args.variant, paths, args.workers, args.batch_size)
    print("RESULT " + json.dumps(res))


def _spawn(variant: str, paths: list[str], args) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(paths))
    cmd = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--paths-file",
        f.name,
        "--workers",
        str(args.workers),
        "--batch-size",
        str(args.batch_size),
        "--ray-rounds",
        str(args.ray_rounds),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    Path(f.name).unlink()
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    if r.returncode or not lines:
        raise RuntimeError(f"{variant} failed:\n{r.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def _print_local(totals: dict, chunks: list[dict], args, n: int) -> None:
    ips = {v: t["images"] / t["seconds"] for v, t in totals.items()}
    print(f"\n{n} images, {args.chunk} per turn, pipeline workers={args.workers}, batch={args.batch_size}")
    print(f"{'variant':10s} {'img/s':>7s} {'ms/img':>7s} {'vs bound':>8s} {'max RSS MB':>10s}")
    for v, t in totals.items():
        rss = "-" if t["max_rss_mb"] != t["max_rss_mb"] else f"{t['max_rss_mb']:.0f}"
        print(f"{v:10s} {ips[v]:7.2f} {1000 / ips[v]:7.1f} {ips[v] / ips['bound']:8.3f} {rss:>10s}")
    print(
        f"pipeline / bound: {ips['pipeline'] / ips['bound']:.3f} "
        f"(median of chunks {statistics.median(c['pipeline'] / c['bound'] for c in chunks):.3f}); "
        f"pipeline / loop: {ips['pipeline'] / ips['loop']:.3f}; pipeline / bound-2s: "
        f"{ips['pipeline'] / ips['bound-2s']:.3f}; pipe-1s / bound: {ips['pipe-1s'] / ips['bound']:.3f}; "
        f"RSS pipeline - loop: {totals['pipeline']['max_rss_mb'] - totals['loop']['max_rss_mb']:+.0f} MB"
    )
    best = max(PLANS, key=lambda v: ips[v])
    print(
        f"default pipeline / loop: {ips['pipeline'] / ips['loop']:.3f} (goal >= 1.0); "
        f"default pipeline / best of its variants ({best}): {ips['pipeline'] / ips[best]:.3f} (goal >= 0.95)"
    )
    # Neighbours in time, chunk by chunk: a drift in the machine's speed cancels.
    vs_loop = sorted(c["pipeline"] / c["loop"] for c in chunks)
    vs_best = sorted(c["pipeline"] / max(c[v] for v in PLANS) for c in chunks)
    print(
        f"chunk by chunk ({len(chunks)} chunks): default / loop median {statistics.median(vs_loop):.3f} "
        f"(range {vs_loop[0]:.3f}-{vs_loop[-1]:.3f}); default / best plan of the chunk median "
        f"{statistics.median(vs_best):.3f} (range {vs_best[0]:.3f}-{vs_best[-1]:.3f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA / "icdar2015" / "test" / "images")
    ap.add_argument("--limit", type=int, help="use the first N images")
    ap.add_argument("--chunk", type=int, default=100, help="images per turn of the in-process variants")
    ap.add_argument("--workers", type=int, default=1, help="pipeline pre-processing threads")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--no-local", action="store_true", help="only the Ray runs and their in-process twins")
    ap.add_argument("--ray-limit", type=int, help="images for the Ray runs (default: all)")
    ap.add_argument("--ray-rounds", type=int, default=3, help="Ray vs in-process rounds, on disjoint images")
    ap.add_argument("--no-plan-cache", action="store_true", help="the default pipeline probes in every chunk")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--paths-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.variant = args.child
        return _child(args)

    plan_dir = tempfile.TemporaryDirectory()  # an empty plan file for this run; the children inherit it
    os.environ["DBDETECT_PLAN_CACHE"] = "off" if args.no_plan_cache else str(Path(plan_dir.name) / "plans.json")
    paths = sorted(map(str, args.data.glob("*.jpg")), key=lambda p: int(Path(p).stem.split("_")[-1]))
    paths = paths[: args.limit] if args.limit else paths
    totals = {v: {"images": 0, "seconds": 0.0, "max_rss_mb": 0.0} for v in LOCAL}
    chunks = []  # images per second of each variant, chunk by chunk
    for start in range(0, 0 if args.no_local else len(paths), args.chunk):
        chunk = paths[start : start + args.chunk]
        # reversed every other chunk: no variant always runs first or right after another
        order = LOCAL if (start // args.chunk) % 2 == 0 else LOCAL[::-1]
        got = {v: _spawn(v, chunk, args) for v in order}
        for v, r in got.items():
            t = totals[v]
            t["images"] += r["images"]
            t["seconds"] += r["seconds"]
            t["max_rss_mb"] = max(t["max_rss_mb"], r["max_rss_mb"])
        chunks.append({v: r["images"] / r["seconds"] for v, r in got.items()})
        print(
            f"chunk {start // args.chunk}: " + ", ".join(f"{v} {chunks[-1][v]:.2f} img/s" for v in LOCAL),
            flush=True,
        )
        print(f"  default pipeline's {got['pipeline']['plan'].removeprefix('stream plan: ')}", flush=True)
    if not args.no_ray:
        ray_paths = paths[: args.ray_limit or len(paths)]
        for actors in (1, 2):
            totals[f"ray-{actors}"] = _spawn(f"ray-{actors}", ray_paths, args)
    if args.no_local:
        totals = {v: t for v, t in totals.items() if v not in LOCAL}
    else:
        _print_local(totals, chunks, args, len(paths))
    for actors in (1, 2):
        res = totals.get(f"ray-{actors}")
        if res is None:
            continue
        over = [100 * (r["twin_ips"] / r["ray_ips"] - 1) for r in res["rounds"]]
        print(
            f"ray-{actors} vs in-process {res['twin']}, {len(over)} rounds: "
            + ", ".join(
                f"{r['ray_ips']:.2f} vs {r['twin_ips']:.2f} img/s ({o:+.1f}%)" for r, o in zip(res["rounds"], over)
            )
            + f"; Ray's overhead per image, median {statistics.median(over):+.1f}% "
            f"(start-up of a {10 * actors}-image run {statistics.median(r['startup_s'] for r in res['rounds']):.1f} s)"
        )


if __name__ == "__main__":
    main()
