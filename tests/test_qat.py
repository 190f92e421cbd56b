"""Quantisation-aware training: the fake-quantised model, checkpoints, resume, conversion, CLI and bad input."""

import copy
import json

import numpy as np
import pytest
import torch

from dbdetect import Detector, models
from dbdetect.cli import main
from dbdetect.deploy import qat, torch_int8
from dbdetect.imageio import load_image
from dbdetect.preprocess import prepare

pytestmark = pytest.mark.skipif(
    "x86" not in torch.backends.quantized.supported_engines, reason="torch's x86 int8 engine is not in this torch build"
)


@pytest.fixture(scope="module")
def images(ic15):
    cfg = models.create("ppocrv4_ic15").cfg
    return [
        torch.from_numpy(prepare(load_image(ic15 / "train" / "images" / f"img_{i}.jpg"), cfg, 384, "max"))[None]
        for i in (1, 2, 3)
    ]


def _train(data, out, *extra):
    args = ["train", "--qat", "--model", "ppocrv4_ic15", "--train", str(data), "--max-steps", "4"]
    args += ["--batch-size", "2", "--size", "256", "--workers", "0", "--threads", "2", "--qat-calibration", "2"]
    return main(args + ["--ema", "0.9", "--log-every", "1", "--no-progress", "--out", str(out), *extra])


def _losses(run):
    return [
        r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["type"] == "train"
    ]


def test_calibrated_start_is_post_training_int8(images):
    """Before any step, the converted QAT model is the post-training int8 model (same ranges)."""
    net = models.create("ppocrv4_ic15")
    q = qat.prepare(net, images)
    ptq = torch_int8.quantize_module(models.fuse(copy.deepcopy(net).eval()), images, list(torch_int8.DEFAULT_FP32))
    converted = qat.convert(q)
    q.eval()
    with torch.no_grad():
        a, b, fq = converted(images[0]), ptq(images[0]), q(images[0])
    assert a.shape == b.shape == fq.shape
    # the same int8 network, up to the order of int8 rounding: text pixels agree
    assert ((a > 0.25) == (b > 0.25)).float().mean() > 0.999
    assert (a - b).abs().mean() < 1e-3
    # and the fake-quantised float graph, which training runs, is as close to it
    assert ((fq > 0.25) == (b > 0.25)).float().mean() > 0.999
    # its fp32 convolutions keep the post-training layout (channels-last: oneDNN's fast path)
    layouts = {
        n: m.weight.is_contiguous(memory_format=torch.channels_last)
        for n, m in converted.named_modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and m.weight.shape[-1] > 1
    }
    assert layouts and all(layouts.values()), layouts


def test_train_mode_gives_the_three_maps_and_gradients_reach_every_weight(images):
    q = qat.prepare(models.create("ppocrv4_ic15"), images[:1]).train()
    out = q(torch.cat([images[0], images[0]]))
    assert set(out) == {"prob", "thresh", "binary"} and out["prob"].shape[0] == 2
    (out["binary"].mean() + out["thresh"].mean()).backward()
    missing = [n for n, p in q.named_parameters() if p.grad is None]
    assert not missing, missing[:5]


def test_checkpoint_round_trip_is_exact(images):
    q = qat.prepare(models.create("ppocrv4_ic15"), images[:2])
    with torch.no_grad():
        for p in q.parameters():  # as if trained
            p.add_(0.001 * torch.randn_like(p))
    ck = {"arch": "ppocrv4_ic15", "model": q.state_dict(), "cfg": q.cfg, qat.CHECKPOINT_KEY: q.qat}
    r = qat.from_checkpoint(ck)
    q.eval(), r.eval()
    with torch.no_grad():
        assert torch.equal(q(images[2]), r(images[2]))


