"""``dbdetect serve`` under closed-loop load on 127.0.0.1, beside the offline pipeline on the same images.

The images are cut into chunks, and on each chunk the variants take turns (in
reverse order on every other chunk), so the machine's drift hits them alike:
the offline pipeline (``dbdetect detect``'s streaming path: its plan chosen on
the first chunk, as one run of ``dbdetect detect`` chooses it once), in one
process; the service (``dbdetect serve`` in its own process) with 1, 4 and 16
closed-loop clients. Latency goes image by image: on each of the chunk's first
``--single`` images a single ``Detector`` call in the offline process, then one
request to the idle service, so both see the machine at the same moment. Then
more requests at concurrency 4, to see whether the server's memory grows.

    python bench/serve.py --limit 500 --rss-requests 2000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA

# The offline side, in its own process: one JSON list of paths per stdin line, one JSON answer per line.
OFFLINE = """
import json, logging, sys, time
import dbdetect
from dbdetect.pipeline import detect_stream, single_malloc_arena
single_malloc_arena()  # as dbdetect detect does
plan = {}
class Plan(logging.Handler):
    def emit(self, record):  # choose_plan's log line: streams, threads, workers
        plan.update(streams=record.args[0], workers=record.args[2])
logging.getLogger("dbdetect.pipeline").addHandler(Plan())
logging.getLogger("dbdetect.pipeline").setLevel(logging.INFO)
det = dbdetect.Detector("ppocrv4")
det(json.loads(sys.argv[1]))  # warm-up
forward, spent = det._forward, [0.0]
def timed(x):  # the forward pass's share of a single call, to set beside the service's inference_ms
    t = time.perf_counter(); y = forward(x); spent[0] = time.perf_counter() - t; return y
