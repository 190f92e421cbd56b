"""torch's own int8: quantisation, the .torchscript file, Detector and CLI, bad input."""

import json
import os
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from dbdetect import Detector
from dbdetect.deploy.torch_int8 import EXTRA_QUANT, load, quantize_torch
from dbdetect.runtime.int8_cpu import use_engine

pytestmark = pytest.mark.skipif(
    "x86" not in torch.backends.quantized.supported_engines, reason="torch's x86 int8 engine is not in this torch build"
)
WANTED = ("img_1.jpg", "img_2.jpg", "img_5.jpg", "img_10.jpg", "img_25.jpg", "img_37.jpg")


@pytest.fixture(scope="module")
def int8_file(ic15, tmp_path_factory):
    calib = sorted((ic15 / "train" / "images").glob("*.jpg"))[:4]
    out = tmp_path_factory.mktemp("int8") / "v4_int8.torchscript"
    return quantize_torch("ppocrv4", out, calib, n=4, progress=False)


def test_file_carries_settings_and_is_smaller(int8_file):
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(int8_file.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600
    module, cfg = load(int8_file)
    assert isinstance(module, torch.jit.ScriptModule)
    assert (cfg["name"], cfg["limit_side_len"], cfg["channel_order"]) == ("ppocrv4", 736, "bgr")
    with zipfile.ZipFile(int8_file) as z:
        name = next(n for n in z.namelist() if n.endswith("extra/" + EXTRA_QUANT))
        settings = json.loads(z.read(name))
    assert settings["calibration_images"] == 4
    assert settings["activations"] == "u8 per tensor, minmax"
    assert settings["fp32_modules"] == ["backbone.stem", "backbone.stages.0"]
    assert settings["folded_gates"] == [f"neck.ins.{i}" for i in range(4)]
    assert settings["prob_logits"] == "fp32" and settings["int8_deconvs"] is False
    assert (settings["activation_bits"], settings["weight_bits"]) == (8, 7)
    det = Detector(int8_file)
    assert det.limit_side_len == 736 and det.post_kwargs["box_thresh"] == Detector("ppocrv4").post_kwargs["box_thresh"]
    # int8 weights: well under half of the fp32 parameters' bytes
    fp32_bytes = sum(p.numel() * 4 for p in Detector("ppocrv4").model.parameters())
    assert int8_file.stat().st_size < 0.5 * fp32_bytes


def test_any_input_shape_and_batch(int8_file):
    module, _ = load(int8_file)
    with torch.no_grad():
        for shape in [(1, 3, 96, 128), (2, 3, 160, 96)]:
            out = module(torch.randn(*shape))
            assert out.shape == (shape[0], 1) + shape[2:] and out.dtype == torch.float32
            assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_int8_keeps_accuracy_on_a_few_images(int8_file, ic15):
    from dbdetect.data import read_folder
    from dbdetect.evaluate import evaluate_detections

    gts = [s for s in read_folder(ic15 / "test") if s.image_path.name in WANTED]
    fp, i8 = Detector("ppocrv4", num_threads=2), Detector(int8_file, num_threads=2)
    a, b = fp.probability_map(gts[0].image_path), i8.probability_map(gts[0].image_path)
    assert a.shape == b.shape and ((a > 0.3) == (b > 0.3)).mean() >= 0.98
    h_fp = evaluate_detections(gts, [fp(s.image_path) for s in gts])["hmean"]
    h_i8 = evaluate_detections(gts, [i8(s.image_path) for s in gts])["hmean"]
    assert h_fp > 0.3 and abs(h_fp - h_i8) <= 0.15, (h_fp, h_i8)


def test_bad_inputs(int8_file, tmp_path, ic15):
    calib = sorted((ic15 / "train" / "images").glob("*.jpg"))[:1]
    before = int8_file.read_bytes()
    with pytest.raises(FileExistsError, match="exists"):
        quantize_torch("ppocrv4", int8_file, calib, n=1, progress=False)
    assert int8_file.read_bytes() == before
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no image files"):
        quantize_torch("ppocrv4", tmp_path / "x.torchscript", empty, progress=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match="none of its 1 image files is readable"):
        quantize_torch("ppocrv4", tmp_path / "x.torchscript", broken, progress=False)
    with pytest.raises(ValueError, match="backbone.nothing"):
        quantize_torch("ppocrv4", tmp_path / "x.torchscript", calib, fp32_modules=["backbone.nothing"], progress=False)
    assert not (tmp_path / "x.torchscript").exists()
    fake = tmp_path / "fake.torchscript"
    fake.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        Detector(fake)
    plain = tmp_path / "plain.torchscript"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(plain))
    with pytest.raises(ValueError, match="no dbdetect settings"):
        Detector(plain)
    with pytest.raises(FileNotFoundError, match="not found"):
        Detector(tmp_path / "missing.torchscript")
    with pytest.raises(ValueError, match="backend='torch'"):
        Detector(int8_file, backend="onnxruntime")
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="CPU only"):
            Detector(int8_file, device="cuda:0")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "dbdetect", *map(str, args)], capture_output=True, text=True)


