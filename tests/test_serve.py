"""`dbdetect serve` on 127.0.0.1 (ephemeral ports): answers equal `Detector`, every bad input gets its
status and the service carries on, overload gets 503s, auth, metrics, and the command itself."""

import base64
import contextlib
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

import dbdetect  # noqa: E402
from dbdetect.serve import ServeSettings, create_app  # noqa: E402
from dbdetect.serve.engine import Engine  # noqa: E402

NAMES = ["img_108.jpg", "img_10.jpg", "img_125.jpg"]


@pytest.fixture(scope="module")
def detector():
    return dbdetect.Detector("ppocrv4", num_threads=2)


@pytest.fixture(scope="module")
def images(ic15):
    return {n: (ic15 / "test" / "images" / n).read_bytes() for n in NAMES}


@contextlib.contextmanager
def running(settings, engine=None):
    """The app on 127.0.0.1 at a free port, in a thread; shut down on exit."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, engine), host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive()


@pytest.fixture(scope="module")
def api(detector):
    with running(ServeSettings(max_body_mb=2, max_pixels=20_000_000, max_files=3), Engine(detector)) as client:
        yield client


def expected(detector, data, **kw):
    if kw:
        det = dbdetect.Detector("ppocrv4", num_threads=2, **kw)
        return [d.to_dict() for d in det(data)]
    return [d.to_dict() for d in detector(data)]


def test_health_ready_metrics_and_page(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json()["status"] == "ready"
    page = api.get("/")
    assert page.status_code == 200 and 'id="view"' in page.text and "http" not in page.text.split("<script>")[0]
    assert "/v1/detect" in api.get("/openapi.json").json()["paths"]


def test_raw_multipart_and_json_equal_the_detector(api, detector, images):
    for data in images.values():
        r = api.post("/v1/detect", content=data, headers={"content-type": "image/jpeg"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["detections"] == expected(detector, data) and body["model"] == "ppocrv4"
        assert (body["width"], body["height"]) == (1280, 720) and body["timings"]["inference_ms"] > 0
    files = [("file", (n, images[n], "image/jpeg")) for n in NAMES[:2]]
    r = api.post("/v1/detect", files=files)
    assert r.status_code == 200, r.text
    assert [res["detections"] for res in r.json()["results"]] == [expected(detector, images[n]) for n in NAMES[:2]]
    r = api.post("/v1/detect", json={"image": base64.b64encode(images[NAMES[2]]).decode()})
    assert r.status_code == 200 and r.json()["detections"] == expected(detector, images[NAMES[2]])


def test_settings_as_query_form_and_json(api, detector, images):
    data = images[NAMES[0]]
    want = expected(detector, data, thresh=0.5, box_thresh=0.7, unclip_ratio=2.0)
    q = {"thresh": 0.5, "box_thresh": 0.7, "unclip_ratio": 2.0}
    assert api.post("/v1/detect", params=q, content=data).json()["detections"] == want
    form = {k: str(v) for k, v in q.items()}
    assert api.post("/v1/detect", data=form, files={"file": ("a.jpg", data)}).json()["detections"] == want
    doc = {"image": base64.b64encode(data).decode(), **q}
    assert api.post("/v1/detect", json=doc).json()["detections"] == want
    poly = api.post("/v1/detect", params={"box_type": "poly", "limit_side_len": 960}, content=data).json()
    assert poly["detections"] == expected(detector, data, box_type="poly", limit_side_len=960)
    vis = api.post("/v1/detect", params={"visualize": 1}, content=data).json()
    assert vis["visualization"].startswith("data:image/png;base64,")


def _png_header(w, h):
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sIIBBBBB", 13, b"IHDR", w, h, 8, 2, 0, 0, 0) + b"\0" * 64


BAD = [
    ("a body over --max-body-mb", dict(content=b"\xff\xd8\xff" + b"\0" * (3 * 1024 * 1024)), 413, "--max-body-mb"),
    ("a decompression bomb", dict(content=_png_header(100_000, 100_000)), 413, "over the limit of 20000000"),
    ("not an image", dict(content=b"hello, this is text"), 415, "not an image of a supported format"),
    ("an empty body", dict(content=b""), 422, "empty upload"),
    ("a thresh out of range", dict(params={"thresh": 2}), 422, "thresh must be in (0, 1)"),
    ("a thresh that is no number", dict(params={"thresh": "abc"}), 422, "thresh"),
    ("an unknown box type", dict(params={"box_type": "circle"}), 422, "box_type"),
    ("bad JSON", dict(content=b"{oops", headers={"content-type": "application/json"}), 422, "JSON body is invalid"),
    ("bad base64", dict(json={"image": "***"}), 422, "not valid base64"),
    ("JSON without an image", dict(json={"thresh": 0.3}), 422, '"image"'),
    ("multipart without a file", dict(data={"thresh": "0.3"}, files={"other": ("x", b"1")}), 422, "'file'"),
]


@pytest.mark.parametrize("what, request_kw, status, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_its_status_and_the_service_carries_on(api, images, what, request_kw, status, message):
    kw = dict(request_kw)
    if "params" in kw and "content" not in kw:
        kw["content"] = images[NAMES[0]]
    r = api.post("/v1/detect", **kw)
    assert r.status_code == status, r.text
    assert message in json.dumps(r.json()["detail"]).replace('\\"', '"')  # FastAPI's own 422s list the fields
    assert api.post("/v1/detect", content=images[NAMES[1]]).status_code == 200


def test_truncated_and_too_many_files(api, images):
    data = images[NAMES[0]]
    r = api.post("/v1/detect", content=data[: len(data) // 2])
    assert r.status_code == 422 and "truncated" in r.json()["detail"]
    r = api.post("/v1/detect", files=[("file", (f"{k}.jpg", data[:1000])) for k in range(4)])
    assert r.status_code == 413 and "at most 3" in r.json()["detail"]
    assert api.post("/v1/detect", content=data).status_code == 200


def test_metrics_count_requests_batches_and_rejections(api, images):
    api.post("/v1/detect", content=b"nope")
    text = api.get("/metrics").text
    for name in ("dbdetect_requests_total", "dbdetect_request_seconds_bucket", "dbdetect_batch_size_count"):
        assert name in text
    assert 'dbdetect_requests_total{status="415"}' in text and 'dbdetect_rejections_total{reason="bad_input"}' in text
    assert "dbdetect_queue_depth" in text and "dbdetect_in_flight" in text


def test_overload_gets_503_and_no_lost_or_duplicated_answers(detector, images):
    settings = ServeSettings(max_queue=2, max_batch=2, max_wait_ms=1)
    with running(settings, Engine(detector)) as client:
        want = {n: expected(detector, images[n]) for n in NAMES}
        order = [NAMES[k % 3] for k in range(24)]

        def call(name):
            r = client.post("/v1/detect", content=images[name])
            return name, r.status_code, r.json(), r.headers.get("retry-after")

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(call, order))
        ok = [r for r in results if r[1] == 200]
        refused = [r for r in results if r[1] == 503]
        assert ok and refused and len(ok) + len(refused) == len(order)
        assert all(body["detections"] == want[name] for name, _, body, _ in ok)
        assert all(retry == "1" and "queue is full" in body["detail"] for _, _, body, retry in refused)
        assert client.post("/v1/detect", content=images[NAMES[0]]).status_code == 200
        assert 'dbdetect_rejections_total{reason="queue_full"}' in client.get("/metrics").text


def test_batches_gather_concurrent_requests(detector, images):
    with running(ServeSettings(max_batch=4, max_wait_ms=50, max_queue=16), Engine(detector)) as client:
        with ThreadPoolExecutor(4) as pool:
            bodies = list(pool.map(lambda n: client.post("/v1/detect", content=images[n]).json(), NAMES * 2))
        assert max(b["timings"]["batch"] for b in bodies) >= 2
        assert all(b["detections"] == expected(detector, images[NAMES[k % 3]]) for k, b in enumerate(bodies))


def test_timeout_answers_504(detector, images):
    with running(ServeSettings(timeout_s=0.001), Engine(detector)) as client:
        r = client.post("/v1/detect", content=images[NAMES[0]])
        assert r.status_code == 504 and "--timeout" in r.json()["detail"]
        assert client.get("/healthz").status_code == 200


def test_api_keys(detector, images, tmp_path):
    from dbdetect.serve import read_api_keys

    keys = tmp_path / "keys.txt"
    keys.write_text("# service keys\n" + "k" * 32 + "\n")
    with running(ServeSettings(api_keys=read_api_keys(keys)), Engine(detector)) as client:
        data = images[NAMES[0]]
        r = client.post("/v1/detect", content=data)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert client.post("/v1/detect", content=data, headers={"authorization": "Bearer wrong"}).status_code == 401
        ok = client.post("/v1/detect", content=data, headers={"authorization": "Bearer " + "k" * 32})
        assert ok.status_code == 200 and ok.json()["detections"] == expected(detector, data)
        assert client.get("/healthz").status_code == 200  # health stays open for probes
    short = tmp_path / "short.txt"
    short.write_text("abc\n")
    with pytest.raises(ValueError, match="at least 16 characters"):
        read_api_keys(short)


@pytest.mark.parametrize("field, value", [("max_batch", 0), ("max_queue", 0), ("timeout_s", 0), ("max_body_mb", -1)])
def test_bad_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        ServeSettings(**{field: value})


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_command_serves_and_stops(images):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbdetect", "serve", "--port", str(port), "--threads", "2", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            while True:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "dbdetect serve did not get ready"
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            r = client.post("/v1/detect", content=images[NAMES[0]])
            assert r.status_code == 200 and json.loads(r.text)["detections"]
    finally:
        proc.terminate()
        proc.wait(30)
    bad = subprocess.run(
        [sys.executable, "-m", "dbdetect", "serve", "--max-batch", "0"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "max_batch must be >= 1" in bad.stderr