det._forward = timed
for line in sys.stdin:
    job = json.loads(line)
    if isinstance(job, str):  # one single call on this image
        data = open(job, "rb").read()
        t0 = time.perf_counter(); det(data); print(json.dumps([time.perf_counter() - t0, spent[0]]), flush=True)
        continue
    t = time.perf_counter()
    n = sum(1 for r in detect_stream(det, job, **plan) if r.error is None)
    print(json.dumps({"images": n, "seconds": time.perf_counter() - t, "plan": plan}), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, MB."""
    text = Path(f"/proc/{pid}/status").read_text()
    cur = int(re.search(r"VmRSS:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
    peak = int(re.search(r"VmHWM:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
    return cur / 1024, peak / 1024


def load(client_count: int, url: str, blobs: list[bytes], total: int) -> dict[str, Any]:
    """``client_count`` closed-loop clients sending ``total`` requests in all (the images in turn)."""
    import httpx

    lat: list[float] = []
    lock = threading.Lock()
    counter = iter(range(total))
    errors = [0]

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            while True:
                with lock:
                    k = next(counter, None)
                if k is None:
                    return
                t0 = time.perf_counter()
                r = c.post("/v1/detect", content=blobs[k % len(blobs)])
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200:
                        lat.append(dt)
                    else:
                        errors[0] += 1

    t = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(client_count)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {"seconds": time.perf_counter() - t, "latencies": lat, "errors": errors[0]}


def summary(runs: list[dict]) -> dict[str, float]:
    """Images per second, p50 and p99 latency (ms) and errors over several :func:`load` runs."""
    lat = sorted(v for r in runs for v in r["latencies"])
    return {
        "img_s": len(lat) / sum(r["seconds"] for r in runs),
        "p50_ms": lat[len(lat) // 2] * 1e3,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
        "errors": sum(r["errors"] for r in runs),
    }


def batch_totals(url: str) -> tuple[float, float]:
    """(sum, count) of the server's batch-size histogram: images and forward passes so far."""
    import httpx

    text = httpx.get(url + "/metrics").text
    s = float(re.search(r"^dbdetect_batch_size_sum (\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    n = float(re.search(r"^dbdetect_batch_size_count (\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    return s, n


def start_server(a: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    """``dbdetect serve`` on a free port of 127.0.0.1, once ready."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "dbdetect", "serve", "--port", str(port), "--threads", str(a.threads)]
    cmd += ["--max-queue", "64", "--log-level", "warning"]
    for flag in ("max_batch", "max_wait_ms", "streams"):
        if getattr(a, flag) is not None:
            cmd += ["--" + flag.replace("_", "-"), str(getattr(a, flag))]
    env = dict(os.environ, **dict(kv.split("=", 1) for kv in a.server_env))
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 180
    while True:
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise SystemExit("dbdetect serve did not start: " + (server.stderr.read() or b"").decode()[-2000:])
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def pair(offline: subprocess.Popen[str], url: str, paths: list[str], lat: dict[str, list[float]]) -> None:
    """Image by image: a single ``Detector`` call in the offline process, then one request to the service.

    ``lat`` gets, in ms, the call and its forward pass, the request and the service's own inference_ms.
    """
    import httpx

    assert offline.stdin is not None and offline.stdout is not None
    with httpx.Client(base_url=url, timeout=120) as c:
        for p in paths:
            offline.stdin.write(json.dumps(p) + "\n")
            offline.stdin.flush()
            call, forward = json.loads(offline.stdout.readline())
            blob = Path(p).read_bytes()
            t0 = time.perf_counter()
            r = c.post("/v1/detect", content=blob)
            request = time.perf_counter() - t0
            r.raise_for_status()
            for k, v in (("single", call), ("single_forward", forward), ("request", request)):
                lat[k].append(v * 1e3)
            lat["request_forward"].append(r.json()["timings"]["inference_ms"])


def run_turns(a: argparse.Namespace, paths: list[str], url: str, offline: subprocess.Popen[str]) -> dict[str, Any]:
    """Every variant on every chunk, in turns; the totals of each."""
    levels = [int(v) for v in a.concurrency.split(",")]
    runs: dict[Any, list[dict[str, Any]]] = {"offline": [], **{c: [] for c in levels}}
    batches = {c: [0.0, 0.0] for c in levels}
    lat: dict[str, list[float]] = {k: [] for k in ("single", "single_forward", "request", "request_forward")}
    plan: dict[str, Any] = {}
    for k, start in enumerate(range(0, len(paths), a.chunk)):
        chunk = paths[start : start + a.chunk]
        blobs = [Path(p).read_bytes() for p in chunk]
        order: list[Any] = ["offline", *levels]
        for variant in order if k % 2 == 0 else order[::-1]:
            if variant == "offline":
                assert offline.stdin is not None and offline.stdout is not None
                offline.stdin.write(json.dumps(chunk) + "\n")
                offline.stdin.flush()
                res = json.loads(offline.stdout.readline())
                runs["offline"].append(res)
                plan = res["plan"]
                continue
            s0, n0 = batch_totals(url)
            runs[variant].append(load(variant, url, blobs, len(blobs)))
            s1, n1 = batch_totals(url)
            batches[variant][0] += s1 - s0
            batches[variant][1] += n1 - n0
        pair(offline, url, chunk[: a.single], lat)
        print(f"chunk {k}: {len(chunk)} images", file=sys.stderr, flush=True)
    off = runs.pop("offline")
    return {
        "offline_img_s": sum(r["images"] for r in off) / sum(r["seconds"] for r in off),
        "latency_p50_ms": {k: statistics.median(v) for k, v in lat.items()},
        "plan": plan,
        "levels": {c: (summary(r), batches[c][0] / max(batches[c][1], 1)) for c, r in runs.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA / "icdar2015" / "test" / "images")
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--chunk", type=int, default=100, help="images per turn of each variant")
    ap.add_argument(
        "--single", type=int, default=10, help="images per chunk timed one by one, single call then request (latency)"
    )
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--rss-requests", type=int, default=2000, help="requests of the memory check (0: skip)")
    ap.add_argument("--max-batch", type=int, default=None, help="dbdetect serve --max-batch (default: its own)")
    ap.add_argument("--max-wait-ms", type=float, default=None, help="dbdetect serve --max-wait-ms")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--streams", type=int, default=None, help="dbdetect serve --streams (default: its own)")
    ap.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE", help="set in the server's environment"
    )
    a = ap.parse_args()
    paths = [str(p) for p in sorted(a.data.glob("*.jpg"))[: a.limit]]
    offline = subprocess.Popen(
        [sys.executable, "-c", OFFLINE, json.dumps(paths[0])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    server, url = start_server(a)
    try:
        res = run_turns(a, paths, url, offline)
        rss = []
        if a.rss_requests:
            blobs = [Path(p).read_bytes() for p in paths]
            load(4, url, blobs, 200)
            rss.append(rss_mb(server.pid)[0])
            load(4, url, blobs, a.rss_requests - 200)
            rss.append(rss_mb(server.pid)[0])
        peak = rss_mb(server.pid)[1]
    finally:
        server.terminate()
        server.wait(30)
        offline.kill()
        offline.wait(30)
    settings = " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in vars(a).items()
        if k in ("max_batch", "max_wait_ms", "streams") and v is not None
    )
    print(
        f"{len(paths)} ICDAR 2015 test images in chunks of {a.chunk}, ppocrv4, {a.threads} threads, "
        f"server settings: {settings or 'its defaults'}, {os.cpu_count()} CPUs"
    )
    print(f"offline pipeline (dbdetect detect, plan {res['plan'] or 'the only one'}): {res['offline_img_s']:.2f} img/s")
    print("| clients | img/s | vs offline | p50 ms | p99 ms | mean batch | errors |")
    print("|---|---|---|---|---|---|---|")
    for c, (r, b) in res["levels"].items():
        print(
            f"| {c} | {r['img_s']:.2f} | {r['img_s'] / res['offline_img_s']:.3f}x | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {b:.2f} | {r['errors']} |"
        )
    p50 = res["latency_p50_ms"]
    print(
        f"latency, image by image ({a.single} per chunk): single Detector call p50 {p50['single']:.1f} ms "
        f"(forward pass {p50['single_forward']:.1f}), one request to the idle service p50 {p50['request']:.1f} ms "
        f"(forward pass {p50['request_forward']:.1f}): {p50['request'] - p50['single']:+.1f} ms (goal <= 10)"
    )
    if rss:
        print(
            f"server RSS after 200 requests {rss[0]:.0f} MB, after {a.rss_requests}: {rss[1]:.0f} MB "
            f"(+{rss[1] - rss[0]:.0f} MB); peak {peak:.0f} MB"
        )


if __name__ == "__main__":
    main()