def test_cli_export_then_detect(tmp_path, ic15):
    calib = tmp_path / "calib"
    calib.mkdir()
    for p in sorted((ic15 / "train" / "images").glob("*.jpg"))[:2]:
        (calib / p.name).symlink_to(p)
    out = tmp_path / "m.torchscript"
    r = _cli(
        "export",
        "--model",
        "ppocrv4",
        "--int8",
        "--calib",
        calib,
        "--calib-n",
        "1",
        "--calib-side-len",
        "320",
        "--observer",
        "histogram",
        "--out",
        out,
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    assert "torch int8" in r.stdout and out.is_file()
    with zipfile.ZipFile(out) as z:
        settings = json.loads(z.read(next(n for n in z.namelist() if n.endswith("extra/" + EXTRA_QUANT))))
    assert settings["activations"] == "u8 per tensor, histogram"
    assert settings["fp32_modules"] == ["backbone.stem", "backbone.stages.0"]
    out2 = tmp_path / "m_s4.torchscript"
    r = _cli(
        "export",
        "--model",
        "ppocrv4",
        "--int8",
        "--calib",
        calib,
        "--calib-n",
        "1",
        "--calib-side-len",
        "320",
        "--fp32",
        "backbone.stem,backbone.stages.0,backbone.stages.4",
        "--out",
        out2,
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(out2) as z:
        settings = json.loads(z.read(next(n for n in z.namelist() if n.endswith("extra/" + EXTRA_QUANT))))
    assert settings["fp32_modules"] == ["backbone.stem", "backbone.stages.0", "backbone.stages.4"]
    r = _cli(
        "export",
        "--model",
        "ppocrv4",
        "--int8",
        "--calib",
        calib,
        "--fp32",
        "backbone.nope",
        "--out",
        tmp_path / "m3.torchscript",
    )
    assert r.returncode == 2 and "backbone.nope" in r.stderr and not (tmp_path / "m3.torchscript").exists()
    r = _cli(
        "export",
        "--model",
        "ppocrv4",
        "--int8",
        "--calib",
        calib,
        "--fp32",
        "backbone.stem",
        "--out",
        tmp_path / "m.onnx",
    )
    assert r.returncode == 2 and "--fp32 is for torch int8" in r.stderr
    r = _cli(
        "export",
        "--model",
        "ppocrv4",
        "--int8",
        "--calib",
        calib,
        "--observer",
        "histogram",
        "--out",
        tmp_path / "m.onnx",
    )
    assert r.returncode == 2 and "--observer is for torch int8" in r.stderr
    r = _cli("export", "--model", "ppocrv4", "--int8", "--calib", calib, "--out", out)
    assert r.returncode == 2 and "exists" in r.stderr
    r = _cli("export", "--model", "ppocrv4", "--out", tmp_path / "m2.torchscript")
    assert r.returncode == 2 and "--int8" in r.stderr
    r = _cli("export", "--model", "ppocrv4", "--out", tmp_path / "m.bin")
    assert r.returncode == 2 and ".onnx" in r.stderr and ".torchscript" in r.stderr
    img = ic15 / "test" / "images" / "img_1.jpg"
    # int8 kernels round differently with another thread split: compare at one thread
    r = _cli("detect", "--no-progress", img, "--model", out, "--threads", "1", "--workers", "0")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[0])
    ref = Detector(out, num_threads=1)(img)
    assert len(rec["polygons"]) == len(ref) and np.allclose(rec["scores"], [d.score for d in ref], atol=1e-5)


def _quantized_rse(seed):
    """An RSE 1x1 layer with random weights, its float output, and the int8 layer at that output's range."""
    from dbdetect.deploy.int8_gates import QuantizedGatedConv1x1
    from dbdetect.models.necks import RSELayer

    torch.manual_seed(seed)
    rse = RSELayer(12, 32, 1).eval()
    for p in rse.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.rand(2, 12, 40, 56) * 3
    with torch.no_grad():
        want = rse(x)
    lo, hi = min(float(want.min()), 0.0), float(want.max())
    scale, zp = (hi - lo) / 255, int(round(-lo / ((hi - lo) / 255)))
    qx = torch.quantize_per_tensor(x, 3 / 255, 0, torch.quint8)
    layer = torch.jit.script(QuantizedGatedConv1x1(rse, scale, zp))
    return rse, layer, qx, want, scale


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_folded_gate_matches_the_float_layer(seed):
    """conv, mean and gate multiply as one int8 conv: within int8 error of the float RSE layer, per image."""
    use_engine()  # x86, or the AVX2 kernels that tests/test_int8_cpu.py runs this file on
    rse, layer, qx, want, scale = _quantized_rse(seed)
    with torch.no_grad():
        got = layer(qx)
        assert got.dtype == torch.quint8 and got.shape == want.shape
        with torch.no_grad():
            ref = rse(qx.dequantize())  # the float layer on the same (quantized) input
        err = (got.dequantize() - ref).abs()
        assert float(err.max()) <= 4 * scale + 0.02 * float(ref.abs().max())
        assert float(err.mean()) <= scale
        # the gate is per image: a batch equals its images one by one
        for i in range(2):
            assert torch.equal(layer(qx[i : i + 1]).int_repr(), got[i : i + 1].int_repr())
        # and it matters: without it (gate 1) the output would be far off
        assert float((ref - rse.conv(qx.dequantize())).abs().mean()) > 4 * scale


def test_thresholds_still_tell_maps_apart(int8_file, ic15):
    """The map is graded, not a few levels: with min/max logits it had ten values and
    every thresh between 0.19 and 0.5 drew the same boxes."""
    prob = Detector(int8_file, num_threads=2).probability_map(ic15 / "test" / "images" / "img_1.jpg")
    assert len(np.unique(prob)) > 50
    counts = [int((prob > t).sum()) for t in (0.2, 0.25, 0.3, 0.4)]
    assert counts[0] > counts[1] > counts[2] > counts[3] > 0, counts


def test_tune_scores_an_int8_file_like_detector(int8_file, ic15, tmp_path, capsys):
    from dbdetect.cli import main
    from dbdetect.data import read_folder
    from dbdetect.evaluate import evaluate_detections
    from dbdetect.tune import Grid, save_tuned, tune

    samples = [s for s in read_folder(ic15 / "test") if s.image_path.name in WANTED[:3]]
    grid = Grid(limit_side_len=(480,), thresh=(0.2, 0.45), box_thresh=(0.5,), unclip_ratio=(1.6,), use_dilation=(True,))
    rows = tune(str(int8_file), samples, grid, progress=False)
    assert len(rows) == 2
    for r in rows:
        det = Detector(
            int8_file,
            limit_side_len=480,
            thresh=r["thresh"],
            box_thresh=0.5,
            unclip_ratio=1.6,
            use_dilation=True,
            num_threads=2,
        )
        ref = evaluate_detections(samples, [det(s.image_path) for s in samples])
        assert (r["matched"], r["num_det_care"], r["hmean"]) == (ref["matched"], ref["num_det_care"], ref["hmean"])
    # settings go into checkpoints only: refused before anything is written
    with pytest.raises(ValueError, match="exported file"):
        save_tuned(int8_file, rows[0], tmp_path / "t.pt")
    assert main(["tune", "--data", str(ic15 / "test"), "--model", str(int8_file), "--out", str(tmp_path / "t.pt")]) == 2
    assert "exported file" in capsys.readouterr().err and not (tmp_path / "t.pt").exists()


def test_probability_logits_have_a_fixed_range():
    from dbdetect.deploy.torch_int8 import LOGIT_RANGE, PROB_LOGITS, qconfig_mapping

    for observer in ("minmax", "histogram"):
        mapping = qconfig_mapping((), observer)
        obs = mapping.module_name_qconfigs[PROB_LOGITS].activation()
        obs(torch.linspace(-180.0, 180.0, 1000))  # what calibration sees does not widen it
        scale, zero_point = (float(v) for v in obs.calculate_qparams())
        assert (scale, zero_point) == (2 * LOGIT_RANGE / 256, 128)
    assert qconfig_mapping([PROB_LOGITS]).module_name_qconfigs[PROB_LOGITS] is None


def test_last_deconv_kept_fp32_keeps_the_map(ic15):
    """Kept fp32, the last deconv takes the sigmoid with it (FX would squeeze the logits into [0, 1))."""
    from dbdetect import models
    from dbdetect.deploy.torch_int8 import PROB_LOGITS, quantize_module
    from dbdetect.imageio import load_image
    from dbdetect.preprocess import prepare

    net = models.fuse(models.create("ppocrv4", pretrained=True).eval())
    x = torch.from_numpy(prepare(load_image(ic15 / "test" / "images" / "img_1.jpg"), net.cfg, 256, "max"))[None]
    q = quantize_module(net, [x], ["backbone.stem", PROB_LOGITS])
    with torch.no_grad():
        want, got = net(x), q(x)
    assert float((got - want).abs().mean()) < 0.02
    assert float((got > 0.3).float().mean()) < 2 * float((want > 0.3).float().mean()) + 0.01


def test_gate_folding_can_be_switched_off(ic15):
    from dbdetect import models
    from dbdetect.deploy.torch_int8 import quantize_module
    from dbdetect.imageio import load_image
    from dbdetect.preprocess import prepare

    net = models.fuse(models.create("ppocrv4", pretrained=True).eval())
    x = torch.from_numpy(prepare(load_image(ic15 / "test" / "images" / "img_1.jpg"), net.cfg, 256, "max"))[None]
    folded = quantize_module(net, [x], ["backbone.stem", "backbone.stages.0"])
    plain = quantize_module(net, [x], ["backbone.stem", "backbone.stages.0"], fold_gates=False)
    assert folded.folded_gates == [f"neck.ins.{i}" for i in range(4)] and plain.folded_gates == []
    with torch.no_grad():
        want, a, b = net(x), folded(x), plain(x)
    # both within int8 error of fp32 on the calibration image itself
    assert float((a - want).abs().mean()) < 0.02 and float((b - want).abs().mean()) < 0.02
    # a neck kept fp32 leaves its layers alone
    kept = quantize_module(net, [x], ["neck"])
    assert kept.folded_gates == []


def test_fp32_regions_work_in_place_with_the_same_result():
    from dbdetect import models
    from dbdetect.deploy.torch_int8 import _ScalarAffine, traceable

    net = models.fuse(models.create("ppocrv4", pretrained=True).eval())
    keep = ["backbone.stem", "backbone.stages.0"]
    inplace = traceable(net, keep)
    flags = {n: m.inplace for n, m in inplace.named_modules() if isinstance(m, _ScalarAffine)}
    assert flags["backbone.stages.0.0.pw.lab2"] and not any(v for n, v in flags.items() if ".stages.0." not in n)
    x = torch.rand(1, 3, 96, 160)
    with torch.no_grad():
        got = inplace(x)
        assert torch.equal(got, traceable(net)(x))
        assert torch.allclose(got, net(x), atol=1e-6)  # the eager network: same maths, other op order


def test_observers_set_the_activation_range():
    """minmax spans every calibration value; histogram clips long tails (why minmax is the default)."""
    from dbdetect.deploy.torch_int8 import qconfig_mapping

    torch.manual_seed(0)
    batches = [torch.distributions.Laplace(0.0, 1.0 + i).sample((1, 4, 64, 64)) for i in range(4)]
    top = max(float(b.max()) for b in batches)
    highs = {}
    for observer in ("minmax", "histogram"):
        obs = qconfig_mapping((), observer).global_qconfig.activation()
        for b in batches:
            obs(b)
        scale, zero_point = (float(v) for v in obs.calculate_qparams())
        highs[observer] = (255 - zero_point) * scale
        assert obs.dtype == torch.quint8
    assert highs["minmax"] == pytest.approx(top, rel=0.01)
    assert highs["histogram"] < 0.95 * top
    with pytest.raises(ValueError, match="observer must be one of minmax, histogram, got 'l2'"):
        qconfig_mapping((), "l2")


def test_unknown_observer_writes_nothing(tmp_path, ic15):
    calib = sorted((ic15 / "train" / "images").glob("*.jpg"))[:1]
    with pytest.raises(ValueError, match="observer must be one of"):
        quantize_torch("ppocrv4", tmp_path / "x.torchscript", calib, observer="l2", progress=False)
    assert not (tmp_path / "x.torchscript").exists()
