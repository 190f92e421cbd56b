"""``dbdetect export``: ONNX, onnxruntime int8 or torch int8 files."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..deploy.onnx_int8 import POLICIES, quantize
from ..deploy.torch_int8 import OBSERVERS
from ..runtime.metadata import INSTALL_HINT
from ..runtime.onnx import DEFAULT_OPSET, to_onnx
from ..runtime.torchscript import SUFFIX as TORCHSCRIPT


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``dbdetect export``."""
    p = sub.add_parser(
        "export",
        help="export a model to ONNX (optionally int8), or to torch int8 (.torchscript)",
        description="Export a registry model or a training checkpoint to ONNX (BatchNorm folded, dynamic "
        "N/H/W, the model's settings stored in the file), or quantise it to int8 with --int8. "
        f"ONNX needs {INSTALL_HINT}. With --int8 and an --out ending in .torchscript, torch's own "
        "x86 int8 instead (FX graph mode, stem and first backbone stage fp32): runs with torch alone.",
    )
    p.add_argument(
        "--model", required=True, help="registry name, checkpoint (.pt), or an fp32 .onnx file to quantise with --int8"
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="the file to write: .onnx (onnxruntime), or .torchscript with --int8 (torch's own int8)",
    )
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--overwrite", action="store_true", help="allow replacing an existing --out file")
    q = p.add_argument_group("int8")
    q.add_argument("--int8", action="store_true", help="write a static int8 model (onnxruntime quantisation)")
    q.add_argument("--calib", help="calibration images: a folder or a label file (training images, never test ones)")
    q.add_argument(
        "--calib-n",
        type=int,
        default=None,
        help="number of calibration images (default 100 for .onnx, 32 for .torchscript)",
    )
    q.add_argument(
        "--calib-side-len", type=int, default=None, help="resize limit for calibration (default: the model's)"
    )
    q.add_argument("--format", choices=("qdq", "qoperator"), default="qdq", help="onnxruntime quantisation format")
    q.add_argument(
        "--nodes",
        choices=POLICIES,
        default="dense",
        help="which nodes get int8 (default dense: convolutions with groups 1 and >= 16 input channels)",
    )
    q.add_argument(
        "--observer",
        choices=OBSERVERS,
        default=None,
        help="torch int8 (.torchscript) only: activation ranges from the min and max seen (default) "
        "or torch's histogram (L2-optimal, clips the tails)",
    )
    q.add_argument(
        "--fp32",
        default=None,
        metavar="NAMES",
        help="torch int8 (.torchscript) only: comma-separated module names to keep in fp32 "
        "(default backbone.stem,backbone.stages.0; 'none' quantises everything)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """``dbdetect export``: to_onnx, then quantize with --int8."""
    from ..errors import UserError

    if args.out.exists() and not args.overwrite:
        raise UserError(f"--out {args.out} already exists (use --overwrite to replace it)")
    from ..deploy import qat

    qat_ckpt = qat.read_checkpoint(args.model)
    if qat_ckpt is not None:
        return _run_qat(args, qat_ckpt)
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
        quantize(
            src,
            args.out,
            args.calib,
            n=args.calib_n or 100,
            limit_side_len=args.calib_side_len,
            quant_format=args.format,
            nodes=args.nodes,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )

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


def _run_qat(args, ckpt: dict) -> int:
    """A ``dbdetect train --qat`` checkpoint to int8: its ranges were learned, so no calibration."""
    from ..deploy import qat
    from ..errors import UserError

    if not (args.int8 and args.out.suffix.lower() == TORCHSCRIPT):
        raise UserError(f"{args.model} is a QAT checkpoint: it converts to torch int8 (--int8 --out FILE{TORCHSCRIPT})")
    if args.calib or args.fp32 is not None or args.observer:
        raise UserError(
            f"{args.model} is a QAT checkpoint: its ranges and fp32 parts were fixed in training "
            "(leave out --calib, --fp32 and --observer)"
        )
    try:
        qat.to_int8(qat.from_checkpoint(ckpt), args.out, ckpt.get("step"), overwrite=args.overwrite)
    except (FileExistsError, IsADirectoryError) as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB, torch int8 from QAT)")
    return 0


def _run_torch_int8(args, is_onnx: bool) -> int:
    """``dbdetect export --int8 --out model.torchscript``: torch's own int8 (:mod:`dbdetect.deploy.torch_int8`)."""
    from ..deploy.torch_int8 import DEFAULT_OBSERVER, quantize_torch
    from ..errors import UserError

    if not args.int8:
        raise UserError(f"--out {args.out}: a .torchscript file is torch's int8; add --int8 --calib DIR")
    if is_onnx:
        raise UserError(f"{args.model} is ONNX; torch int8 starts from a registry name or a checkpoint")
    fp32 = None
    if args.fp32 is not None:
        fp32 = [m for m in (n.strip() for n in args.fp32.split(",")) if m not in ("", "none")]
    try:
        quantize_torch(
            args.model,
            args.out,
            args.calib,
            n=args.calib_n or 32,
            limit_side_len=args.calib_side_len,
            fp32_modules=fp32,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            observer=args.observer or DEFAULT_OBSERVER,
        )
    except (FileExistsError, IsADirectoryError) as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB, torch int8)")
    from ..runtime.int8_cpu import has_vnni, speed_note

    if not has_vnni():
        print(f"note: {speed_note()}", file=sys.stderr)
    return 0
