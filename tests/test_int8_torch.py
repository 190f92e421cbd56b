"""torch's own int8: quantisation, the .torchscript file, Detector and CLI, bad input."""
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from dbdetect import Detector
from dbdetect.int8_torch import EXTRA_QUANT, load, quantize_torch

pytestmark = pytest.mark.skipif("x86" not in torch.backends.quantized.supported_engines,
                                reason="torch's x86 int8 engine is not in this torch build")
WANTED = ("img_1.jpg", "img_2.jpg", "img_5.jpg", "img_10.jpg", "img_25.jpg", "img_37.jpg")


@pytest.fixture(scope="module")
def int8_file(ic15, tmp_path_factory):
    calib = sorted((ic15 / "train" / "images").glob("*.jpg"))[:4]
    out = tmp_path_factory.mktemp("int8") / "v4_int8.torchscript"
    return quantize_torch("ppocrv4", out, calib, n=4, progress=False)


def test_file_carries_settings_and_is_smaller(int8_file):
    module, cfg = load(int8_file)
    assert isinstance(module, torch.jit.ScriptModule)
    assert (cfg["name"], cfg["limit_side_len"], cfg["channel_order"]) == ("ppocrv4", 736, "bgr")
    with zipfile.ZipFile(int8_file) as z:
        name = next(n for n in z.namelist() if n.endswith("extra/" + EXTRA_QUANT))
        settings = json.loads(z.read(name))
    assert settings["calibration_images"] == 4
    assert settings["fp32_modules"] == ["backbone.stem", "backbone.stages.0"]
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
    r = _cli("export", "--model", "ppocrv4", "--int8", "--calib", calib, "--calib-n", "1",
             "--calib-side-len", "320", "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "torch int8" in r.stdout and out.is_file()
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
