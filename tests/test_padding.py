"""Padded batches of mixed sizes give each image's own result (dbdetect.models.padding, dbdetect.batching)."""

import random
import threading

import numpy as np
import pytest
import torch

from dbdetect import Detector, models
from dbdetect.batching import MAX_PADDING, forward_all, plan_batches
from dbdetect.evaluation.protocol import polygon_iou
from dbdetect.models import padding

# network input sides (multiples of 32) each test image is prepared at: a mixed batch
SIDES = (960, 896, 800, 736, 672)


def _mixed_inputs(det, paths):
    """The images prepared at different sides (and orientations): inputs of as many shapes."""
    xs = []
    for k, p in enumerate(paths):
        img = det._load(p, None)
        if k % 2:
            img = np.ascontiguousarray(img.transpose(1, 0, 2))  # portrait
        det.limit_side_len = SIDES[k % len(SIDES)]
        xs.append((img, det._prepare(img)))
    return xs


@pytest.fixture(scope="module")
def ppocr():
    det = Detector("ppocrv4")
    det.runtime.pads = True  # what a GPU runtime does; here on the CPU
    return det


def test_plan_batches_without_padding_groups_equal_shapes_in_order():
    shapes = [(64, 96), (64, 64), (64, 96), (64, 96), (32, 32)]
    assert plan_batches(shapes, 8) == [[0, 2, 3], [1], [4]]
    assert plan_batches(shapes, 2) == [[0, 2], [3], [1], [4]]


def test_plan_batches_with_padding_covers_each_input_once_within_the_limits():
    rng = random.Random(0)
    for _ in range(200):
        shapes = [(32 * rng.randint(1, 30), 32 * rng.randint(1, 30)) for _ in range(rng.randint(1, 40))]
        size = rng.randint(1, 9)
        batches = plan_batches(shapes, size, pad=True)
        assert sorted(i for b in batches for i in b) == list(range(len(shapes)))
        for b in batches:
            assert 1 <= len(b) <= size
            group = [shapes[i] for i in b]
            canvas = max(h for h, _ in group) * max(w for _, w in group) * len(group)
            assert canvas <= (1 + MAX_PADDING) * sum(h * w for h, w in group)


def test_plan_batches_with_padding_fills_batches_of_near_sizes():
    shapes = [(960, 544), (960, 512), (960, 544), (928, 544)] * 4
    assert [len(b) for b in plan_batches(shapes, 8, pad=True)] == [8, 8]


@pytest.mark.parametrize("kwargs", [dict(batch_size=0), dict(batch_size=2, max_padding=-0.1)])
def test_plan_batches_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError, match="must be"):
        plan_batches([(32, 32)], **kwargs)


def test_regions_reject_a_size_outside_the_canvas():
    with pytest.raises(ValueError, match="within the padded shape"):
        with padding.regions([(64, 64), (96, 32)], (64, 64)):
            pass


def test_hooks_change_nothing_outside_a_padded_batch():
    torch.manual_seed(0)
    net = models.create("ppocrv4", pretrained=False).eval()
    x = torch.rand(2, 3, 96, 128)
    with torch.inference_mode():
        before = net(x)
        padding.install(net)
        padding.install(net)  # idempotent: one hook per layer
        after = net(x)
    assert torch.equal(before, after)
    hooked = [m for m in net.modules() if m._forward_pre_hooks]
    assert hooked and all(len(m._forward_pre_hooks) == 1 for m in hooked)


@pytest.mark.parametrize("arch", ["ppocrv4", "dbnet_resnet18", "dbnet_mobilenetv3"])
def test_padded_pass_equals_each_images_own_pass(arch):
    """Random weights (BatchNorm in eval): every architecture's maps, image by image, to float rounding."""
    torch.manual_seed(0)
    net = padding.install(models.create(arch, pretrained=False).eval())
    sizes = [(96, 160), (160, 64), (32, 32), (128, 128)]
    xs = [torch.randn(1, 3, h, w) for h, w in sizes]
    canvas = torch.zeros(len(xs), 3, 160, 160)
    for k, x in enumerate(xs):
        canvas[k, :, : x.shape[2], : x.shape[3]] = x[0]
    with torch.inference_mode():
        own = [net(x)[0, 0] for x in xs]
        with padding.regions(sizes, (160, 160)):
            padded = net(canvas)
        unmasked = net(canvas)
    for k, (h, w) in enumerate(sizes):
        torch.testing.assert_close(padded[k, 0, :h, :w], own[k], atol=2e-5, rtol=1e-4)

    # the masks are what makes it equal: without them the padding leaks into the maps
    def error(maps):
        return max(float((maps[k, 0, :h, :w] - own[k]).abs().max()) for k, (h, w) in enumerate(sizes))

    assert error(unmasked) > 20 * max(error(padded), 1e-6)


