"""onnxruntime int8 on x86 CPUs without VNNI: weights within +-64, read from any file, a warning otherwise."""

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is in the [test] extra")
pytest.importorskip("onnxruntime", reason="onnxruntime is in the [test] extra")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from dbdetect.runtime import int8_ort  # noqa: E402
from dbdetect.runtime.onnx import OnnxSession  # noqa: E402


def _pair_sums(x_u8: np.ndarray, w_s8: np.ndarray) -> np.ndarray:
    """What vpmaddubsw computes before saturating: x0*w0 + x1*w1 over adjacent pairs."""
    prod = x_u8.astype(np.int32) * w_s8.astype(np.int32)
    return prod[..., 0::2] + prod[..., 1::2]


def test_the_bound_is_the_kernel_arithmetic():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4096, 64)).astype(np.uint8)
    x[0] = 255  # the worst input for same-signed weights
    for qmax in (63, 64, 65, 127):
        w = rng.integers(-qmax, qmax + 1, 64).astype(np.int8)
        w[:2] = qmax
        worst = int(np.abs(_pair_sums(x, w)).max())
        assert (worst <= int8_ort.PAIR_SUM_MAX) == int8_ort.pair_sums_fit(qmax), (qmax, worst)
    assert int8_ort.pair_sums_fit(int8_ort.SAFE_WEIGHT_QMAX) and not int8_ort.pair_sums_fit(65)


def _qdq_conv(path, w_int8: np.ndarray, qoperator: bool = False):
    """A one-conv int8 graph (N, 3, H, W) -> (N, 1, H, W) with the given s8 weights."""
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.02])
    zp_u8 = helper.make_tensor("zx", TensorProto.UINT8, [], [128])
    zp_s8 = helper.make_tensor("zw", TensorProto.INT8, [], [0])
    w = numpy_helper.from_array(w_int8.astype(np.int8), "w")
    if qoperator:
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s", "zx"], ["xq"]),
            helper.make_node("QLinearConv", ["xq", "s", "zx", "w", "s", "zw", "s", "zx"], ["yq"], pads=[1] * 4),
            helper.make_node("DequantizeLinear", ["yq", "s", "zx"], ["y"]),
        ]
    else:
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s", "zx"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "s", "zx"], ["xd"]),
            helper.make_node("DequantizeLinear", ["w", "s", "zw"], ["wd"]),
            helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1] * 4),
        ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        initializer=[scale, zp_u8, zp_s8, w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("qoperator", [False, True])
def test_weight_qmax_reads_both_formats(tmp_path, qoperator):
    w = np.zeros((1, 3, 3, 3), np.int8)
    w[0, 1, 2, 0] = -101
    path = _qdq_conv(tmp_path / "m.onnx", w, qoperator)
    assert int8_ort.weight_qmax(onnx.load(str(path))) == 101


def test_8bit_file_warns_once_on_a_cpu_without_vnni(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    wide = _qdq_conv(tmp_path / "wide.onnx", rng.integers(-127, 128, (1, 3, 3, 3)))
    safe = _qdq_conv(tmp_path / "safe.onnx", rng.integers(-64, 65, (1, 3, 3, 3)))
    monkeypatch.setattr(int8_ort, "_checked", set())
    monkeypatch.setattr(int8_ort, "saturating_cpu", lambda: True)
    with pytest.warns(RuntimeWarning, match=r"8-bit int8 weights .*no VNNI.*boxes may be wrong"):
        sess = OnnxSession(wide)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert sess(x).shape == (1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OnnxSession(wide)  # once per file
        OnnxSession(safe)
    monkeypatch.setattr(int8_ort, "_checked", set())
    monkeypatch.setattr(int8_ort, "saturating_cpu", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OnnxSession(wide)  # a VNNI CPU adds in 32 bits


def test_saturating_cpu_reads_the_flags(monkeypatch, tmp_path):
    monkeypatch.setattr(int8_ort.platform, "machine", lambda: "aarch64")
    assert not int8_ort.saturating_cpu()
    monkeypatch.setattr(int8_ort.platform, "machine", lambda: "x86_64")
    cpuinfo = tmp_path / "cpuinfo"
    real_open = open

    def fake_open(path, *a, **k):
        return real_open(cpuinfo if path == "/proc/cpuinfo" else path, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    cpuinfo.write_text("flags\t\t: fpu sse2 avx avx2 fma\n")
    assert int8_ort.saturating_cpu()
    cpuinfo.write_text("flags\t\t: fpu sse2 avx avx2 avx_vnni\n")
    assert not int8_ort.saturating_cpu()
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert not int8_ort.saturating_cpu()
