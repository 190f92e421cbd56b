"""Quantisation-aware fine-tuning: a DBNet that trains with torch int8's rounding, then converts to it.

:func:`prepare` turns a trained network into a :class:`QATNet` in named steps:
BatchNorm folded (:func:`dbdetect.models.fuse`), the copy FX can trace
(:func:`dbdetect.deploy.torch_int8.traceable`), FX's ``prepare_qat_fx`` with the
fake-quantised twin of post-training int8's settings (same fp32 regions, 7-bit
weights, uint8 activations, RSE gates as float leaves), then :func:`calibrate`:
the activation ranges are the min and max seen on training images, exactly
those post-training quantisation would use. Training then starts from the
int8 model post-training quantisation would give, not from a guess.

Why frozen activation ranges: torch's default QAT observers are moving
averages that start from the first batch; on PP-OCRv4 they moved the map far
from fp32 before the first step, and a run collapsed to H 0.39. So the
activation ranges stay the calibrated ones and the weights learn to live with
them; each weight's per-channel range follows the weight (it is re-read at
every step) until :meth:`QATNet.freeze_observers`, after which the int8 grid is
fixed and the last steps fine-tune onto it.

The threshold branch is only a training aid (inference never runs it), so it
stays float and reads the fake-quantised features. :func:`to_int8` converts
the probability path with FX's ``convert_fx`` to the same ``.torchscript``
format :mod:`dbdetect.deploy.torch_int8` writes.

FX graph mode (``torch.ao.quantization``) rather than torchao's PT2E flow:
the post-training path already runs on it, so both share one set of
quantisation settings and one converted form, and both run on torch's x86
int8 kernels, whose correctness on CPUs without VNNI this package checks
(:mod:`dbdetect.runtime.int8_cpu`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from ..runtime import int8_cpu
from ..runtime.torchscript import save, to_torchscript
from . import int8_gates, torch_int8

CHECKPOINT_KEY = "qat"


class _ProbAndFeatures(nn.Module):
    """backbone -> neck -> probability branch, returning the features too (the threshold branch reads them)."""

    backbone: nn.Module
    neck: nn.Module
    head: Any

    def __init__(self, net: nn.Module):
        super().__init__()
        self.backbone, self.neck, self.head = net.backbone, net.neck, net.head  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.neck(self.backbone(x))
        return f, self.head.binarize(f)


class QATNet(nn.Module):
    """A fake-quantised DBNet: eval mode returns the probability map, train mode dict(prob, thresh, binary).

    Attributes:
        qnet: the FX-prepared network (backbone, neck, probability branch).
        thresh: the float threshold branch.
        cfg: the model's settings; ``qat``: how it was prepared (stored in checkpoints).
    """

    fused = True  # BatchNorm is already folded: Detector must not fold again

    def __init__(self, qnet: fx.GraphModule, thresh: nn.Module, k: float, cfg: dict, qat: dict):
        super().__init__()
        self.qnet, self.thresh, self.k = qnet, thresh, float(k)
        self.cfg, self.qat = dict(cfg), dict(qat)

    @property
    def backbone(self) -> nn.Module:
        """The backbone's part of the graph (training gives it its own learning rate)."""
        return self.qnet.get_submodule("backbone")

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        f, prob = self.qnet(x)
        if not self.training:
            return prob
        thresh = self.thresh(f)
        return dict(prob=prob, thresh=thresh, binary=torch.sigmoid(self.k * (prob - thresh)))

    def freeze_observers(self) -> None:
        """Fix every int8 range from now on (the weights' grid included)."""
        self.qnet.apply(torch.ao.quantization.disable_observer)
        self.qat["observers_frozen"] = True


# the median RMS of PP-OCRv4's conv weights before BatchNorm is folded (0.197)
WEIGHT_RMS = 0.2


class _ChannelScale(nn.Module):
    """``weight = v * s``: a folded weight trained as ``v``, each output channel at the RMS :data:`WEIGHT_RMS`.

    Folding BatchNorm multiplies each output channel by gamma / sigma, so the folded
    channels of PP-OCRv4 span 0.003 to 3.7 in RMS; Adam moves every parameter by about
    the learning rate, so a step that fine-tunes the unfolded network (lr 1e-4, one
    thousandth of a typical weight) changed the smallest folded channels by 3% and
    the QAT loss rose fivefold in 8 steps. Trained as ``v``, each channel moves as the
    unfolded network's weights do, and the fp32 recipe's learning rates carry over.
    """

    def __init__(self, weight: torch.Tensor, out_dim: int):
        super().__init__()
        dims = [d for d in range(weight.ndim) if d != out_dim]
        rms = weight.detach().pow(2).mean(dim=dims, keepdim=True).sqrt()
        self.s: torch.Tensor
        self.register_buffer("s", (rms / WEIGHT_RMS).clamp_min(1e-8))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v * self.s

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / self.s


