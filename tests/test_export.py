"""ONNX export, the onnxruntime backend and int8: parity with torch on real images, metadata, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import DATA
from postprocess_match import add, match

onnx = pytest.importorskip("onnx", reason="onnx is in the [test] extra")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the [test] extra")

from dbdetect import Detector, models  # noqa: E402
from dbdetect.export import quantize, to_onnx  # noqa: E402
from dbdetect.runtime.int8_ort import SAFE_WEIGHT_QMAX, weight_qmax  # noqa: E402
from dbdetect.runtime.onnx import META_KEY, OnnxSession  # noqa: E402

# Small inputs keep CI lean; the PP-OCR models run at their own short side 736 (ppocrv4_ic15's
# registry 1440 only changes the resize, not the graph).
SIDE = {"ppocrv4": 736, "ppocrv3": 736, "ppocrv4_ic15": 736, "dbnet_resnet18": 256}


@pytest.fixture(scope="module")
def images(ic15):
    msra = DATA / "msra_td500" / "train" / "images"
    paths = [ic15 / "test" / "images" / "img_1.jpg", ic15 / "test" / "images" / "img_10.jpg"]
    if msra.is_dir():
        paths.append(sorted(msra.glob("*.jpg"))[0])
    return paths


def _resnet18():
    torch.manual_seed(0)
    net = models.create("dbnet_resnet18", pretrained=False).eval()
    # Non-trivial BatchNorm statistics, so folding them is actually tested.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    files = {}
    for name in ("ppocrv4", "ppocrv3", "ppocrv4_ic15"):
        files[name] = to_onnx(name, d / f"{name}.onnx")
    files["dbnet_resnet18"] = to_onnx(_resnet18(), d / "resnet18.onnx")
    return files


@pytest.mark.parametrize("name", sorted(SIDE))
def test_fp32_matches_torch_maps_and_boxes(name, exported, images):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = _resnet18() if name == "dbnet_resnet18" else name
    kw = dict(limit_side_len=SIDE[name], limit_type="max" if name == "dbnet_resnet18" else "min", num_threads=2)
    ref, onx = Detector(model, **kw), Detector(exported[name], **kw)
    assert onx.backend == "onnxruntime" and onx.cfg["name"] == name
    worst, text_px, counts = 0.0, 0, {}
    for path in images:
        img = ref._load(path, None)
        x = ref._prepare(img)[None]
        p_ref, p_onx = ref._forward(x)[0], onx._forward(x)[0]
        worst = max(worst, float(np.abs(p_ref - p_onx).max()))
        text_px += int((p_ref > 0.3).sum())
        a, b = ref._boxes(p_ref, img.shape[:2]), onx._boxes(p_onx, img.shape[:2])
        add(counts, match([d.polygon for d in a], [d.score for d in a], [d.polygon for d in b], [d.score for d in b]))
    assert worst <= 1e-4, worst
    assert text_px > 1000, text_px  # maps that carry something, or agreement would say little
    if name != "dbnet_resnet18":  # random weights make no text boxes; their maps are compared above
        assert counts["n_ref"] > 0
    assert counts["ref_matched"] >= 0.99 * counts["n_ref"] and counts["out_matched"] >= 0.99 * counts["n_out"], counts


def test_graph_is_dynamic_with_one_output(exported):
    m = onnx.load(str(exported["ppocrv4"]))
    (inp,), (out,) = m.graph.input, m.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", 3, "H", "W"]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", 1, "H", "W"]
    ops = {n.op_type for n in m.graph.node}
    assert "BatchNormalization" not in ops and "Identity" not in ops
    sess = OnnxSession(exported["ppocrv4"])
    assert sess(np.zeros((2, 3, 64, 96), np.float32)).shape == (2, 64, 96)


def test_metadata_round_trip(exported):
    net = models.create("ppocrv4_ic15")
    meta = {p.key: p.value for p in onnx.load(str(exported["ppocrv4_ic15"])).metadata_props}
    stored = json.loads(meta[META_KEY])
    for key in (
        "name",
        "arch",
        "limit_side_len",
        "limit_type",
        "channel_order",
        "stride",
        "thresh",
        "box_thresh",
        "unclip_ratio",
        "use_dilation",
        "score_mode",
        "max_candidates",
    ):
        assert stored[key] == net.cfg[key], key
    assert stored["mean"] == list(net.cfg["mean"]) and stored["std"] == list(net.cfg["std"])
    det = Detector(exported["ppocrv4_ic15"])  # the file alone gives the registry settings
    ref = Detector("ppocrv4_ic15")
    assert (det.limit_side_len, det.limit_type) == (ref.limit_side_len, ref.limit_type) == (1440, "min")
    assert det.post_kwargs == ref.post_kwargs


def test_int8_keeps_accuracy_on_a_few_images(exported, ic15, tmp_path):
    from dbdetect.data import read_folder
    from dbdetect.evaluate import evaluate_detections

    calib = sorted((ic15 / "train" / "images").glob("*.jpg"))[:8]
    q = quantize(exported["ppocrv4"], tmp_path / "int8.onnx", calib, n=8, progress=False)
    assert q.stat().st_size < 0.4 * exported["ppocrv4"].stat().st_size
    meta = {p.key: p.value for p in onnx.load(str(q)).metadata_props}
    settings = json.loads(meta["dbdetect.quantization"])
    assert settings["calibration_images"] == 8 and settings["weight_bits"] == 7
    # 7-bit weights: the u8 x s8 pair sums of x86 CPUs without VNNI fit (dbdetect.runtime.int8_ort)
    assert 32 <= weight_qmax(onnx.load(str(q))) <= SAFE_WEIGHT_QMAX
    assert META_KEY in meta
    wanted = {"img_1.jpg", "img_2.jpg", "img_5.jpg", "img_10.jpg", "img_25.jpg", "img_37.jpg"}
    gts = [s for s in read_folder(ic15 / "test") if s.image_path.name in wanted]
    fp, i8 = Detector(exported["ppocrv4"], num_threads=2), Detector(q, num_threads=2)
    agree = []
    for s in gts[:2]:
        a, b = fp.probability_map(s.image_path), i8.probability_map(s.image_path)
        agree.append(((a > 0.3) == (b > 0.3)).mean())
    assert min(agree) >= 0.99, agree
    h_fp = evaluate_detections(gts, [fp(s.image_path) for s in gts])["hmean"]
    h_i8 = evaluate_detections(gts, [i8(s.image_path) for s in gts])["hmean"]
    assert h_fp > 0.3 and abs(h_fp - h_i8) <= 0.1, (h_fp, h_i8)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "dbdetect", *map(str, args)], capture_output=True, text=True)


def test_cli_export_then_detect(tmp_path, images):
    out = tmp_path / "v3.onnx"
    r = _cli("export", "--model", "ppocrv3", "--out", out)
    assert r.returncode == 0 and out.is_file(), r.stderr
    before = out.read_bytes()
    r = _cli("export", "--model", "ppocrv4", "--out", out)  # exists, no --overwrite: refused, untouched
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr
    assert out.read_bytes() == before
    res = tmp_path / "res.jsonl"
    r = _cli("detect", "--no-progress", "--model", out, images[0], "--out", res)
    assert r.returncode == 0, r.stderr
    rec = json.loads(res.read_text())
    ref = Detector("ppocrv3")(images[0])
    assert len(rec["polygons"]) == len(ref) > 0


def test_on_the_fly_export_is_cached(tmp_path, monkeypatch, images):
    monkeypatch.setenv("DBDETECT_CACHE", str(tmp_path))
    det = Detector("ppocrv3", backend="onnxruntime", limit_side_len=320)
    (f,) = (tmp_path / "onnx").glob("ppocrv3-*.onnx")
    stamp = f.stat().st_mtime_ns
    again = Detector("ppocrv3", backend="onnxruntime", limit_side_len=320)
    assert f.stat().st_mtime_ns == stamp and len(list((tmp_path / "onnx").iterdir())) == 1
    assert len(det(images[0])) == len(again(images[0]))


def test_foreign_onnx_runs_with_a_warning(exported, tmp_path, images):
    m = onnx.load(str(exported["ppocrv4"]))
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "foreign.onnx"))
    with pytest.warns(UserWarning, match=r"no dbdetect metadata.*channel_order='bgr'.*thresh=0.3"):
        det = Detector(tmp_path / "foreign.onnx", box_thresh=0.5)
    ours = Detector(exported["ppocrv4"])
    assert len(det(images[0])) == len(ours(images[0])) > 0  # PP-OCR defaults are ppocrv4's own


def test_onnx_input_must_be_n3hw(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, "H", "W"])
    g = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"])], "gray", [x], [y])
    path = tmp_path / "gray.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ValueError, match=r"gray.onnx.*\(N, 3, H, W\)"):
        Detector(path)


def test_bad_inputs(tmp_path, exported, ic15):
    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a dbdetect checkpoint"):
        to_onnx(bad, tmp_path / "x.onnx")
    r = _cli("export", "--model", bad, "--out", tmp_path / "x.onnx")
    assert r.returncode == 2 and "not a dbdetect checkpoint" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.onnx").exists()

    existing = tmp_path / "keep.onnx"
    existing.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists"):
        to_onnx("ppocrv3", existing)
    with pytest.raises(FileExistsError, match="already exists"):
        quantize(exported["ppocrv3"], existing, ic15 / "train" / "images", n=1)
    assert existing.read_bytes() == b"precious"

    calib = tmp_path / "calib"
    calib.mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        quantize(exported["ppocrv3"], tmp_path / "q.onnx", calib)
    (calib / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match="none of its 1 image files is readable"):
        quantize(exported["ppocrv3"], tmp_path / "q.onnx", calib)
    assert not (tmp_path / "q.onnx").exists()
    images = ic15 / "train" / "images"
    for kw, msg in (
        (dict(quant_format="qint"), "quant_format must be 'qdq' or 'qoperator', got 'qint'"),
        (dict(nodes="heads"), "nodes must be one of dense, conv, all, got 'heads'"),
        (dict(activations="u4"), "activations must be 'u8' or 's8', got 'u4'"),
        (dict(weights="int8"), "weights must be 'u8' or 's8', got 'int8'"),
    ):
        with pytest.raises(ValueError, match=msg):
            quantize(exported["ppocrv3"], tmp_path / "q.onnx", images, n=1, **kw)
    assert not (tmp_path / "q.onnx").exists()

    with pytest.raises(ValueError, match="backend"):
        Detector("ppocrv3", backend="tensorrt")
    with pytest.raises(ValueError, match="ONNX file"):
        Detector(exported["ppocrv3"], backend="torch")


def test_missing_onnxruntime_names_the_extra(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ImportError, match=r'pip install "dbdetect\[onnx\]"'):
        Detector(exported["ppocrv3"])
    with pytest.raises(ImportError, match=r"dbdetect\[onnx\]"):
        Detector("ppocrv3", backend="onnxruntime")


def test_torch_path_never_imports_onnxruntime():
    code = (
        "import sys, numpy as np, dbdetect; d = dbdetect.Detector('ppocrv3', limit_side_len=64); "
        "d(np.zeros((64, 64, 3), np.uint8)); import dbdetect.cli; dbdetect.cli.build_parser(); "
        "assert 'onnxruntime' not in sys.modules and 'onnx' not in sys.modules, 'imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
