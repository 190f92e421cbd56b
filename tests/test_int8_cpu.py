"""torch int8 on the kernels of an x86 CPU without VNNI, whatever CPU runs the tests.

fbgemm's AVX2 kernels (``FBGEMM_ENABLE_INSTRUCTIONS=AVX2``, the engine torch's x86 one
uses on such a CPU) run in a child process: first to show that they are the saturating
kernels, then under the whole int8 test file, so CI on a VNNI machine fails a recipe
that an AVX2-only CPU gets wrong.
"""

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dbdetect import Detector
from dbdetect.deploy.int8_gates import SAFE_WEIGHT_QMAX
from dbdetect.deploy.torch_int8 import EXTRA_QUANT, quantize_module, quantize_torch
from dbdetect.runtime import int8_cpu

pytestmark = pytest.mark.skipif(
    "fbgemm" not in torch.backends.quantized.supported_engines, reason="no fbgemm engine in this torch build (not x86)"
)
TESTS = Path(__file__).resolve().parent
U16_MAX = 32767


def _on_avx2(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **int8_cpu.AVX2_KERNELS)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=600
    )


# A quantised 1x1 conv over a constant u8 255 input (the exact answer is 64), for 8-bit and
# for 7-bit weights; and a 2x2 stride-2 deconv over random small integers against the float
# deconv of the same integers (its largest error over the largest output).
_KERNELS = """
    import json, warnings
    import torch
    import torch.nn.functional as F
    from dbdetect.runtime import int8_cpu
    warnings.simplefilter("ignore")
    int8_cpu.use_engine()
    cin, cout = 64, 8
    x = torch.quantize_per_tensor(torch.full((1, cin, 4, 4), 1.0), 1 / 255, 0, torch.quint8)
    conv = {}
    for qmax in (127, 63):
        m = torch.ao.nn.quantized.Conv2d(cin, cout, 1)
        w = torch.full((cout, cin, 1, 1), 1.0)
        m.set_weight_bias(torch.quantize_per_channel(w, torch.full((cout,), 1 / qmax, dtype=torch.double),
                                                     torch.zeros(cout, dtype=torch.long), 0, torch.qint8), None)
        m.scale, m.zero_point = 1.0, 0
        conv[qmax] = float(m(x).dequantize().mean())
    torch.manual_seed(0)
    xi = torch.randint(0, 64, (1, 24, 8, 8)).float()
    wi = torch.randint(-31, 32, (24, 24, 2, 2)).float()
    ref = F.conv_transpose2d(xi, wi, stride=2)
    d = torch.ao.nn.quantized.ConvTranspose2d(24, 24, 2, stride=2)
    d.set_weight_bias(torch.quantize_per_tensor(wi, 1.0, 0, torch.qint8), None)
    d.scale, d.zero_point = float(ref.abs().max()) / 100, 128
    got = d(torch.quantize_per_tensor(xi, 1.0, 0, torch.quint8)).dequantize()
    deconv = float((got - ref).abs().max() / ref.abs().max())
    print(json.dumps({"vnni": int8_cpu.has_vnni(), "engine": torch.backends.quantized.engine,
                      "conv": conv, "deconv_error": deconv}))
"""


def test_avx2_kernels_are_the_saturating_ones():
    """The child runs what an AVX2-only CPU runs: 8-bit pair sums saturate, fbgemm's deconv is off."""
    r = _on_avx2(_KERNELS)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["engine"] == "fbgemm" and res["vnni"] is False
    # 64 products of 255 x 127 in pairs: each pair saturates at 32767, so about half the sum
    assert res["conv"]["127"] == pytest.approx(64 * 32767 / (2 * 255 * 127), rel=0.02), res
    assert res["conv"]["63"] == pytest.approx(64.0, abs=0.5), res  # 255 x 63 x 2 fits
    # no pair sum comes near 32767 here (63 x 31 x 2): fbgemm's deconv is wrong for another reason
    assert res["deconv_error"] > 0.3, res


def test_avx2_kernels_are_right_natively_on_this_cpu():
    """The same arithmetic in this process (its own CPU's kernels) is exact: the child's errors are the kernels'."""
    env = {k: v for k, v in os.environ.items() if k not in int8_cpu.AVX2_KERNELS}
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KERNELS)], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if not res["vnni"]:
        pytest.skip("this CPU has no AVX512-VNNI: its own kernels are the child's")
    assert res["conv"]["63"] == pytest.approx(64.0, abs=0.5)
    assert res["conv"]["127"] == pytest.approx(64.0, abs=0.5)
    assert res["deconv_error"] < 0.02, res


@pytest.mark.slow
def test_int8_test_file_passes_on_avx2_kernels():
    """Every torch int8 test, its accuracy checks included, on the kernels of a CPU without VNNI."""
    r = _on_avx2(f"""
        import sys, pytest
        target = {str(TESTS / "test_int8_torch.py")!r}
        sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:warnings", target]))
    """)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "failed" not in r.stdout


def _max_pair_sum(w_int: np.ndarray) -> int:
    """The largest |x0 w0 + x1 w1| any pairing of one output channel's weights reaches with u8 x <= 255."""
    flat = np.abs(w_int.reshape(w_int.shape[0], -1).astype(np.int64))
    top2 = np.sort(flat, axis=1)[:, -2:] if flat.shape[1] > 1 else np.pad(flat, ((0, 0), (1, 0)))
    return int(255 * top2.sum(axis=1).max())