def _scale_weights(net: nn.Module) -> None:
    """Every conv weight of ``net`` trained through :class:`_ChannelScale`."""
    from torch.nn.utils import parametrize

    for mod in list(net.modules()):
        w = getattr(mod, "weight", None)
        if isinstance(w, nn.Parameter) and w.ndim == 4 and not parametrize.is_parametrized(mod, "weight"):
            out_dim = 1 if isinstance(mod, nn.ConvTranspose2d) else 0
            parametrize.register_parametrization(mod, "weight", _ChannelScale(w, out_dim))


def _unscale_weights(net: nn.Module) -> None:
    """Plain weights again, in place (``net`` is a copy: torch's remove_parametrizations edits the
    parametrised class, which the original shares with its copies)."""
    from torch.nn.utils import parametrize

    for mod in list(net.modules()):
        if parametrize.is_parametrized(mod, "weight"):
            weight = torch.as_tensor(mod.weight).detach().clone()
            mod.__class__ = mod.__class__.__bases__[0]
            del mod._modules["parametrizations"]
            mod.weight = nn.Parameter(weight)


def _is_weight_fq(name: str) -> bool:
    return name.endswith("weight_fake_quant")


def prepare(
    net: nn.Module,
    calibration: Sequence[torch.Tensor],
    fp32_modules: Sequence[str] | None = None,
    progress: bool = False,
) -> QATNet:
    """A :class:`QATNet` of a trained (unfused) DBNet, its activation ranges calibrated on ``calibration``.

    ``fp32_modules``: kept float (default :data:`dbdetect.deploy.torch_int8.DEFAULT_FP32`, those the
    model has); the deconvolutions stay float too, as in post-training int8.
    """
    if not calibration:
        raise ValueError("QAT needs at least one calibration image")
    qat = build(net, fp32_modules, calibration[0])
    calibrate(qat, calibration, progress)
    return qat


