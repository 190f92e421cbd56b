"""Export a DBNet to ONNX, quantise it to int8, and ``dbdetect export``.

:func:`to_onnx` writes the BatchNorm-folded eval-mode network with dynamic
batch, height and width and one output, the probability map; the model's cfg
goes into the file's metadata so ``Detector("model.onnx")`` needs nothing
else. :func:`quantize` turns such a file into a static int8 model calibrated
on real images pre-processed exactly as the detector does.

Needs the ``onnx`` extra: ``pip install "dbdetect[onnx]"``. torch's own int8
(``--out model.torchscript``) is :mod:`dbdetect.int8_torch` and needs torch alone.

>>> from dbdetect.export import to_onnx, quantize
>>> to_onnx("ppocrv4", "ppocrv4.onnx")                                          # doctest: +SKIP
>>> quantize("ppocrv4.onnx", "ppocrv4_int8.onnx", "icdar2015/train/images")    # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .int8_torch import OBSERVERS
from .int8_torch import SUFFIX as TORCHSCRIPT
from .deploy.calibration import calibration_paths, calibration_reader, first_readable
from .files import atomic_file, check_out
from .onnx_backend import INSTALL_HINT, META_KEY, cfg_to_json

DEFAULT_OPSET = 17
# Trace shape: small, and not square, so no H/W confusion can hide in the graph.
_TRACE_SHAPE = (1, 3, 96, 128)


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(f"ONNX export needs the onnx package: {INSTALL_HINT}") from exc
    return onnx


def _save_atomic(model_proto, path: Path, check=None) -> None:
    """Save through :func:`atomic_file`, running ``check(tmp_path)`` before the rename."""
    onnx = _import_onnx()
    with atomic_file(path) as tmp:
        onnx.save(model_proto, str(tmp))
        if check is not None:
            check(tmp)


def set_metadata(model_proto, key: str, value: str) -> None:
    """Set (or replace) one ``metadata_props`` entry of an ONNX ModelProto."""
    for p in model_proto.metadata_props:
        if p.key == key:
            p.value = value
            return
    model_proto.metadata_props.add(key=key, value=value)


def _load_torch_model(model) -> torch.nn.Module:
    from . import models

    if isinstance(model, torch.nn.Module):
        if not isinstance(getattr(model, "cfg", None), dict):
            raise TypeError("a model passed as nn.Module needs a .cfg dict (see dbdetect.models.create)")
        return copy.deepcopy(model)
    if str(model).lower().endswith(".onnx"):
        raise ValueError(f"{model} is already an ONNX file; to_onnx needs a registry name, checkpoint or nn.Module")
    return models.create(model, pretrained=True)


def _drop_identities(graph) -> None:
    """Remove Identity nodes (the legacy exporter leaves them for shared weights)."""
    outputs = {o.name for o in graph.output}
    rename = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
        else:
            keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(keep)


def _verify(net: torch.nn.Module, path: Path, tol: float = 1e-4) -> float:
    """Max abs difference between torch and onnxruntime on a random input of a new shape."""
    from .onnx_backend import OnnxSession

    x = torch.rand(2, 3, 160, 96, generator=torch.Generator().manual_seed(0)) * 4 - 2
    with torch.inference_mode():
        ref = net(x)[:, 0].numpy()
    diff = float(np.abs(OnnxSession(path)(x.numpy()) - ref).max())
    if not diff <= tol:
        raise RuntimeError(f"exported {path} differs from the torch model by {diff:.2e} (> {tol:g})")
    return diff


def to_onnx(model, path, opset: int = DEFAULT_OPSET, overwrite: bool = False, verify: bool = True) -> Path:
    """Export a DBNet (BatchNorm folded, eval mode) to ONNX with its cfg as metadata.

    The graph has one float input ``image`` (N, 3, H, W) with dynamic N, H, W
    (H and W multiples of 32) and one output ``prob`` (N, 1, H, W).

    Args:
        model: a registry name, a checkpoint written by ``dbdetect train``, or
            an ``nn.Module`` with a ``cfg`` dict (copied, never modified).
        path: the .onnx file to write.
        opset: ONNX opset (>= 13).
        overwrite: replace an existing file; without it an existing ``path``
            raises FileExistsError and is left untouched.
        verify: run the file on onnxruntime (if installed) and check it
            against torch within 1e-4.

    Returns:
        ``path`` as a Path.

    >>> to_onnx("ppocrv4", "ppocrv4.onnx", opset=17)     # doctest: +SKIP
    PosixPath('ppocrv4.onnx')
    """
    from . import models

    onnx = _import_onnx()
    path = Path(path)
    check_out(path, overwrite)
    if int(opset) < 13:
        raise ValueError(f"opset must be >= 13 (Resize with sizes), got {opset}")
    net = models.fuse(_load_torch_model(model).eval(), channels_last=False)
    cfg = dict(net.cfg)

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        raw = Path(tmp) / "raw.onnx"
        # The TorchScript exporter (dynamo=False): the dynamo one needs onnxscript and gives
        # nothing these convolution-only graphs need.
        torch.onnx.export(
            net, (torch.zeros(_TRACE_SHAPE),), str(raw), dynamo=False, opset_version=int(opset),
            input_names=["image"], output_names=["prob"], do_constant_folding=True,
            dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}, "prob": {0: "N", 2: "H", 3: "W"}},
        )
        proto = onnx.load(str(raw))
    _drop_identities(proto.graph)
    proto.producer_name = "dbdetect"
    set_metadata(proto, META_KEY, cfg_to_json(cfg))
    onnx.checker.check_model(proto)
    _save_atomic(proto, path, check=(lambda p: _verify(net, p)) if verify and _has_ort() else None)
    return path


def _has_ort() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False  # export works without it; the check is skipped
    return True


# ---------------------------------------------------------------- int8

# Which nodes get int8 (the measurements behind this are in the README, "Export to ONNX and int8"):
# - "dense" (default): see _dense_convs. Everything else stays fp32: depthwise convs and the
#   stem, the elementwise hard-swish/hard-sigmoid/SE chains (a Q/DQ pair costs more than the
#   op), Resize/Concat, and both ConvTranspose of the head (no int8 kernel on onnxruntime's
#   CPU provider; the last one makes the map that gets thresholded).
# - "conv": every Conv and ConvTranspose but the head's last one.
# - "all": every op onnxruntime can quantise (elementwise chains included).
POLICIES = ("dense", "conv", "all")
_ALL_OPS = ("Conv", "ConvTranspose", "Add", "Mul", "Relu", "Resize", "Concat", "GlobalAveragePool",
            "Sigmoid", "HardSigmoid", "HardSwish")
_QTYPES = {"u8": "QUInt8", "s8": "QInt8"}


def _read_fp32(onnx_path: Path):
    """(ModelProto, cfg or None, input name) of an fp32 DBNet ONNX file, checked."""
    from .onnx_backend import OnnxSession

    sess = OnnxSession(onnx_path)
    return _import_onnx().load(str(onnx_path)), sess.cfg, sess.input_name


def _check_quant_options(quant_format: str, nodes: str, activations: str, weights: str) -> None:
    if quant_format not in ("qdq", "qoperator"):
        raise ValueError(f"quant_format must be 'qdq' or 'qoperator', got {quant_format!r}")
    if nodes not in POLICIES:
        raise ValueError(f"nodes must be one of {', '.join(POLICIES)}, got {nodes!r}")
    for what, v in (("activations", activations), ("weights", weights)):
        if v not in _QTYPES:
            raise ValueError(f"{what} must be 'u8' or 's8', got {v!r}")


def quantize(onnx_path, out_path, calibration_images, n: int = 100, limit_side_len: int | None = None,
             limit_type: str | None = None, quant_format: str = "qdq", activations: str = "u8",
             weights: str = "s8", nodes: str = "dense",
             overwrite: bool = False, progress: bool = True) -> Path:
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
        activations, weights: "u8" or "s8". s8 weights are 7-bit (within +-64,
            onnxruntime's ``reduce_range``), so the file is right on x86 CPUs
            without VNNI too (:mod:`dbdetect.int8_ort`).
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
    from .onnx_backend import import_onnxruntime, with_defaults

    import_onnxruntime()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

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
    settings = dict(format=quant_format, activations=activations, weights=weights, per_channel=True,
                    weight_bits=7 if weights == "s8" else 8,
                    nodes=nodes, excluded=exclude, calibration_images=len(paths),
                    limit_side_len=limit_side_len or cfg["limit_side_len"], limit_type=limit_type or cfg["limit_type"])
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "int8.onnx"
        quantize_static(
            str(onnx_path), str(raw), reader,
            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
            op_types_to_quantize=list(op_types), per_channel=True,
            activation_type=getattr(QuantType, _QTYPES[activations]),
            weight_type=getattr(QuantType, _QTYPES[weights]),
            reduce_range=weights == "s8",  # 7-bit s8 weights: right on x86 CPUs without VNNI (int8_ort)
            nodes_to_quantize=include,
            nodes_to_exclude=exclude, calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": activations == "s8"},
        )
        settings["calibration_images"] = reader.ok
        out = _import_onnx().load(str(raw))
    if meta is not None:
        set_metadata(out, META_KEY, cfg_to_json(meta))
    set_metadata(out, "dbdetect.quantization", json.dumps(settings, sort_keys=True))
    _save_atomic(out, out_path)
    return out_path


def _pooled_tensors(graph) -> set:
    """Tensors that are (N, C, 1, 1) vectors: the global pools and the SE convs that follow them."""
    consts = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    pooled: set = set()
    for node in graph.node:  # ONNX graphs are topologically sorted
        data = [i for i in node.input if i and i not in consts]
        if node.op_type == "GlobalAveragePool" or (data and all(i in pooled for i in data)):
            pooled.update(node.output)
    return pooled


def _dense_convs(graph, keep_first: int = 3) -> list[str]:
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


def _last_conv(graph) -> list[str]:
    """Name of the conv feeding the graph output (through its Sigmoid), if any."""
    producer = {o: n for n in graph.node for o in n.output}
    node = producer.get(graph.output[0].name)
    while node is not None and node.op_type not in ("Conv", "ConvTranspose"):
        node = producer.get(node.input[0]) if node.input else None
    return [node.name] if node is not None and node.name else []


# ---------------------------------------------------------------- CLI

def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``dbdetect export``."""
    p = sub.add_parser(
        "export", help="export a model to ONNX (optionally int8), or to torch int8 (.torchscript)",
        description="Export a registry model or a training checkpoint to ONNX (BatchNorm folded, dynamic "
                    "N/H/W, the model's settings stored in the file), or quantise it to int8 with --int8. "
                    f"ONNX needs {INSTALL_HINT}. With --int8 and an --out ending in .torchscript, torch's own "
                    "x86 int8 instead (FX graph mode, stem and first backbone stage fp32): runs with torch alone.")
    p.add_argument("--model", required=True,
                   help="registry name, checkpoint (.pt), or an fp32 .onnx file to quantise with --int8")
    p.add_argument("--out", required=True, type=Path,
                   help="the file to write: .onnx (onnxruntime), or .torchscript with --int8 (torch's own int8)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--overwrite", action="store_true", help="allow replacing an existing --out file")
    q = p.add_argument_group("int8")
    q.add_argument("--int8", action="store_true", help="write a static int8 model (onnxruntime quantisation)")
    q.add_argument("--calib", help="calibration images: a folder or a label file (training images, never test ones)")
    q.add_argument("--calib-n", type=int, default=None,
                   help="number of calibration images (default 100 for .onnx, 32 for .torchscript)")
    q.add_argument("--calib-side-len", type=int, default=None, help="resize limit for calibration (default: the model's)")
    q.add_argument("--format", choices=("qdq", "qoperator"), default="qdq", help="onnxruntime quantisation format")
    q.add_argument("--nodes", choices=POLICIES, default="dense",
                   help="which nodes get int8 (default dense: convolutions with groups 1 and >= 16 input channels)")
    q.add_argument("--observer", choices=OBSERVERS, default=None,
                   help="torch int8 (.torchscript) only: activation ranges from the min and max seen (default) "
                        "or torch's histogram (L2-optimal, clips the tails)")
    q.add_argument("--fp32", default=None, metavar="NAMES",
                   help="torch int8 (.torchscript) only: comma-separated module names to keep in fp32 "
                        "(default backbone.stem,backbone.stages.0; 'none' quantises everything)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """``dbdetect export``: to_onnx, then quantize with --int8."""
    from .errors import UserError

    if args.out.exists() and not args.overwrite:
        raise UserError(f"--out {args.out} already exists (use --overwrite to replace it)")
    if args.int8 and not args.calib:
        raise UserError("--int8 needs --calib DIR_OR_LABELS (training images to calibrate on)")
    if not args.int8 and args.calib:
        raise UserError("--calib is only used with --int8")
    is_onnx = str(args.model).lower().endswith(".onnx")
    if args.out.suffix.lower() == TORCHSCRIPT:
        return _run_torch_int8(args, is_onnx)
    if args.observer:
        raise UserError("--observer is for torch int8 (--out FILE.torchscript); onnxruntime int8 uses MinMax ranges")
    if args.fp32 is not None:
        raise UserError("--fp32 is for torch int8 (--out FILE.torchscript); onnxruntime int8 uses --nodes")
    if args.out.suffix.lower() != ".onnx":
        raise UserError(f"--out {args.out}: name it .onnx (onnxruntime) or .torchscript (torch int8, with --int8)")
    if is_onnx and not args.int8:
        raise UserError(f"{args.model} is already ONNX; add --int8 --calib DIR to quantise it")

    def to_int8(src):
        quantize(src, args.out, args.calib, n=args.calib_n or 100, limit_side_len=args.calib_side_len,
                 quant_format=args.format, nodes=args.nodes, overwrite=args.overwrite,
                 progress=not args.no_progress)

    try:
        if not args.int8:
            to_onnx(args.model, args.out, opset=args.opset, overwrite=args.overwrite)
        elif is_onnx:
            to_int8(args.model)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                to_int8(to_onnx(args.model, Path(tmp) / "fp32.onnx", opset=args.opset))
    except (FileExistsError, IsADirectoryError, ImportError) as exc:
        raise UserError(str(exc)) from None
    size = args.out.stat().st_size / 2**20
    print(f"wrote {args.out} ({size:.1f} MiB{', int8' if args.int8 else ''})")
    return 0


def _run_torch_int8(args, is_onnx: bool) -> int:
    """``dbdetect export --int8 --out model.torchscript``: torch's own int8 (:mod:`dbdetect.int8_torch`)."""
    from .errors import UserError
    from .int8_torch import DEFAULT_OBSERVER, quantize_torch

    if not args.int8:
        raise UserError(f"--out {args.out}: a .torchscript file is torch's int8; add --int8 --calib DIR")
    if is_onnx:
        raise UserError(f"{args.model} is ONNX; torch int8 starts from a registry name or a checkpoint")
    fp32 = None
    if args.fp32 is not None:
        fp32 = [m for m in (n.strip() for n in args.fp32.split(",")) if m not in ("", "none")]
    try:
        quantize_torch(args.model, args.out, args.calib, n=args.calib_n or 32, limit_side_len=args.calib_side_len,
                       fp32_modules=fp32, overwrite=args.overwrite, progress=not args.no_progress,
                       observer=args.observer or DEFAULT_OBSERVER)
    except (FileExistsError, IsADirectoryError) as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB, torch int8)")
    from .int8_cpu import has_vnni, speed_note

    if not has_vnni():
        print(f"note: {speed_note()}", file=sys.stderr)
    return 0