def test_pair_sum_model_flags_full_range_weights():
    w = np.array([[[[127]], [[127]]]], dtype=np.int8)
    assert _max_pair_sum(w) > U16_MAX
    assert _max_pair_sum(np.clip(w, -63, 63)) <= U16_MAX
    assert _max_pair_sum(np.array([[[[-63]]]], dtype=np.int8)) == 255 * 63


@pytest.mark.parametrize("model", ["ppocrv4", "ppocrv4_ic15"])
def test_every_int8_conv_of_the_bundled_models_fits_16_bits(model, ic15):
    """A NumPy model of the AVX2 kernels' pair sums over every quantised conv, on real calibration data."""
    from dbdetect import models
    from dbdetect.imageio import load_image
    from dbdetect.preprocess import prepare

    net = models.fuse(models.create(model, pretrained=True).eval())
    imgs = [
        torch.from_numpy(prepare(load_image(p), net.cfg, 320, "max"))[None]
        for p in sorted((ic15 / "train" / "images").glob("*.jpg"))[:2]
    ]
    q = quantize_module(net, imgs, ["backbone.stem", "backbone.stages.0"])
    weights = {}
    for name, m in q.named_modules():
        if isinstance(m, torch.ao.nn.quantized.ConvTranspose2d):
            pytest.fail(f"{name}: an int8 deconv (fbgemm's is wrong without VNNI)")
        if isinstance(m, torch.ao.nn.quantized.Conv2d):
            weights[name] = m.weight().int_repr().numpy()
    for name in q.folded_gates:
        weights[name] = q.get_submodule(name).w_int.numpy()
    assert len(weights) > 20 and len(q.folded_gates) == 4
    worst = {name: _max_pair_sum(w) for name, w in weights.items()}
    assert max(worst.values()) <= U16_MAX, {n: v for n, v in worst.items() if v > U16_MAX}
    assert max(int(np.abs(w).max()) for w in weights.values()) <= SAFE_WEIGHT_QMAX


def _vnni_only_file(tmp_path_factory, ic15):
    calib = sorted((ic15 / "train" / "images").glob("*.jpg"))[:2]
    from dbdetect.deploy import torch_int8 as int8_torch

    bits = int8_torch.WEIGHT_BITS
    int8_torch.WEIGHT_BITS = 8
    try:
        return quantize_torch(
            "ppocrv4",
            tmp_path_factory.mktemp("vnni") / "vnni.torchscript",
            calib,
            n=2,
            limit_side_len=320,
            int8_deconvs=True,
            progress=False,
        )
    finally:
        int8_torch.WEIGHT_BITS = bits


def test_file_names_its_risks(tmp_path_factory, ic15):
    """The op list and settings of a default file show nothing that breaks without VNNI; a VNNI-only file shows both."""
    safe = quantize_torch(
        "ppocrv4",
        tmp_path_factory.mktemp("safe") / "safe.torchscript",
        sorted((ic15 / "train" / "images").glob("*.jpg"))[:2],
        n=2,
        limit_side_len=320,
        progress=False,
    )
    risky = _vnni_only_file(tmp_path_factory, ic15)
    for path, n_risks in ((safe, 0), (risky, 2)):
        module = torch.jit.load(str(path))
        with zipfile.ZipFile(path) as z:
            settings = json.loads(z.read(next(n for n in z.namelist() if n.endswith("extra/" + EXTRA_QUANT))))
        assert "quantized::conv2d" in str(module.graph)
        assert len(int8_cpu.file_risks(module, settings)) == n_risks
    assert int8_cpu.int8_deconvs(torch.jit.load(str(risky))) == 2


def test_detector_refuses_a_vnni_only_file_without_vnni(tmp_path_factory, ic15):
    """Where the file would find nothing, Detector says why in plain words, never silent empty boxes."""
    risky = _vnni_only_file(tmp_path_factory, ic15)
    r = _on_avx2(f"""
        import warnings
        from dbdetect import Detector
        try:
            Detector({str(risky)!r})
        except ValueError as exc:
            print("REFUSED", exc)
    """)
    assert r.returncode == 0, r.stderr
    assert "REFUSED" in r.stdout and "AVX512-VNNI" in r.stdout and "dbdetect export --int8" in r.stdout


def test_detector_warns_once_where_int8_is_not_faster(int8_default_file):
    r = _on_avx2(f"""
        import warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as seen:
            from dbdetect import Detector
            Detector({str(int8_default_file)!r}); Detector({str(int8_default_file)!r})
        notes = [str(w.message) for w in seen if "not reliably faster" in str(w.message)]
        print(len(notes))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "1"


@pytest.fixture(scope="module")
def int8_default_file(ic15, tmp_path_factory):
    calib = sorted((ic15 / "train" / "images").glob("*.jpg"))[:2]
    return quantize_torch(
        "ppocrv4", tmp_path_factory.mktemp("i8") / "d.torchscript", calib, n=2, limit_side_len=320, progress=False
    )


def test_no_note_on_a_vnni_cpu(int8_default_file, recwarn):
    if not int8_cpu.has_vnni():
        pytest.skip("this CPU has no AVX512-VNNI")
    Detector(int8_default_file)
    assert not [w for w in recwarn if "not reliably faster" in str(w.message)]


def test_unknown_engine_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(int8_cpu.ENGINE_ENV, "nonesuch")
    with pytest.raises(RuntimeError, match="nonesuch"):
        int8_cpu.engine()
