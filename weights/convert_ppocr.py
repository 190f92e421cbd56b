#!/usr/bin/env python
"""Convert PaddleOCR's PP-OCRv3/v4 detection ONNX models to dbdetect PyTorch state dicts.

The ONNX files come from the rapidocr-onnxruntime wheels on PyPI (Apache-2.0):
    rapidocr-onnxruntime==1.2.13  rapidocr_onnxruntime/models/ch_PP-OCRv3_det_infer.onnx
    rapidocr-onnxruntime==1.4.4   rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx
A wheel missing from --wheel-dir is fetched with ``pip download --no-deps``.

How: the ONNX graph is walked in node order and reduced to a list of parameter groups (conv
weight [+ bias], BatchNorm, PP-LCNetV3 scalar affine); the torch model's parameterised leaf
modules are listed in execution order (forward hooks on a dummy input); the two lists are
zipped with a shape check on every tensor. The ONNX carries only the inference graph, so the
DB head's threshold branch (training only) is initialised as a copy of the probability branch.
Finally the torch model is checked against onnxruntime on a random input.

Usage:
    python weights/convert_ppocr.py [--wheel-dir DIR] [--out-dir weights] [--models ppocrv4 ppocrv3]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dbdetect import models  # noqa: E402
from dbdetect.models.layers import LearnableAffine, PaddleHardsigmoid  # noqa: E402

SOURCES = {
    "ppocrv3": ("1.2.13", "rapidocr_onnxruntime/models/ch_PP-OCRv3_det_infer.onnx", "ppocrv3_det.pt"),
    "ppocrv4": ("1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", "ppocrv4_det.pt"),
}


def wheel_path(version: str, wheel_dir: Path) -> Path:
    """The rapidocr-onnxruntime wheel of ``version`` in ``wheel_dir``, downloaded if absent."""
    name = f"rapidocr_onnxruntime-{version}-py3-none-any.whl"
    path = wheel_dir / name
    if not path.is_file():
        wheel_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheel_dir),
                        f"rapidocr-onnxruntime=={version}"], check=True)
    if not path.is_file():
        raise FileNotFoundError(f"{name} not found in {wheel_dir} after pip download")
    return path


def read_onnx_bytes(model_name: str, wheel_dir: Path) -> bytes:
    version, member, _ = SOURCES[model_name]
    with zipfile.ZipFile(wheel_path(version, wheel_dir)) as zf:
        return zf.read(member)


def onnx_param_groups(onnx_bytes: bytes):
    """Reduce the ONNX graph to parameter groups in node order.

    Returns:
        (groups, hardsigmoid_alphas): groups are tuples ("conv", weight, bias|None),
        ("bn", scale, shift, mean, var, eps) or ("lab", scale, bias).
    """
    import onnx
    from onnx import numpy_helper

    g = onnx.load_from_string(onnx_bytes).graph
    const = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            const[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        elif n.op_type == "Reshape" and all(i in const for i in n.input):
            const[n.output[0]] = const[n.input[0]].reshape(const[n.input[1]])
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def sole_consumer(name, op):
        cs = consumers.get(name, [])
        return cs[0] if len(cs) == 1 and cs[0].op_type == op else None

    groups, alphas = [], []
    for n in g.node:
        if n.op_type in ("Conv", "ConvTranspose"):
            w = const[n.input[1]]
            b = const[n.input[2]] if len(n.input) > 2 and n.input[2] else None
            out_ch = w.shape[1] if n.op_type == "ConvTranspose" else w.shape[0]
            add = sole_consumer(n.output[0], "Add")
            if b is None and add is not None:
                other = [i for i in add.input if i != n.output[0]][0]
                if other in const and const[other].size == out_ch:
                    b = const[other].reshape(-1)  # bias exported as a separate Add
            groups.append(("conv", w, b))
        elif n.op_type == "BatchNormalization":
            eps = next(a.f for a in n.attribute if a.name == "epsilon")
            groups.append(("bn",) + tuple(const[i] for i in n.input[1:5]) + (eps,))
        elif n.op_type == "Mul":
            cin = [i for i in n.input if i in const]
            if len(cin) == 1 and const[cin[0]].shape == (1,):
                add = sole_consumer(n.output[0], "Add")
                bias = [i for i in add.input if i in const] if add is not None else []
                if bias and const[bias[0]].shape == (1,):
                    groups.append(("lab", const[cin[0]], const[bias[0]]))
        elif n.op_type == "HardSigmoid":
            alphas.append(next(a.f for a in n.attribute if a.name == "alpha"))
    return groups, alphas


def torch_leaves(model: models.DBNet):
    """Parameterised leaves of backbone, neck and probability branch in execution order."""
    order, gates = [], []
    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, LearnableAffine)
    hooks = []
    for m in model.modules():
        if isinstance(m, kinds):
            hooks.append(m.register_forward_hook(lambda mod, i, o: order.append(mod)))
        elif isinstance(m, (nn.Hardsigmoid, PaddleHardsigmoid)):
            hooks.append(m.register_forward_hook(lambda mod, i, o: gates.append(mod)))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    return order, gates


def _copy(dst: torch.Tensor, src: np.ndarray, what: str) -> None:
    if tuple(dst.shape) != tuple(src.shape):
        raise ValueError(f"shape mismatch at {what}: torch {tuple(dst.shape)} vs onnx {src.shape}")
    dst.copy_(torch.from_numpy(np.array(src, dtype=np.float32)))


@torch.no_grad()
def convert(model_name: str, onnx_bytes: bytes) -> models.DBNet:
    """Build the torch model and fill it from the ONNX graph."""
    model = models.create(model_name, pretrained=False).eval()
    groups, alphas = onnx_param_groups(onnx_bytes)
    leaves, gates = torch_leaves(model)
    names = {m: n for n, m in model.named_modules()}
    if len(groups) != len(leaves):
        raise ValueError(f"{model_name}: {len(groups)} ONNX parameter groups vs {len(leaves)} torch layers")
    for grp, mod in zip(groups, leaves):
        where = names[mod]
        kind = grp[0]
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            if kind != "conv":
                raise ValueError(f"{where}: expected a conv, ONNX has {kind}")
            _copy(mod.weight, grp[1], where + ".weight")
            if (grp[2] is None) != (mod.bias is None):
                raise ValueError(f"{where}: bias presence differs (onnx {grp[2] is not None})")
            if grp[2] is not None:
                _copy(mod.bias, grp[2], where + ".bias")
        elif isinstance(mod, nn.BatchNorm2d):
            if kind != "bn":
                raise ValueError(f"{where}: expected BatchNorm, ONNX has {kind}")
            _, scale, shift, mean, var, eps = grp
            if abs(eps - mod.eps) > 1e-9:
                raise ValueError(f"{where}: eps {eps} vs {mod.eps}")
            _copy(mod.weight, scale, where + ".weight")
            _copy(mod.bias, shift, where + ".bias")
            _copy(mod.running_mean, mean, where + ".running_mean")
            _copy(mod.running_var, var, where + ".running_var")
            mod.num_batches_tracked.zero_()
        else:
            if kind != "lab":
                raise ValueError(f"{where}: expected an affine block, ONNX has {kind}")
            _copy(mod.scale, grp[1], where + ".scale")
            _copy(mod.bias, grp[2], where + ".bias")
    want = [0.2 if isinstance(m, PaddleHardsigmoid) else 1 / 6 for m in gates]
    if len(want) != len(alphas) or any(abs(a - b) > 1e-6 for a, b in zip(alphas, want)):
        raise ValueError(f"hard-sigmoid slopes differ: onnx {alphas} vs torch {want}")
    # Threshold branch: absent from the inference graph; start fine-tuning from a copy of the
    # probability branch (same architecture, features already tuned to text regions).
    model.head.thresh.load_state_dict(model.head.binarize.state_dict())
    return model


def check_against_onnxruntime(model: models.DBNet, onnx_bytes: bytes, seed: int = 0) -> float:
    """Max |torch - onnxruntime| of the probability map on a random 320x256 input."""
    import onnxruntime as ort

    x = np.random.default_rng(seed).standard_normal((1, 3, 256, 320)).astype(np.float32)
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(x)).numpy()
    return float(np.abs(out - ref).max())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wheel-dir", type=Path, default=Path.home() / ".cache" / "dbdetect-wheels",
                    help="where the rapidocr-onnxruntime wheels are (downloaded there if missing)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "weights")
    ap.add_argument("--models", nargs="+", default=sorted(SOURCES), choices=sorted(SOURCES))
    args = ap.parse_args(argv)
    for name in args.models:
        version, member, fname = SOURCES[name]
        onnx_bytes = read_onnx_bytes(name, args.wheel_dir)
        model = convert(name, onnx_bytes)
        err = check_against_onnxruntime(model, onnx_bytes)
        if err > 1e-4:
            raise SystemExit(f"{name}: converted model differs from onnxruntime by {err:.3g}")
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        out = args.out_dir / fname
        out.write_bytes(buf.getvalue())
        print(f"{name}: rapidocr-onnxruntime=={version} {member}\n"
              f"  onnx sha256 {sha256(onnx_bytes)}\n  wrote {out} ({out.stat().st_size} bytes) "
              f"sha256 {sha256(buf.getvalue())}\n  max |torch - onnxruntime| = {err:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