def test_a_region_in_one_thread_does_not_mask_another(ppocr):
    x = np.random.default_rng(0).random((1, 3, 64, 96), dtype=np.float32)
    expected = ppocr._forward(x)
    got = []
    padding.install(ppocr.model)
    with padding.regions([(32, 32)], (64, 96)):
        t = threading.Thread(target=lambda: got.append(ppocr._forward(x)))
        t.start()
        t.join()
    np.testing.assert_array_equal(got[0], expected)


def _matched(a, b, iou=0.95):
    """How many boxes of ``a`` have a box of ``b`` at IoU >= ``iou``."""
    return sum(any(polygon_iou(p.polygon, q.polygon) >= iou for q in b) for p in a)


def _check_mixed_batch(det, paths, atol: float, exact_count: bool = True) -> None:
    """Padded passes over the images at several shapes find each image's own boxes (>= 99% at IoU 0.95)."""
    prepared = _mixed_inputs(det, paths)
    assert len({x.shape for _, x in prepared}) >= 5
    plan = plan_batches([x.shape[-2:] for _, x in prepared], len(prepared), pad=True)
    assert any(len({prepared[i][1].shape for i in b}) > 1 for b in plan)  # some passes are padded
    probs = forward_all(det, [x for _, x in prepared], batch_size=len(prepared))
    own = [det._forward(x[None])[0] for _, x in prepared]
    total = found = 0
    for (img, x), p, q in zip(prepared, probs, own):
        assert p.shape == q.shape == x.shape[-2:]
        np.testing.assert_allclose(p, q, atol=atol)
        single, batched = det._boxes(q, img.shape[:2]), det._boxes(p, img.shape[:2])
        total += len(single)
        found += _matched(single, batched)
        assert len(batched) == len(single) or not exact_count
    assert total > 40 and found >= 0.99 * total


def test_mixed_size_batch_finds_the_single_image_boxes(ic15, ppocr):
    _check_mixed_batch(ppocr, [ic15 / "test" / "images" / f"img_{i}.jpg" for i in range(1, 11)], atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mixed_size_batch_on_a_gpu_in_fp16(ic15):
    det = Detector("ppocrv4", device="cuda")  # fp16, channels-last, padded buckets: the GPU defaults
    assert det.runtime.pads and det.runtime.precision == "fp16"
    paths = [ic15 / "test" / "images" / f"img_{i}.jpg" for i in range(1, 21)]
    # fp16 sums in another order in a batch than alone: maps agree to fp16 rounding, boxes at IoU 0.95
    _check_mixed_batch(det, paths, atol=2e-2, exact_count=False)


def test_detect_batch_runs_mixed_sizes_in_padded_passes(ic15, ppocr, monkeypatch):
    paths = [ic15 / "test" / "images" / f"img_{i}.jpg" for i in range(1, 7)]
    imgs = [ppocr._load(p, None) for p in paths]
    imgs = [im if k % 2 == 0 else np.ascontiguousarray(im[: 400 + 40 * k]) for k, im in enumerate(imgs)]
    ppocr.limit_side_len = 960
    single = [ppocr(im) for im in imgs]
    calls = []
    run_padded = ppocr.runtime.run_padded
    monkeypatch.setattr(ppocr.runtime, "run_padded", lambda xs: calls.append(len(xs)) or run_padded(xs))
    batched = ppocr.detect_batch(imgs, batch_size=6, workers=0, streams=1)
    assert calls and max(calls) >= 2
    for a, b in zip(single, batched):
        assert len(a) == len(b) and _matched(a, b) == len(a)


def test_service_batch_of_mixed_sizes_answers_as_single_calls(ic15, ppocr):
    pytest.importorskip("fastapi")
    from dbdetect.serve.batcher import Job, run_jobs
    from dbdetect.serve.engine import Engine

    ppocr.limit_side_len = 736
    names = ["img_108.jpg", "img_10.jpg", "img_125.jpg"]
    sides = [736, 704, None]  # None: the detector's own
    jobs = [
        Job((ic15 / "test" / "images" / n).read_bytes(), {} if s is None else {"limit_side_len": s}, None)
        for n, s in zip(names, sides)
    ]
    batches = []
    answers = run_jobs(Engine(ppocr), jobs, batches.append)
    assert max(batches) >= 2  # two shapes shared a pass
    for n, s, (img, dets, timings) in zip(names, sides, answers):
        assert timings["batch"] >= 1 and img.ndim == 3
        single = Detector("ppocrv4", limit_side_len=s or 736)(ic15 / "test" / "images" / n)
        assert len(dets) == len(single) and _matched(single, dets) == len(single)