def _affines(fused: nn.Module, values: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """PP-LCNetV3's scalar affines left after folding; set from ``values`` when given.

    The traced network holds them as constants (FX traces them faithfully so), which
    no state dict carries: the QAT settings keep them for :func:`from_checkpoint`.
    """
    from ..models.layers import LearnableAffine

    found = {}
    for name, mod in fused.named_modules():
        if isinstance(mod, LearnableAffine):
            if values is not None:
                with torch.no_grad():
                    mod.scale.fill_(values[name][0])
                    mod.bias.fill_(values[name][1])
            found[name] = [float(mod.scale.detach()), float(mod.bias.detach())]
    return found


def build(
    net: nn.Module,
    fp32_modules: Sequence[str] | None,
    example: torch.Tensor,
    affines: dict[str, list[float]] | None = None,
) -> QATNet:
    """The prepared, uncalibrated :class:`QATNet` (a checkpoint's state dict loads into it).

    ``affines``: the scalar affines of :func:`_affines` (a checkpoint's), else the network's own.
    """
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    from .. import models

    cfg = models.cfg_of(net)
    fused = models.fuse(copy.deepcopy(net).eval(), channels_last=False)
    names = dict(fused.named_modules())
    keep = [m for m in torch_int8.DEFAULT_FP32 if m in names] if fp32_modules is None else list(fp32_modules)
    unknown = [m for m in keep if m not in names]
    if unknown:
        raise ValueError(f"fp32_modules: {', '.join(unknown)} not in {cfg.get('name')}")
    keep += [n for n in torch_int8.deconv_names(fused) if n.startswith("head.binarize") and n not in keep]
    gates = int8_gates.gated_1x1_names(fused, keep)
    affine_values = _affines(fused, affines)
    int8_cpu.use_engine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        qnet = prepare_qat_fx(
            _ProbAndFeatures(torch_int8.traceable(fused, keep)).train(),
            torch_int8.qconfig_mapping(keep + gates, "minmax", qat=True),
            example_inputs=(example,),
            prepare_custom_config=PrepareCustomConfig().set_non_traceable_module_names(gates),
        )
    settings = dict(
        fp32_modules=keep,
        gates=gates,
        affines=affine_values,
        weight_bits=torch_int8.WEIGHT_BITS,
        observers_frozen=False,
    )
    head: Any = fused.head
    model = QATNet(qnet, copy.deepcopy(head.thresh), head.k, cfg, settings)
    _scale_weights(model)
    return model


@torch.no_grad()
def calibrate(qat: QATNet, images: Sequence[torch.Tensor], progress: bool = False) -> None:
    """Activation ranges = the min and max seen on ``images``; then fake quantisation on, those ranges frozen."""
    from torch.ao.quantization import disable_fake_quant, enable_fake_quant, enable_observer
    from tqdm import tqdm

    was_training = qat.training
    qat.eval()
    qat.qnet.apply(disable_fake_quant)
    qat.qnet.apply(enable_observer)
    for x in tqdm(images, desc="calibrate", unit="img", disable=not progress):
        qat.qnet(x)
    qat.qnet.apply(enable_fake_quant)
    for name, mod in qat.qnet.named_modules():
        if isinstance(mod, torch.ao.quantization.FakeQuantizeBase) and not _is_weight_fq(name):
            mod.disable_observer()
    qat.train(was_training)


def from_checkpoint(ckpt: dict[str, Any]) -> QATNet:
    """The :class:`QATNet` a QAT training checkpoint holds."""
    from .. import models

    settings = ckpt[CHECKPOINT_KEY]
    cfg = dict(ckpt.get("cfg") or {})
    net: Any = models.create(ckpt["arch"], pretrained=False, **dict(cfg.get("arch_kwargs") or {}))
    net.cfg.update(cfg)
    qat = build(net, settings["fp32_modules"], torch.zeros(1, 3, 64, 64), settings["affines"])
    qat.load_state_dict(ckpt["model"], strict=True)
    if settings.get("observers_frozen"):
        qat.freeze_observers()
    return qat


def read_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint dict at ``path`` when it is a QAT training checkpoint, else None."""
    path = Path(path)
    if path.suffix not in (".pt", ".pth", ".ckpt") or not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a checkpoint at all: the caller's own loader names the problem
        return None
    return ckpt if isinstance(ckpt, dict) and CHECKPOINT_KEY in ckpt else None


def _prob_only(gm: fx.GraphModule) -> fx.GraphModule:
    """The converted graph returning the probability map alone (the features were for training)."""
    out = next(n for n in gm.graph.nodes if n.op == "output")
    result = out.args[0]
    out.args = (result[1],)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return gm


def convert(qat: QATNet) -> fx.GraphModule:
    """The int8 network (real kernels), probability map only, RSE gates folded as in post-training int8."""
    from torch.ao.quantization.quantize_fx import convert_fx

    int8_cpu.use_engine()
    qnet = copy.deepcopy(qat.qnet).eval()
    _unscale_weights(qnet)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = _prob_only(convert_fx(qnet))
    gates = set(qat.qat["gates"])
    module.folded_gates = int8_gates.fold_gates(module, gates, torch_int8.weight_qmax())  # type: ignore[assignment]
    # The fp32 regions' weights channels-last, as post-training int8 stores them (models.fuse):
    # oneDNN's fp32 convolutions of the stem and the deconvolutions ran 4x slower in NCHW on a
    # side-1440 input (a QAT file took 0.68x fp32 time end to end against 0.54x post-training).
    module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return module


def to_int8(qat: QATNet, out_path: str | Path, steps: int | None = None, overwrite: bool = False) -> Path:
    """Write ``qat`` as an int8 ``.torchscript`` file :class:`dbdetect.Detector` runs."""
    from ..files import check_out

    out_path = Path(out_path)
    check_out(out_path, overwrite)
    module = convert(qat)
    ts = to_torchscript(module, torch.zeros(1, 3, 64, 64))
    settings = dict(
        engine="torch x86 (FX graph mode), quantisation-aware training",
        weights="s8 per channel",
        activations="u8 per tensor, minmax (calibrated, frozen in training)",
        activation_bits=torch_int8.ACTIVATION_BITS,
        weight_bits=qat.qat["weight_bits"],
        qat_steps=steps,
        int8_deconvs=False,
        prob_logits="fp32",
        fp32_modules=qat.qat["fp32_modules"],
        folded_gates=module.folded_gates,
    )
    save(ts, qat.cfg, settings, out_path)
    return out_path
