"""onnxruntime static int8 of an fp32 dbdetect ONNX file: :func:`quantize`.

>>> quantize("ppocrv4.onnx", "ppocrv4_int8.onnx", "icdar2015/train/images")    # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..files import check_out
from ..runtime.metadata import META_KEY, cfg_to_json, with_defaults
from ..runtime.onnx import (
    OnnxSession,
    import_onnx,
    import_onnxruntime,
    save_atomic,
    set_metadata,
)
from .calibration import calibration_paths, calibration_reader, first_readable

# Which nodes get int8 (the measurements behind this are in the README, "Export to ONNX and int8"):
# - "dense" (default): see _dense_convs. Everything else stays fp32: depthwise convs and the
#   stem, the elementwise hard-swish/hard-sigmoid/SE chains (a Q/DQ pair costs more than the
#   op), Resize/Concat, and both ConvTranspose of the head (no int8 kernel on onnxruntime's
#   CPU provider; the last one makes the map that gets thresholded).
# - "conv": every Conv and ConvTranspose but the head's last one.
# - "all": every op onnxruntime can quantise (elementwise chains included).
POLICIES = ("dense", "conv", "all")
_ALL_OPS = (
    "Conv",
    "ConvTranspose",
    "Add",
    "Mul",
    "Relu",
    "Resize",
    "Concat",
    "GlobalAveragePool",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
)
_QTYPES = {"u8": "QUInt8", "s8": "QInt8"}


def _read_fp32(onnx_path: Path) -> Any:
    """(ModelProto, cfg or None, input name) of an fp32 DBNet ONNX file, checked."""
    sess = OnnxSession(onnx_path)
    return import_onnx().load(str(onnx_path)), sess.cfg, sess.input_name


def _check_quant_options(quant_format: str, nodes: str, activations: str, weights: str) -> None:
    if quant_format not in ("qdq", "qoperator"):
        raise ValueError(f"quant_format must be 'qdq' or 'qoperator', got {quant_format!r}")
    if nodes not in POLICIES:
        raise ValueError(f"nodes must be one of {', '.join(POLICIES)}, got {nodes!r}")
    for what, v in (("activations", activations), ("weights", weights)):
        if v not in _QTYPES:
            raise ValueError(f"{what} must be 'u8' or 's8', got {v!r}")


def quantize(
    onnx_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calibration_images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    n: int = 100,
    limit_side_len: int | None = None,
    limit_type: str | None = None,
    quant_format: str = "qdq",
    activations: str = "u8",
    weights: str = "s8",
    nodes: str = "dense",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Static int8 quantisation (onnxruntime) of an fp32 dbdetect ONNX file.

    Weights per channel, activations per tensor from the MinMax statistics of
    ``n`` calibration images run through dbdetect's own pre-processing at the
    model's resize setting (``limit_side_len``/``limit_type`` override it).

    Args:
        onnx_path: an fp32 file from :func:`to_onnx` (or a foreign DBNet ONNX;
            then the PP-OCR pre-processing is assumed, with a warning).
        out_path: the int8 file to write (refused if it exists, unless ``overwrite``).
        calibration_images: a folder, a label file, or a list of image paths.
            Use training images, never the images you will score.
        n: number of calibration images (spread evenly over the source).
        quant_format: "qdq" (QuantizeLinear/DequantizeLinear around fp32 ops,
            fused into int8 kernels by onnxruntime) or "qoperator" (QLinearConv ...).
        activations: "u8" or "s8".
        weights: "u8" or "s8". s8 weights are 7-bit (within +-64,
            onnxruntime's ``reduce_range``), so the file is right on x86 CPUs
            without VNNI too (:mod:`dbdetect.runtime.int8_ort`).
        nodes: which nodes get int8: "dense" (convolutions with groups == 1 and
            >= 16 input channels; the default), "conv" (all convolutions but the
            head's last), "all" (every op onnxruntime can quantise).
        overwrite: replace an existing ``out_path``.
        progress: show a tqdm bar over the calibration images.

    Returns:
        ``out_path`` as a Path.

    >>> quantize("ppocrv4.onnx", "ppocrv4_int8.onnx", "icdar2015/train/images", n=100)  # doctest: +SKIP
    PosixPath('ppocrv4_int8.onnx')
    """

    import_onnxruntime()
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    check_out(out_path, overwrite)
    _check_quant_options(quant_format, nodes, activations, weights)
    proto, meta, input_name = _read_fp32(onnx_path)
    if any(node.op_type in ("QuantizeLinear", "QLinearConv") for node in proto.graph.node):
        raise ValueError(f"{onnx_path} is already quantised")
    cfg = with_defaults(meta, str(onnx_path), {"limit_side_len": limit_side_len, "limit_type": limit_type})
    paths = calibration_paths(calibration_images, n)
    first_readable(paths, calibration_images)
    reader = calibration_reader(input_name, paths, cfg, limit_side_len, limit_type, progress)
    op_types = _ALL_OPS if nodes == "all" else ("Conv", "ConvTranspose")
    include = _dense_convs(proto.graph) if nodes == "dense" else None
    exclude = [] if nodes == "all" else _last_conv(proto.graph)
    settings = dict(
        format=quant_format,
        activations=activations,
        weights=weights,
        per_channel=True,
        weight_bits=7 if weights == "s8" else 8,
        nodes=nodes,
        excluded=exclude,
        calibration_images=len(paths),
        limit_side_len=limit_side_len or cfg["limit_side_len"],
        limit_type=limit_type or cfg["limit_type"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "int8.onnx"
        quantize_static(
            str(onnx_path),
            str(raw),
            reader,
            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
            op_types_to_quantize=list(op_types),
            per_channel=True,
            activation_type=getattr(QuantType, _QTYPES[activations]),
            weight_type=getattr(QuantType, _QTYPES[weights]),
            reduce_range=weights == "s8",  # 7-bit s8 weights: right on x86 CPUs without VNNI (int8_ort)
            nodes_to_quantize=include,
            nodes_to_exclude=exclude,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": activations == "s8"},
        )
        settings["calibration_images"] = reader.ok
        out = import_onnx().load(str(raw))
    if meta is not None:
        set_metadata(out, META_KEY, cfg_to_json(meta))
    set_metadata(out, "dbdetect.quantization", json.dumps(settings, sort_keys=True))
    save_atomic(out, out_path)
    return out_path


def _pooled_tensors(graph: Any) -> set[str]:
    """Tensors that are (N, C, 1, 1) vectors: the global pools and the SE convs that follow them."""
    consts = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    pooled: set[str] = set()
    for node in graph.node:  # ONNX graphs are topologically sorted
        data = [i for i in node.input if i and i not in consts]
        if node.op_type == "GlobalAveragePool" or (data and all(i in pooled for i in data)):
            pooled.update(node.output)
    return pooled


def _dense_convs(graph: Any, keep_first: int = 3) -> list[str]:
    """Conv nodes worth int8: groups == 1, >= 16 input channels, on feature maps.

    Left out: depthwise convolutions and the 3-channel stem (too little arithmetic
    per pixel to pay for the quantise/dequantise passes), the SE convolutions on
    pooled (N, C, 1, 1) vectors, and the first ``keep_first`` dense convolutions,
    the high-resolution start of the backbone, where int8 errors grow the most.
    """
    dims = {t.name: list(t.dims) for t in graph.initializer}
    pooled = _pooled_tensors(graph)
    keep = []
    for node in graph.node:
        if node.op_type != "Conv" or node.input[0] in pooled:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        w = dims.get(node.input[1])
        if group == 1 and w is not None and w[1] >= 16:
            keep.append(node.name)
    return keep[keep_first:]


def _last_conv(graph: Any) -> list[str]:
    """Name of the conv feeding the graph output (through its Sigmoid), if any."""
    producer = {o: n for n in graph.node for o in n.output}
    node = producer.get(graph.output[0].name)
    while node is not None and node.op_type not in ("Conv", "ConvTranspose"):
        node = producer.get(node.input[0]) if node.input else None
    return [node.name] if node is not None and node.name else []
