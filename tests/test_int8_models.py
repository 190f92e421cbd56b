"""The bundled int8 models: registry names, files inside the package, accuracy on a real image, bad files."""

import hashlib
import json
import re

import pytest
import torch

from dbdetect import Detector, models
from dbdetect.runtime import int8_cpu
from dbdetect.runtime.torchscript import EXTRA_QUANT

pytestmark = pytest.mark.skipif(
    "x86" not in torch.backends.quantized.supported_engines, reason="torch's x86 int8 engine is not in this torch build"
)
NAMES = ("ppocrv4_int8", "ppocrv4_ic15_int8", "ppocrv4_td500_int8")


def test_names_and_files():
    assert models.list_int8_models() == sorted(NAMES)
    notice = (models.weights_dir() / "NOTICE").read_text()
    for name in NAMES:
        path = models.int8_file(name)
        assert path.suffix == ".torchscript" and path.stat().st_size < 3 * 2**20
        # provenance: the NOTICE names each file with its sha256
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert re.search(rf"{digest}\s+{re.escape(path.name)}", notice), f"{path.name} sha256 not in NOTICE"
        assert name not in models.list_models()  # files, not architectures


@pytest.mark.parametrize("name", NAMES)
def test_runs_with_the_fp32_models_settings_and_finds_the_text(name, ic15):
    fp32 = name.removesuffix("_int8")
    det, ref = Detector(name, num_threads=2), Detector(fp32, num_threads=2)
    for key in ("limit_side_len", "limit_type", "thresh", "box_thresh", "unclip_ratio", "use_dilation"):
        assert det.cfg[key] == ref.cfg[key], key
    extra = {EXTRA_QUANT: ""}
    module = torch.jit.load(str(models.int8_file(name)), _extra_files=extra)
    settings = json.loads(extra[EXTRA_QUANT])
    assert int8_cpu.pair_sums_fit(settings) and not int8_cpu.file_risks(module, settings)  # right on every x86 CPU
    from dbdetect.data import read_folder
    from dbdetect.evaluation.protocol import evaluate_detections

    gts = [s for s in read_folder(ic15 / "test") if s.image_path.name in ("img_5.jpg", "img_10.jpg")]
    a, b = det.probability_map(gts[0].image_path), ref.probability_map(gts[0].image_path)
    assert a.shape == b.shape and ((a > 0.3) == (b > 0.3)).mean() > 0.98
    h = evaluate_detections(gts, [det(s.image_path) for s in gts])["hmean"]
    h_ref = evaluate_detections(gts, [ref(s.image_path) for s in gts])["hmean"]
    assert h > 0.3 and h >= h_ref - 0.2, (h, h_ref)


def test_the_cli_takes_the_names(ic15, tmp_path):
    from dbdetect.cli import main

    out = tmp_path / "out.jsonl"
    img = ic15 / "test" / "images" / "img_1.jpg"
    assert main(["detect", "--model", "ppocrv4_ic15_int8", str(img), "--out", str(out), "--no-progress"]) == 0
    line = json.loads(out.read_text())
    assert line["polygons"] and line["width"] == 1280


def test_bad_names_and_files(tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="bundled int8 model, not a network"):
        models.create("ppocrv4_int8")
    with pytest.raises(ValueError, match="no bundled int8 model"):
        models.int8_file("ppocrv4")
    with pytest.raises(ValueError, match="backend='torch'"):
        Detector("ppocrv4_int8", backend="onnxruntime")
    with pytest.raises(ValueError, match="precision"):
        Detector("ppocrv4_int8", precision="bf16")
    good = models.int8_file("ppocrv4_int8").read_bytes()
    truncated, corrupt = tmp_path / "truncated.torchscript", tmp_path / "corrupt.torchscript"
    truncated.write_bytes(good[: len(good) // 2])
    flipped = bytearray(good)
    flipped[len(good) // 2 : len(good) // 2 + 4096] = bytes(4096)
    corrupt.write_bytes(bytes(flipped))
    for bad in (truncated, corrupt):
        with pytest.raises(ValueError, match=re.escape(str(bad))):
            Detector(bad)
    # an installation without the file: named, not a crash
    empty = tmp_path / "weights"
    empty.mkdir()
    monkeypatch.setattr(models.dbnet, "weights_dir", lambda: empty)
    with pytest.raises(FileNotFoundError, match="installation is incomplete"):
        Detector("ppocrv4_ic15_int8")


def test_fp32_weights_run_channels_last_whatever_the_file_stores(tmp_path):
    from dbdetect.runtime import torchscript

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ConvTranspose2d(8, 1, 2, stride=2))
    x = torch.rand(1, 3, 32, 32)
    frozen = torchscript.to_torchscript(net, x)
    path = tmp_path / "nchw.torchscript"
    torch.jit.save(frozen, str(path), _extra_files={torchscript.EXTRA_CFG: '{"version": 1}'})

    def weights(module):
        return [
            n.t("value")
            for n in module.graph.findAllNodes("prim::Constant")
            if n.hasAttribute("value") and n.kindOf("value") == "t" and n.t("value").dim() == 4
        ]

    assert not all(w.is_contiguous(memory_format=torch.channels_last) for w in weights(torch.jit.load(str(path))))
    module, _ = torchscript.load(path)
    assert len(weights(module)) == 2
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights(module))
    with torch.no_grad():
        torch.testing.assert_close(module(x), net(x), atol=1e-5, rtol=1e-5)
    assert torchscript.channels_last_constants(module) == 0  # nothing left to move
