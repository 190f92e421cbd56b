"""torch's own x86 int8: quantise a DBNet after training and save it as TorchScript.

:func:`quantize_torch` runs named steps on the BatchNorm-folded network:
:func:`traceable` (a copy FX can trace faithfully), :func:`quantize_module`
(FX graph mode: per-channel int8 weights, uint8 activations whose ranges are
the min and max seen on real images at the model's resize setting, the probability
logits on a fixed range (:data:`LOGIT_RANGE`), then real int8 kernels, RSE-FPN's
1x1 gates folded into their convs by :mod:`dbdetect.int8_gates`)
and :func:`save` (traced, frozen TorchScript carrying the model's cfg).
The file runs with torch alone: ``Detector("model_int8.torchscript")``.

The backbone's stem and first stage stay fp32 by default: on held-out images
they cause about half of int8's loss in the text probability (README, "torch's
own int8"), for a small share of the time.

>>> from dbdetect.deploy.torch_int8 import quantize_torch                      # doctest: +SKIP
>>> quantize_torch("ppocrv4_ic15", "ic15_int8.torchscript", "train/images")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..runtime import int8_cpu
from ..runtime.torchscript import (  # noqa: F401
    EXTRA_CFG,
    EXTRA_QUANT,
    SUFFIX,
    load,
    save,
    to_torchscript,
)

# kept fp32 unless told otherwise (those the model has)
DEFAULT_FP32 = ("backbone.stem", "backbone.stages.0")
# Every ConvTranspose2d stays fp32 unless int8_deconvs=True: torch's x86 engine runs an
# int8 deconv in fbgemm on a CPU without AVX512-VNNI, and fbgemm's is wrong there
# whatever the input (a map of one value, no boxes; tests/test_int8_cpu.py).
INT8_DECONVS = False
# Weights span -63..63, not -127..127. x86 int8 kernels without VNNI (fbgemm's AVX2 and
# AVX-512 ones, oneDNN's AVX2 one) add u8 x s8 products in pairs into 16 bits, which
# saturate at 32767: 255 * 127 * 2 does not fit, 255 * 63 * 2 always does, whatever the
# image. 7-bit activations would not do: a conv clamps its output at 255, not at the
# calibrated 127, and on held-out images they cost 7 points of H where 7-bit weights
# cost none (docs, "int8 on every CPU").
ACTIVATION_BITS = 8
WEIGHT_BITS = 7
# how activation ranges are set from the calibration images. "histogram" (torch's
# L2-optimal range) clips the largest activations, which are the ones inside text;
# ppocrv4_ic15 scored lower with it on held-out images (README).
OBSERVERS = ("minmax", "histogram")
DEFAULT_OBSERVER = "minmax"
# The probability map's logits (the last deconv's output, the sigmoid's input) get a
# fixed uint8 range of +-LOGIT_RANGE, not the range seen in calibration. Those logits
# reach -170 and +100 on a few training images, so min/max gave steps of 1 to 1.4 and
# the map 10-15 values: every thresh between 0.19 and 0.5 drew the same boxes. Beyond
# +-8 the sigmoid is within 4e-4 of 0 or 1: nothing a threshold can tell apart is clipped.
PROB_LOGITS = "head.binarize.up2"
LOGIT_RANGE = 8.0


class _ScalarAffine(nn.Module):
    """LearnableAffine with its two scalars as Python floats: FX can trace it.

    ``inplace`` (fp32 regions only: int8 tensors have no in-place arithmetic) writes
    into the activation, which nothing else reads; at the stride-2 resolution of an
    fp32 first stage, allocating a fresh output cost more than the arithmetic.
    """

    def __init__(self, scale: float, bias: float, inplace: bool = False):
        super().__init__()
        self.scale, self.bias, self.inplace = scale, bias, inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return x.mul_(self.scale).add_(self.bias)
        return x * self.scale + self.bias


class _ResidualSE(nn.Module):
    """RSE-FPN's gate as ``x + x * s``.

    The eager module computes ``x * (s + 1)``; FX gives ``s + 1`` the fixed
    [0, 1) range of the hard-sigmoid before it, so int8 saturated it at 1 and
    dropped every residual gate of the neck (and cut its gradients in training).
    """

    def __init__(self, se: nn.Module):
        super().__init__()
        self.se = se

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate: torch.Tensor = self.se.squeeze(x)  # type: ignore[operator]  # an nn.Module attribute
        return x + x * gate


def traceable(net: nn.Module, fp32_modules: Sequence[str] = ()) -> nn.Module:
    """A copy of the fused eval network that FX can trace and quantise faithfully.

    ``fp32_modules``: names that will stay fp32; their affines work in place.
    """
    from ..models.layers import LearnableAffine, SEModule

    net = copy.deepcopy(net).eval()
    for name, mod in list(net.named_modules()):
        parent, _, leaf = name.rpartition(".")
        if isinstance(mod, LearnableAffine):  # no data-dependent branch
            fp32 = any(name.startswith(m + ".") for m in fp32_modules)
            setattr(net.get_submodule(parent), leaf, _ScalarAffine(float(mod.scale), float(mod.bias), fp32))
        elif isinstance(mod, SEModule) and mod.residual:
            setattr(net.get_submodule(parent), leaf, _ResidualSE(mod))
    return net


def _check_observer(observer: str) -> None:
    if observer not in OBSERVERS:
        raise ValueError(f"observer must be one of {', '.join(OBSERVERS)}, got {observer!r}")


def weight_qmax() -> int:
    """The largest int8 weight magnitude: 127, or 63 with 7-bit weights."""
    return int(2 ** (WEIGHT_BITS - 1) - 1)


def deconv_names(net: nn.Module) -> list[str]:
    return [name for name, m in net.named_modules() if isinstance(m, nn.ConvTranspose2d)]


def qconfig_mapping(fp32_modules: Sequence[str] = (), observer: str = DEFAULT_OBSERVER, qat: bool = False) -> Any:
    """Per-channel int8 weights, full-range uint8 activations (ranges by ``observer``); ``fp32_modules`` left out.

    The probability logits (:data:`PROB_LOGITS`) get the fixed range +-:data:`LOGIT_RANGE`.
    ``qat``: the same settings as fake-quantise modules (:mod:`dbdetect.deploy.qat`), where each
    weight's range is that of the weight as it is now (a moving average with constant 1), not
    of its history.
    """
    from torch.ao.quantization import (
        FakeQuantize,
        FixedQParamsFakeQuantize,
        FixedQParamsObserver,
        HistogramObserver,
        MinMaxObserver,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        PerChannelMinMaxObserver,
        QConfig,
        get_default_qat_qconfig_mapping,
        get_default_qconfig_mapping,
    )

    def weights(per_channel: bool, **kw: Any) -> Any:
        if not qat:
            return (PerChannelMinMaxObserver if per_channel else MinMaxObserver).with_args(**kw)
        kind = MovingAveragePerChannelMinMaxObserver if per_channel else MovingAverageMinMaxObserver
        return FakeQuantize.with_args(observer=kind, averaging_constant=1.0, **kw)

    _check_observer(observer)
    kind = MinMaxObserver if observer == "minmax" else HistogramObserver
    act_kw = dict(dtype=torch.quint8, reduce_range=ACTIVATION_BITS == 7)
    act = (
        FakeQuantize.with_args(observer=kind, quant_min=0, quant_max=255, **act_kw) if qat else kind.with_args(**act_kw)
    )
    wmax = weight_qmax()
    weight = weights(True, dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-wmax, quant_max=wmax)
    base = get_default_qat_qconfig_mapping("x86") if qat else get_default_qconfig_mapping("x86")
    mapping = base.set_global(QConfig(activation=act, weight=weight))
    # torch's x86 ConvTranspose takes per-tensor weights only
    deconv_weight = weights(
        False, dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-wmax, quant_max=wmax
    )
    mapping.set_object_type(nn.ConvTranspose2d, QConfig(activation=act, weight=deconv_weight))
    logits = FixedQParamsObserver.with_args(
        scale=2 * LOGIT_RANGE / 256, zero_point=128, dtype=torch.quint8, quant_min=0, quant_max=255
    )
    if qat:
        logits = FixedQParamsFakeQuantize.with_args(observer=logits)
    mapping.set_module_name(PROB_LOGITS, QConfig(activation=logits, weight=deconv_weight))
    for name in fp32_modules:
        mapping.set_module_name(name, None)
    if PROB_LOGITS in fp32_modules:
        # the sigmoid after it too: FX would quantise its float input with the sigmoid's
        # fixed *output* range [0, 1), and every pixel would come out at 0.5 or above
        mapping.set_module_name_object_type_order(PROB_LOGITS.rpartition(".")[0], torch.sigmoid, 0, None)
    return mapping


def quantize_module(
    fused: nn.Module,
    images: Sequence[Any],
    fp32_modules: Sequence[str] = (),
    progress: bool = False,
    fold_gates: bool = True,
    observer: str = DEFAULT_OBSERVER,
    int8_deconvs: bool | None = None,
) -> nn.Module:
    """The fused network with real int8 kernels, its activation ranges observed on ``images``.

    ``int8_deconvs``: quantise the ConvTranspose2d layers too (default :data:`INT8_DECONVS`);
    such a file is right only on CPUs with AVX512-VNNI.
    ``fold_gates``: run RSE-FPN's 1x1 layers as one int8 conv with the gate folded
    into its weight scales (:mod:`dbdetect.int8_gates`), not conv + mean + multiply.
    ``observer``: one of :data:`OBSERVERS`.
    """
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    from tqdm import tqdm

    from . import int8_gates

    int8_cpu.use_engine()
    if not (INT8_DECONVS if int8_deconvs is None else int8_deconvs):
        fp32_modules = list(fp32_modules) + [n for n in deconv_names(fused) if n not in fp32_modules]
    gates = int8_gates.gated_1x1_names(fused, fp32_modules) if fold_gates else []
    # calibrated as float leaves: their int8 form replaces them after conversion
    custom = PrepareCustomConfig().set_non_traceable_module_names(gates)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        prepared = prepare_fx(
            traceable(fused, fp32_modules),
            qconfig_mapping(list(fp32_modules) + gates, observer),
            example_inputs=(images[0],),
            prepare_custom_config=custom,
        )
        with torch.no_grad():
            for x in tqdm(images, desc="calibrate", unit="img", disable=not progress):
                prepared(x)
        module = convert_fx(prepared)
    # kept on the module for the file's settings; FX's GraphModule declares no such attribute
    module.folded_gates = int8_gates.fold_gates(module, set(gates), weight_qmax())  # type: ignore[assignment]
    return module


def quantize_torch(
    model: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calibration_images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    n: int = 32,
    limit_side_len: int | None = None,
    fp32_modules: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    observer: str = DEFAULT_OBSERVER,
    int8_deconvs: bool | None = None,
) -> Path:
    """torch int8 of a registry model or checkpoint, as a ``.torchscript`` file.

    The file is right on every x86 CPU (:mod:`dbdetect.runtime.int8_cpu`) unless ``int8_deconvs``.

    Args:
        model: registry name or checkpoint path.
        out_path: the file to write (refused if it exists, unless ``overwrite``).
        calibration_images: a folder, a label file or a list of image paths;
            training images, never the images you will score. ``n`` of them,
            evenly spread, set[str] the activation ranges.
        limit_side_len: resize limit of the calibration images (default: the model's).
        fp32_modules: module names kept in fp32 (default :data:`DEFAULT_FP32`,
            those of them the model has; ``()`` quantises everything).
        progress: show a tqdm bar over the calibration images.
        observer: how activation ranges are set, one of :data:`OBSERVERS`:
            "minmax" (the default) spans every value seen, "histogram" is
            torch's L2-optimal range, which clips the tails.
        int8_deconvs: quantise the ConvTranspose2d layers too (default :data:`INT8_DECONVS`):
            a file for CPUs with AVX512-VNNI only, which ``Detector`` refuses elsewhere.

    Returns:
        ``out_path`` as a Path.
    """
    from .. import models
    from ..files import check_out
    from ..imageio import load_image
    from ..preprocess import prepare
    from .calibration import calibration_paths, first_readable

    out_path = Path(out_path)
    check_out(out_path, overwrite)
    _check_observer(observer)  # before the long calibration
    paths = calibration_paths(calibration_images, n)
    first_readable(paths, calibration_images)
    net = models.create(model, pretrained=True)
    cfg = models.cfg_of(net)
    fused = models.fuse(net.eval())
    names = dict(fused.named_modules())
    keep = [m for m in DEFAULT_FP32 if m in names] if fp32_modules is None else list(fp32_modules)
    unknown = [m for m in keep if m not in names]
    if unknown:
        raise ValueError(f"fp32_modules: {', '.join(unknown)} not in {cfg.get('name') or model}")
    side = int(limit_side_len or cfg["limit_side_len"])
    images = []
    for p in paths:
        try:
            images.append(torch.from_numpy(prepare(load_image(p), cfg, side, cfg["limit_type"]))[None])
        except (ValueError, OSError) as exc:
            warnings.warn(f"calibration: skipping {p}: {exc}", stacklevel=2)
    deconvs = INT8_DECONVS if int8_deconvs is None else bool(int8_deconvs)
    quantized = quantize_module(fused, images, keep, progress, observer=observer, int8_deconvs=deconvs)
    module = to_torchscript(quantized, images[0][..., :64, :64])
    settings = dict(
        engine="torch x86 (FX graph mode)",
        weights="s8 per channel",
        activations=f"u8 per tensor, {observer}",
        activation_bits=ACTIVATION_BITS,
        weight_bits=WEIGHT_BITS,
        calibration_images=len(images),
        limit_side_len=side,
        int8_deconvs=deconvs,
        prob_logits=f"u8, fixed range +-{LOGIT_RANGE:g}" if deconvs else "fp32",
        fp32_modules=keep,
        folded_gates=quantized.folded_gates,
    )
    save(module, cfg, settings, out_path)
    return out_path
