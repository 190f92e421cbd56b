"""Whether an onnxruntime int8 file's u8 x s8 products fit the int8 kernels of this CPU.

onnxruntime's x86 kernels (MLAS) without VNNI multiply u8 activations by s8 weights with
``vpmaddubsw``, which adds the products in pairs into 16 bits and saturates at 32767, the
same path as torch's (:mod:`dbdetect.runtime.int8_cpu`); onnxruntime's quantisation docs name
``reduce_range`` (7-bit weights) for it. A file is safe on every x86 CPU when
``255 * 2 * max|w| <= 32767``: its s8 weights lie within +-64 (:data:`SAFE_WEIGHT_QMAX`).
:func:`dbdetect.export.quantize` writes such files; :func:`weight_qmax` reads any file.
u8 weights (U8U8) take a 16-bit-free path and are safe as they are.
"""

from __future__ import annotations

import platform
import warnings

SAFE_WEIGHT_QMAX = 64
PAIR_SUM_MAX = 32767
# CPU flags whose kernels add u8 x s8 products in 32 bits (vpdpbusd, AMX tiles).
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
_checked: set = set()  # files read once per process


def pair_sums_fit(qmax: int) -> bool:
    """Whether u8 x s8 pair sums with weights within +-``qmax`` stay within 16 bits."""
    return 255 * 2 * int(qmax) <= PAIR_SUM_MAX


def saturating_cpu() -> bool:
    """Whether this CPU runs onnxruntime's u8 x s8 convs on the 16-bit pair-sum path."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False  # ARM's kernels (sdot, smmla) add in 32 bits
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:  # no cpuinfo (macOS, Windows): assume the worst
        return True
    return not any(flag in flags for flag in _VNNI_FLAGS)


def weight_qmax(proto) -> int:
    """The largest |w| over the s8 weights an int8 ONNX graph multiplies by (0 if none).

    QDQ graphs hold them as the int8 initializers of DequantizeLinear nodes, QOperator
    graphs as the weight input of QLinearConv / ConvInteger.
    """
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in proto.graph.initializer if t.data_type == TensorProto.INT8}
    names = set()
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear":
            names.add(node.input[0])
        elif node.op_type == "QLinearConv":
            names.add(node.input[3])
        elif node.op_type == "ConvInteger":
            names.add(node.input[1])
    qmax = 0
    for name in names & inits.keys():
        w = numpy_helper.to_array(inits[name])
        if w.size:
            qmax = max(qmax, int(abs(w.astype("int16")).max()))
    return qmax


def check_file(path) -> None:
    """Warn once when this CPU would saturate an int8 file's pair sums (wrong boxes, no error)."""
    if not saturating_cpu() or str(path) in _checked:
        return
    _checked.add(str(path))
    try:
        import onnx
    except ImportError:  # onnxruntime alone: nothing to read the weights with
        return
    qmax = weight_qmax(onnx.load(str(path)))
    if pair_sums_fit(qmax):
        return
    warnings.warn(
        f"{path} holds 8-bit int8 weights (up to {qmax}), and this CPU (no VNNI) adds int8 products in "
        "16 bits, which such weights can overflow: its boxes may be wrong. Quantise it again with this "
        "dbdetect (dbdetect export --int8 --calib DIR --out FILE.onnx), whose files keep weights "
        "within +-64 and are right on every x86 CPU, or use the fp32 file.",
        RuntimeWarning,
        stacklevel=3,
    )
