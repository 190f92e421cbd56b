"""The API on Ray Serve with 2 replicas, on 127.0.0.1: the same answers as the single process."""

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
serve = pytest.importorskip("ray.serve")

import ray  # noqa: E402

import dbdetect  # noqa: E402
from dbdetect.serve import ServeSettings  # noqa: E402

NAMES = ["img_108.jpg", "img_10.jpg", "img_125.jpg"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_replicas_answer_like_the_single_process(ic15):
    from dbdetect.serve.ray_serve import start

    images = {n: (ic15 / "test" / "images" / n).read_bytes() for n in NAMES}
    det = dbdetect.Detector("ppocrv4", num_threads=1)
    want = {n: [d.to_dict() for d in det(data)] for n, data in images.items()}
    port = _free_port()
    try:
        url = start(ServeSettings(threads=1, max_batch=2), None, 2, "127.0.0.1", port)
        assert url == f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=120) as client:
            deadline = time.monotonic() + 180
            while (ready := client.get("/readyz")).status_code != 200:
                assert ready.status_code == 503, ready.text  # loading; anything else is broken
                assert time.monotonic() < deadline, "the replicas did not get ready"
                time.sleep(0.5)
            order = NAMES * 3
            with ThreadPoolExecutor(4) as pool:
                got = list(pool.map(lambda n: client.post("/v1/detect", content=images[n]), order))
            assert all(r.status_code == 200 for r in got), [r.text for r in got if r.status_code != 200]
            assert [r.json()["detections"] for r in got] == [want[n] for n in order]
            bad = client.post("/v1/detect", content=b"not an image")
            assert bad.status_code == 415 and "supported format" in bad.json()["detail"]
        app = serve.status().applications["dbdetect"]
        replicas = app.deployments["dbdetect"].replica_states
        assert replicas.get("RUNNING") == 2, replicas
    finally:
        serve.shutdown()
        ray.shutdown()
