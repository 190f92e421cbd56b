"""DBNet models: registry, pretrained PP-OCR detectors, BatchNorm folding.

>>> from dbdetect import models
>>> models.list_models()
['dbnet_mobilenetv3', 'dbnet_resnet18', 'dbnet_resnet50', 'ppocrv3', 'ppocrv4']
>>> net = models.fuse(models.create("ppocrv4").eval())
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import dbnet as _dbnet  # noqa: F401  (registers the entry points)
from .dbnet import INT8_FILES, DBNet, int8_file, weights_dir
from .registry import get_entry, list_models, register_model

__all__ = [
    "cfg_of",
    "create",
    "list_models",
    "list_int8_models",
    "int8_file",
    "fuse",
    "register_model",
    "DBNet",
    "weights_dir",
]


def list_int8_models() -> list[str]:
    """Names of the bundled int8 models (``Detector(name)`` runs them on x86 CPUs), sorted."""
    return sorted(INT8_FILES)


def create(name_or_path: str | os.PathLike[str], pretrained: bool = True, **kw: Any) -> nn.Module:
    """Build a model by registry name, or load a training checkpoint.

    Args:
        name_or_path: a name from :func:`list_models`, or the path of a checkpoint dict
            {"arch": registry name, "model": state_dict, "cfg": cfg, ...} written by training.
        pretrained: load the bundled weights (registry names only). Only ``ppocrv4`` and
            ``ppocrv3`` have them; True on another architecture raises ValueError.
        **kw: architecture options passed to the entry function (e.g. ``scale``).

    Returns:
        The model (in train mode, as nn.Module builds it; call ``.eval()`` for inference).

    Raises:
        ValueError: unknown name, or pretrained weights requested where there are none.
        FileNotFoundError: bundled weights missing.
    """
    if isinstance(name_or_path, str) and name_or_path in list_models():
        return _built(get_entry(name_or_path)(pretrained=pretrained, **kw))
    if isinstance(name_or_path, str) and name_or_path in INT8_FILES:
        fp32 = name_or_path.removesuffix("_int8")
        raise ValueError(
            f"{name_or_path!r} is a bundled int8 model, not a network to build or train: run it with "
            f"Detector({name_or_path!r}); to fine-tune, start from {fp32!r} (dbdetect train --qat for int8)"
        )
    path = Path(name_or_path)
    if path.suffix in (".pt", ".pth", ".ckpt") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return _load_checkpoint(path, **kw)
    # Neither a known name nor a file: get_entry raises the error listing the known names.
    return _built(get_entry(str(name_or_path))(pretrained=pretrained, **kw))


def _built(model: object) -> nn.Module:
    """A registry entry's result, checked to be a network (a plug-in entry may return anything)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"a registry entry must return an nn.Module, got {type(model).__name__}")
    return model


def _load_checkpoint(path: Path, **kw: Any) -> nn.Module:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike: the file is not ours
        raise ValueError(
            f"{path} is not a dbdetect checkpoint (torch.load failed: {type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    if not isinstance(ckpt, dict) or not {"arch", "model"} <= set(ckpt):
        raise ValueError(f"{path} is not a dbdetect checkpoint (expected a dict with 'arch' and 'model')")
    return from_checkpoint(ckpt, **kw)


def from_checkpoint(ckpt: dict[str, Any], **kw: Any) -> nn.Module:
    """The model a loaded checkpoint dict describes: its architecture, weights and cfg."""
    if "qat" in ckpt:  # dbdetect.deploy.qat's checkpoints: fake-quantised, not a float network
        raise ValueError(
            "this is a quantisation-aware training checkpoint (dbdetect train --qat): run its "
            "best_int8.torchscript, or convert it with dbdetect export --int8 --model CKPT --out FILE.torchscript"
        )
    cfg = dict(ckpt.get("cfg") or {})
    arch_kwargs = dict(cfg.get("arch_kwargs") or {}, **kw)
    model = _built(get_entry(ckpt["arch"])(pretrained=False, **arch_kwargs))
    model.load_state_dict(ckpt["model"], strict=True)
    if cfg:
        model.cfg.update(cfg)
    return model


@torch.no_grad()
def fuse(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """Fold BatchNorm (and PP-LCNetV3's affine blocks) into the preceding convolutions.

    For inference only: the model is put in eval mode, and its state dict no longer matches
    the unfused architecture (save checkpoints before fusing). In place.

    Args:
        model: a model from :func:`create`.
        channels_last: also store the weights channels-last. oneDNN's CPU convolutions run
            much faster so (about 1.5x on the PP-OCR models); inputs may stay NCHW, and the
            (N, 1, H, W) output is laid out the same either way.

    Returns:
        ``model``.
    """
    model.eval()
    for m in list(model.modules()):
        fuse_ = getattr(m, "fuse_", None)
        if callable(fuse_):
            fuse_()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.fused = True
    return model


def cfg_of(net: nn.Module) -> dict[str, Any]:
    """A copy of the settings dict a dbdetect model carries as ``net.cfg``; TypeError without one."""
    cfg = getattr(net, "cfg", None)
    if not isinstance(cfg, dict):
        raise TypeError("a model passed as nn.Module needs a .cfg dict (see dbdetect.models.create)")
    return dict(cfg)