def test_channel_scale_keeps_the_weight_and_copies_convert_alone():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ConvTranspose2d(4, 2, 2, 2))
    before = [m.weight.detach().clone() for m in conv]
    qat._scale_weights(conv)
    for m, w in zip(conv, before):
        assert torch.allclose(m.weight, w, atol=1e-6)
        v = m.parametrizations.weight.original
        dims = (1, 2, 3) if isinstance(m, torch.nn.Conv2d) else (0, 2, 3)
        assert torch.allclose(v.pow(2).mean(dim=dims).sqrt(), torch.full_like(v.pow(2).mean(dim=dims), qat.WEIGHT_RMS))
    plain = copy.deepcopy(conv)
    qat._unscale_weights(plain)
    assert type(plain[0]) is torch.nn.Conv2d and "parametrizations" not in dict(plain[0].named_children())
    for m, w in zip(conv, before):  # the original keeps its parametrisation
        assert torch.allclose(m.weight, w, atol=1e-6)


def test_freeze_fixes_every_range(images):
    q = qat.prepare(models.create("ppocrv4_ic15"), images[:1])
    fqs = [m for m in q.modules() if isinstance(m, torch.ao.quantization.FakeQuantizeBase)]
    assert any(int(m.observer_enabled[0]) for m in fqs)  # the weights' ranges follow the weights
    q.freeze_observers()
    assert not any(int(m.observer_enabled[0]) for m in fqs) and q.qat["observers_frozen"]
    assert all(int(m.fake_quant_enabled[0]) for m in fqs)


def test_cli_qat_trains_resumes_exactly_and_converts(tiny_set, tmp_path, ic15):
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    assert _train(tiny_set, straight) == 0
    assert _train(tiny_set, pieces, "--stop-after", "2") == 0
    assert main(["train", "--resume", str(pieces / "last.pt"), "--no-progress"]) == 0
    assert np.allclose(_losses(straight), _losses(pieces), rtol=1e-4), (_losses(straight), _losses(pieces))
    ck = torch.load(straight / "last.pt", map_location="cpu", weights_only=True)
    assert ck[qat.CHECKPOINT_KEY]["observers_frozen"]  # --qat-freeze 0.25 of 4 steps: the last one
    int8 = straight / "best_int8.torchscript"
    img = ic15 / "test" / "images" / "img_1.jpg"
    prob = Detector(int8, num_threads=2).probability_map(img)
    assert np.isfinite(prob).all() and 0 <= prob.min() and prob.max() <= 1 and prob.max() > 0.5
    _, cfg = torch_int8.load(int8)
    assert cfg["limit_side_len"] == models.create("ppocrv4_ic15").cfg["limit_side_len"]
    # the checkpoint converts again with dbdetect export, without calibration images
    out = tmp_path / "again.torchscript"
    assert main(["export", "--int8", "--model", str(straight / "best.pt"), "--out", str(out)]) == 0
    assert np.allclose(Detector(out, num_threads=2).probability_map(img), prob, atol=1e-6)


def test_qat_checkpoint_bad_uses_are_clear_errors(tiny_set, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tiny_set, run, "--max-steps", "1") == 0
    ckpt = run / "best.pt"
    with pytest.raises(ValueError, match="quantisation-aware training checkpoint"):
        models.create(ckpt)
    with pytest.raises(ValueError, match="quantisation-aware training checkpoint"):
        Detector(ckpt)
    for args, msg in (
        (["--out", str(tmp_path / "x.onnx")], "converts to torch int8"),
        (["--int8", "--out", str(tmp_path / "x.onnx")], "converts to torch int8"),
        (["--int8", "--calib", str(tiny_set), "--out", str(tmp_path / "x.torchscript")], "leave out --calib"),
    ):
        assert main(["export", "--model", str(ckpt), *args]) == 2
        assert msg in capsys.readouterr().err
    assert not list(tmp_path.glob("x.*"))
    for bad, msg in ((["--qat-freeze", "1.5"], "--qat-freeze"), (["--qat-calibration", "0"], "--qat-calibration")):
        assert main(["train", "--qat", "--train", str(tiny_set), "--out", str(tmp_path / "bad"), *bad]) == 2
        assert msg in capsys.readouterr().err
