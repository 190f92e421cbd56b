"""``dbdetect serve`` under closed-loop load on 127.0.0.1, beside the offline pipeline on the same images.

One run: the offline pipeline (``dbdetect detect``'s streaming path) over the images,
single ``Detector`` calls (latency), then the service (``dbdetect serve`` in its own
process) with 1, 4 and 16 closed-loop clients, each level over the same images;
then more requests at concurrency 4 to see whether the server's memory grows.

    python bench/serve.py --limit 500 --rss-requests 2000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA

OFFLINE = """
import json, sys, time
import dbdetect
from dbdetect.pipeline import detect_stream, single_malloc_arena
paths = json.loads(sys.argv[1])
single_malloc_arena()
det = dbdetect.Detector("ppocrv4", num_threads=1)   # 2 streams x 1 thread: dbdetect detect's default on 2 cores
list(detect_stream(det, paths[:2], 1, 1, streams=2))
t = time.perf_counter()
n = sum(1 for r in detect_stream(det, paths, 1, 1, streams=2) if r.error is None)
offline = n / (time.perf_counter() - t)
single = dbdetect.Detector("ppocrv4", num_threads=2)
lat = []
for p in paths[:50]:
    data = open(p, "rb").read()
    t0 = time.perf_counter(); single(data); lat.append(time.perf_counter() - t0)
print(json.dumps({"offline_img_s": offline, "single_p50_ms": sorted(lat)[len(lat) // 2] * 1e3}))
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


def load(client_count: int, url: str, blobs: list[bytes], total: int) -> dict[str, float]:
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
    wall = time.perf_counter() - t
    lat.sort()
    return {
        "img_s": len(lat) / wall,
        "p50_ms": lat[len(lat) // 2] * 1e3,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
        "errors": errors[0],
    }


def batch_mean(url: str) -> float:
    import httpx

    text = httpx.get(url + "/metrics").text
    s = float(re.search(r"^dbdetect_batch_size_sum (\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    n = float(re.search(r"^dbdetect_batch_size_count (\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    return s / max(n, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA / "icdar2015" / "test" / "images")
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--rss-requests", type=int, default=2000, help="requests of the memory check (0: skip)")
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--streams", type=int, default=None, help="dbdetect serve --streams (default: its own)")
    a = ap.parse_args()
    paths = [str(p) for p in sorted(a.data.glob("*.jpg"))[: a.limit]]
    blobs = [Path(p).read_bytes() for p in paths]
    off = subprocess.run([sys.executable, "-c", OFFLINE, json.dumps(paths)], capture_output=True, text=True, check=True)
    offline = json.loads(off.stdout.strip().splitlines()[-1])

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "dbdetect", "serve", "--port", str(port), "--threads", str(a.threads)]
    cmd += ["--max-batch", str(a.max_batch), "--max-wait-ms", str(a.max_wait_ms), "--max-queue", "64"]
    cmd += ["--log-level", "warning"] + (["--streams", str(a.streams)] if a.streams else [])
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import httpx

        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("dbdetect serve did not start: " + (server.stderr.read() or b"").decode()[-2000:])
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        rows = []
        for c in (int(v) for v in a.concurrency.split(",")):
            before = batch_mean(url)
            res = load(c, url, blobs, len(blobs))
            rows.append((c, res, batch_mean(url) if before == before else 0.0))
        rss = []
        if a.rss_requests:
            load(4, url, blobs, 200)
            rss.append(rss_mb(server.pid)[0])
            load(4, url, blobs, a.rss_requests - 200)
            rss.append(rss_mb(server.pid)[0])
        peak = rss_mb(server.pid)[1]
    finally:
        server.terminate()
        server.wait(30)
    streams = a.streams or "default"
    print(
        f"{len(blobs)} ICDAR 2015 test images, ppocrv4, {a.threads} threads, streams {streams}, {os.cpu_count()} CPUs"
    )
    print(
        f"offline pipeline (dbdetect detect): {offline['offline_img_s']:.2f} img/s; "
        f"single Detector call p50 {offline['single_p50_ms']:.1f} ms"
    )
    print("| clients | img/s | vs offline | p50 ms | p99 ms | mean batch | errors |")
    print("|---|---|---|---|---|---|---|")
    for c, r, b in rows:
        print(
            f"| {c} | {r['img_s']:.2f} | {r['img_s'] / offline['offline_img_s']:.3f}x | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {b:.2f} | {r['errors']} |"
        )
    if rss:
        print(
            f"server RSS after 200 requests {rss[0]:.0f} MB, after {a.rss_requests}: {rss[1]:.0f} MB "
            f"(+{rss[1] - rss[0]:.0f} MB); peak {peak:.0f} MB"
        )


if __name__ == "__main__":
    main()
