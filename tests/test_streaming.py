"""Streaming detection and resumable runs: generators in, a SIGKILLed `dbdetect detect` resumed."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dbdetect import Detector
from dbdetect.jsonl import open_results
from dbdetect.pipeline import detect_stream, prefetch

FAST = ["--limit-side-len", "320", "--limit-type", "max"]


def test_prefetch_keeps_order_and_bounds_work_ahead():
    started = []

    def slow_square(x):
        started.append(x)
        time.sleep(0.01 * (x % 3))  # finish out of order
        return x * x

    gen = prefetch(iter(range(50)), slow_square, workers=3, depth=4)
    first = next(gen)
    assert first == (0, 0, None)
    assert len(started) <= 5  # never more than depth ahead of the consumer
    rest = list(gen)
    assert [v for _, v, _ in rest] == [x * x for x in range(1, 50)]


def test_stream_from_a_generator_equals_single_calls(ic15):
    det = Detector("ppocrv4", limit_side_len=320, limit_type="max")
    paths = [ic15 / "test" / "images" / f"img_{i}.jpg" for i in (1, 2, 3, 4, 5)]
    small = np.zeros((40, 300, 3), np.uint8)  # another network shape in the same window
    inputs = [paths[0], small, *paths[1:]]
    streamed = list(det.stream((p for p in inputs), batch_size=2, workers=2))
    listed = det.detect_batch(iter(inputs), batch_size=2, workers=0)  # today's return type, no threads
    assert [[d.to_dict() for d in r] for r in listed] == [[d.to_dict() for d in r] for r in streamed]
    for src, dets in zip(inputs, streamed, strict=True):
        ref = det(src)
        assert len(ref) == len(dets)
        for a, b in zip(ref, dets):
            assert np.abs(a.polygon - b.polygon).max() <= 1.0 and abs(a.score - b.score) <= 1e-3
    assert sum(map(len, streamed)) > 0


@pytest.mark.parametrize("batch_size", [1, 2])
def test_two_streams_give_the_one_stream_results_in_order(ic15, batch_size):
    det = Detector("ppocrv4", limit_side_len=320, limit_type="max")
    inputs = [ic15 / "test" / "images" / f"img_{i}.jpg" for i in range(1, 8)]
    inputs.insert(3, np.zeros((40, 300, 3), np.uint8))
    one = list(detect_stream(det, inputs, batch_size=batch_size, workers=1, streams=1))
    two = list(detect_stream(det, iter(inputs), batch_size=batch_size, workers=1, streams=2))
    assert [r.index for r in two] == list(range(len(inputs)))
    assert [[d.to_dict() for d in r.detections] for r in two] == [[d.to_dict() for d in r.detections] for r in one]
    assert sum(len(r.detections) for r in two) > 0
    with pytest.raises(ValueError, match="streams"):
        next(detect_stream(det, inputs, streams=0))


def test_a_model_failure_in_a_stream_thread_is_raised(monkeypatch):
    det = Detector("ppocrv4", limit_side_len=640, limit_type="max")
    images = [np.zeros((64, 64 * (k + 1), 3), np.uint8) for k in range(6)]  # image k has width 64 (k + 1)

    def forward(batch):
        if batch.shape[-1] == 64 * 3:
            raise ValueError("the model produced NaN probabilities")
        return np.zeros((batch.shape[0],) + batch.shape[2:], np.float32)

    monkeypatch.setattr(det, "_forward", forward)
    got = []
    with pytest.raises(ValueError, match="NaN"):
        for r in detect_stream(det, images, streams=2):
            got.append(r.index)
    assert got == [0, 1]  # everything before the failure, in order, then the error


def test_stream_reports_bad_images_and_goes_on(ic15, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    det = Detector("ppocrv4", limit_side_len=96, limit_type="max")
    good = ic15 / "test" / "images" / "img_1.jpg"
    res = list(detect_stream(det, [good, bad, good], workers=1))
    assert [r.error is None for r in res] == [True, False, True]
    assert "bad.jpg" in str(res[1].error) and res[0].shape == (720, 1280)
    with pytest.raises(ValueError, match="bad.jpg"):
        list(det.stream([good, bad]))


def test_resume_cuts_a_torn_line_and_rejects_foreign_lines(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"path": "a.jpg", "scores": []}\n{"path": "b.j')
    done, f = open_results(out, resume=True)
    f.write_record({"path": "b.jpg", "scores": []})
    f.close()
    assert done == {os.path.abspath("a.jpg")}
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == ["a.jpg", "b.jpg"]
    out.write_text('{"path": "a.jpg"}\nhello\n')
    with pytest.raises(ValueError, match="line 2"):
        open_results(out, resume=True)
    with pytest.raises(ValueError, match="already exists"):
        open_results(out)


def _detect(*args):
    return [sys.executable, "-m", "dbdetect", "detect", "--no-progress", *FAST, *map(str, args)]


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_sigkilled_run_resumes_to_the_uninterrupted_result(ic15, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(1, 17):
        (imgs / f"img_{i}.jpg").symlink_to(ic15 / "test" / "images" / f"img_{i}.jpg")
    ref_out, out = tmp_path / "ref.jsonl", tmp_path / "run.jsonl"
    # The reference runs one forward pass at a time; the killed and resumed runs use the default two streams.
    r = subprocess.run(
        _detect(imgs, "--out", ref_out, "--streams", "1", "--workers", "0"), capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr

    proc = subprocess.Popen(_detect(imgs, "--out", out, "--workers", "2", "--threads", "2"), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(_lines(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    written = len(_lines(out))
    assert 2 <= written < 16
    with open(out, "a") as f:  # what a kill during a write leaves: a line without its newline
        f.write('{"path": "' + str(imgs / "img_15.jpg"))

    r = subprocess.run(_detect(imgs, "--out", out, "--resume"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "already there" in r.stderr
    got = [json.loads(line) for line in _lines(out)]
    ref = [json.loads(line) for line in _lines(ref_out)]
    assert len(got) == 16 and len({g["path"] for g in got}) == 16  # every image exactly once
    assert sorted(got, key=lambda g: g["path"]) == sorted(ref, key=lambda g: g["path"])
    assert sum(len(g["polygons"]) for g in got) > 0


def test_ray_option_without_ray_names_the_extra(ic15, tmp_path, monkeypatch, capsys):
    from dbdetect.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    assert main(["detect", "--ray", str(ic15 / "test" / "images" / "img_1.jpg"), "--out", str(tmp_path / "o")]) == 2
    assert 'pip install "dbdetect[ray]"' in capsys.readouterr().err


def test_single_malloc_arena_on_glibc():
    import platform

    from dbdetect.pipeline import single_malloc_arena

    assert single_malloc_arena() is (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")


# ---------------------------------------------------------------- the plan chosen by measurement


def test_candidate_plans_follow_what_is_left_to_choose():
    import torch

    from dbdetect.pipeline import Plan, candidate_plans

    det = Detector("ppocrv4", limit_side_len=96, limit_type="max")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert candidate_plans(det) == [Plan(1, 0, 2), Plan(1, 1, 2), Plan(2, 0, 1), Plan(2, 1, 1)]
        assert candidate_plans(det, workers=1) == [Plan(1, 1, 2), Plan(2, 1, 1)]
        assert candidate_plans(det, streams=1) == [Plan(1, 0, 2), Plan(1, 1, 2)]
        assert candidate_plans(det, workers=0, streams=2) == [Plan(2, 0, 1)]
        torch.set_num_threads(1)
        assert candidate_plans(det, workers=1) == [Plan(1, 1, 1)]  # one thread: nothing to share
    finally:
        torch.set_num_threads(before)

    class Gpu:
        backend, device = "torch", "cuda:0"

    assert candidate_plans(Gpu()) == [Plan(1, 1, None)]
    for bad in (0, -1, 1.5, "two", True):
        with pytest.raises(ValueError, match="streams"):
            candidate_plans(det, streams=bad)
    with pytest.raises(ValueError, match="workers"):
        candidate_plans(det, workers=-1)


@pytest.mark.parametrize("slow_streams", [1, 2])
def test_auto_plan_picks_the_faster_and_keeps_results(monkeypatch, caplog, slow_streams):
    import logging
    import time

    import torch

    import dbdetect.pipeline as pipeline

    det = Detector("ppocrv4", limit_side_len=96, limit_type="max")
    images = [np.full((64, 64 + 32 * (k % 3), 3), 40 * k % 255, np.uint8) for k in range(30)]

    def forward(batch):
        # a machine where the plan of `slow_streams` streams is the slow one; the map
        # depends on the input, so a result out of order would show
        streams = 2 if torch.get_num_threads() == 1 else 1
        time.sleep(0.05 if streams == slow_streams else 0.0)
        prob = np.zeros((batch.shape[0],) + batch.shape[2:], np.float32)
        prob[:, 8:24, 8 : 8 + batch.shape[-1] // 2] = 0.9
        return prob

    monkeypatch.setattr(det, "_forward", forward)
    want = [[d.to_dict() for d in r.detections] for r in pipeline.detect_stream(det, images, workers=0, streams=1)]
    assert all(want)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with caplog.at_level(logging.INFO, logger="dbdetect.pipeline"):
            got = list(pipeline.detect_stream(det, iter(images)))
        assert torch.get_num_threads() == 2  # the stream's thread settings are undone
    finally:
        torch.set_num_threads(before)
    assert [r.index for r in got] == list(range(len(images)))
    assert [[d.to_dict() for d in r.detections] for r in got] == want
    (line,) = [r.getMessage() for r in caplog.records if "stream plan" in r.getMessage()]
    assert line.startswith(f"stream plan: {3 - slow_streams} stream(s)")


def test_auto_plan_on_a_stream_shorter_than_the_probe(ic15):
    det = Detector("ppocrv4", limit_side_len=96, limit_type="max")
    img = ic15 / "test" / "images" / "img_1.jpg"
    assert [r.index for r in detect_stream(det, [img] * 3)] == [0, 1, 2]
    assert list(detect_stream(det, [])) == []


def test_choose_plan_takes_the_highest_pixel_rate():
    from dbdetect.pipeline import Plan, _Probe, choose_plan

    a, b = Plan(1, 0, 2), Plan(2, 1, 1)
    probe = _Probe()
    probe.add(a, 1.0, 1000)
    probe.add(b, 1.0, 900)
    probe.add(b, 0.5, 900)  # 1800 px in 1.5 s beats 1000 px in 1 s
    assert choose_plan([a, b], probe) == b


def test_choose_plan_keeps_the_first_plan_unless_another_is_clearly_faster():
    from dbdetect.pipeline import MARGIN, Plan, _Probe, choose_plan

    first, other = Plan(1, 0, 2), Plan(1, 1, 2)
    for gain, want in ((0.5 * MARGIN, first), (2 * MARGIN, other)):
        probe = _Probe()
        probe.add(first, 1.0, 1000)
        probe.add(other, 1.0, int(1000 * (1 + gain)))
        assert choose_plan([first, other], probe) == want


def test_probe_gives_a_far_slower_plan_one_pass_only(monkeypatch):
    import time

    import torch

    import dbdetect.pipeline as pipeline

    det = Detector("ppocrv4", limit_side_len=96, limit_type="max")
    images = [np.full((64, 64, 3), 6 * k, np.uint8) for k in range(40)]
    seen = []

    def forward(batch):
        streams = 2 if torch.get_num_threads() == 1 else 1
        seen.append(streams)
        time.sleep(0.06 if streams == 2 else 0.01)  # two streams: far slower
        return np.zeros((batch.shape[0],) + batch.shape[2:], np.float32)

    monkeypatch.setattr(det, "_forward", forward)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert len(list(pipeline.detect_stream(det, images, workers=0))) == len(images)
    finally:
        torch.set_num_threads(before)
    # an untimed pass per stream (kernels for the new thread count), a timed one, then no more images
    assert seen.count(2) == 4


# ---------------------------------------------------------------- batches of mixed sizes


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_on_cpu_finds_the_fp32_boxes(ic15, precision):
    from dbdetect.evaluation.protocol import polygon_iou

    img = ic15 / "test" / "images" / "img_1.jpg"
    ref = Detector("ppocrv4")(img)
    det = Detector("ppocrv4", precision=precision)
    assert det.precision == precision and next(det.model.parameters()).dtype != np.float32
    got = det(img)
    assert ref and len(got) == len(ref)
    assert all(max(polygon_iou(r.polygon, g.polygon) for g in got) >= 0.8 for r in ref)
    assert det.probability_map(img).dtype == np.float32


def test_precision_is_checked():
    assert Detector("ppocrv4", limit_side_len=64).precision == "fp32"  # auto on a CPU
    with pytest.raises(ValueError, match="precision must be one of"):
        Detector("ppocrv4", precision="int4")


# ---------------------------------------------------------------- remembered plans


def _timed_forward(det, monkeypatch, slow_streams, seen):
    import time

    import torch

    def forward(batch):
        streams = 2 if torch.get_num_threads() == 1 else 1
        seen.append(streams)
        time.sleep(0.03 if streams == slow_streams else 0.005)
        return np.zeros((batch.shape[0],) + batch.shape[2:], np.float32)

    monkeypatch.setattr(det, "_forward", forward)


def _run_two_threads(det, images, **kw):
    import torch

    import dbdetect.pipeline as pipeline

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        return list(pipeline.detect_stream(det, images, **kw))
    finally:
        torch.set_num_threads(before)


def test_a_finished_probe_is_remembered_and_the_next_stream_skips_it(monkeypatch, tmp_path):
    import json

    from dbdetect import plan_cache

    path = tmp_path / "plans.json"
    monkeypatch.setenv("DBDETECT_PLAN_CACHE", str(path))
    det = Detector("ppocrv4", limit_side_len=96, limit_type="max")
    images = [np.full((64, 64, 3), 5 * k, np.uint8) for k in range(20)]
    seen: list = []
    _timed_forward(det, monkeypatch, 1, seen)  # one stream is the slow plan here
    assert len(_run_two_threads(det, images, workers=0)) == 20
    assert 2 in seen and 1 in seen  # both plans measured
    (entry,) = json.loads(path.read_text())["plans"].values()
    assert entry["plan"] == [2, 0, 1] and set(entry["rates_mpx_s"]) == {"1s/0w", "2s/0w"}

    seen.clear()
    assert len(_run_two_threads(det, images, workers=0)) == 20
    assert seen == [2] * 20  # no probe: every pass under the remembered plan

    # another input size is another model to the plan: measured anew
    small = Detector("ppocrv4", limit_side_len=64, limit_type="max")
    _timed_forward(small, monkeypatch, 1, seen)
    seen.clear()
    _run_two_threads(small, images, workers=0)
    assert 1 in seen and len(json.loads(path.read_text())["plans"]) == 2

    # an old entry is measured again
    data = json.loads(path.read_text())
    for e in data["plans"].values():
        e["measured"] -= plan_cache.MAX_AGE_S + 1
    path.write_text(json.dumps(data))
    seen.clear()
    _run_two_threads(det, images, workers=0)
    assert 1 in seen


@pytest.mark.parametrize("content", ["{not json", '{"version": 1, "plans": []}', "[1, 2]", ""])
def test_a_damaged_plan_file_means_a_probe_not_an_error(monkeypatch, tmp_path, content):
    path = tmp_path / "plans.json"
    path.write_text(content)
    monkeypatch.setenv("DBDETECT_PLAN_CACHE", str(path))
    det = Detector("ppocrv4", limit_side_len=96, limit_type="max")
    seen: list = []
    _timed_forward(det, monkeypatch, 2, seen)
    assert len(_run_two_threads(det, [np.zeros((64, 64, 3), np.uint8)] * 12, workers=0)) == 12
    assert 2 in seen  # probed
    assert '"plans"' in path.read_text()  # and rewritten


def test_plan_cache_off_and_unwritable(monkeypatch, tmp_path):
    from dbdetect import plan_cache

    det = Detector("ppocrv4", limit_side_len=96, limit_type="max")
    images = [np.zeros((64, 64, 3), np.uint8)] * 12
    seen: list = []
    _timed_forward(det, monkeypatch, 2, seen)
    monkeypatch.setenv("DBDETECT_PLAN_CACHE", "off")
    assert plan_cache.cache_path() is None
    for _ in range(2):
        seen.clear()
        _run_two_threads(det, images, workers=0)
        assert 2 in seen  # probed each time
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("DBDETECT_PLAN_CACHE", str(blocker / "plans.json"))  # its folder is a file
    assert len(_run_two_threads(det, images, workers=0)) == 12


def test_a_stream_shorter_than_the_probe_is_not_remembered(monkeypatch, tmp_path):
    path = tmp_path / "plans.json"
    monkeypatch.setenv("DBDETECT_PLAN_CACHE", str(path))
    det = Detector("ppocrv4", limit_side_len=96, limit_type="max")
    _timed_forward(det, monkeypatch, 2, [])
    assert len(_run_two_threads(det, [np.zeros((64, 64, 3), np.uint8)] * 3, workers=0)) == 3
    assert not path.exists()


def test_tied_plans_take_no_second_turn(monkeypatch):
    import torch

    import dbdetect.pipeline as pipeline
    from dbdetect.pipeline import Plan

    if torch.get_num_threads() != 2:
        monkeypatch.setattr(pipeline, "_torch_threads", lambda: 2)

    det = Detector("ppocrv4", limit_side_len=96, limit_type="max")
    monkeypatch.setattr(det, "_forward", lambda b: np.zeros((b.shape[0],) + b.shape[2:], np.float32))
    runs: list = []
    real = pipeline._run

    def run(det, indexed, plan, *a, **kw):
        runs.append(plan)
        yield from real(det, indexed, plan, *a, **kw)

    monkeypatch.setattr(pipeline, "_run", run)
    images = [np.zeros((64, 64, 3), np.uint8)] * 30
    # rates forged: the worker plan ties with the first (within MARGIN), or leads it clearly
    for gain, second_turn in ((0.5 * pipeline.MARGIN, False), (0.5 * (1 / pipeline.CLOSE - 1 + pipeline.MARGIN), True)):
        runs.clear()

        def rate(self, plan, gain=gain):
            return 1.0 + (gain if plan.workers == 1 else 0.0)

        monkeypatch.setattr(pipeline._Probe, "rate", rate)
        monkeypatch.setenv("DBDETECT_PLAN_CACHE", "off")
        assert len(list(pipeline.detect_stream(det, images, streams=1))) == 30
        # warm-up, then each plan's turn (a first pass and the rest), the rest of the stream last
        probe_runs = runs[:-1]
        assert len(probe_runs) == (7 if second_turn else 5), probe_runs
        assert probe_runs[-2:] == ([Plan(1, 1, 2), Plan(1, 0, 2)] if second_turn else [Plan(1, 1, 2)] * 2)


def test_a_plan_is_timed_after_its_cold_first_pass(monkeypatch, caplog):
    import logging
    import time

    import torch

    import dbdetect.pipeline as pipeline

    det = Detector("ppocrv4", limit_side_len=96, limit_type="max")
    cold = [2]  # the first pass of each stream at one thread builds its kernels: slow

    def forward(batch):
        if torch.get_num_threads() == 1:
            if cold[0]:
                cold[0] -= 1
                time.sleep(0.3)
            else:
                time.sleep(0.005)
        else:
            time.sleep(0.03)
        return np.zeros((batch.shape[0],) + batch.shape[2:], np.float32)

    monkeypatch.setattr(det, "_forward", forward)
    monkeypatch.setenv("DBDETECT_PLAN_CACHE", "off")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with caplog.at_level(logging.INFO, logger="dbdetect.pipeline"):
            got = list(pipeline.detect_stream(det, [np.zeros((64, 64, 3), np.uint8)] * 24, workers=0))
        assert len(got) == 24
        assert (
            pipeline._turn_size(pipeline.Plan(2, 0, 1), 1) == 4 and pipeline._turn_size(pipeline.Plan(1, 0, 2), 1) == 3
        )
    finally:
        torch.set_num_threads(before)
    assert cold == [0]
    (line,) = [r.getMessage() for r in caplog.records if "stream plan" in r.getMessage()]
    assert line.startswith("stream plan: 2 stream(s)"), line  # warm, two streams win
