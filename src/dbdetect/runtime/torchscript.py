"""TorchScript int8 files (torch's own x86 int8): save, and load with the cfg they carry.

The file holds the traced, frozen network and two extra files: the model's cfg
(:data:`EXTRA_CFG`) and how it was quantised (:data:`EXTRA_QUANT`), which :func:`load`
checks against the running CPU (:mod:`dbdetect.runtime.int8_cpu`).
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..files import atomic_file
from . import int8_cpu
from .base import check_device
from .metadata import cfg_from_json, cfg_to_json

SUFFIX = ".torchscript"  # how Detector and dbdetect export recognise these files
EXTRA_CFG = "dbdetect.cfg"
EXTRA_QUANT = "dbdetect.quantization"


def to_torchscript(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Traced and frozen; any N, H, W runs (the graph keeps no shape constants)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notices
        with torch.no_grad():
            return torch.jit.freeze(torch.jit.trace(module.eval(), example, check_trace=False).eval())


def save(module: torch.jit.ScriptModule, cfg: dict, settings: dict, path: Path) -> None:
    """Write next to ``path`` and rename: never half a file, never a replaced one on failure."""
    with atomic_file(path) as tmp:
        torch.jit.save(
            module,
            str(tmp),
            _extra_files={EXTRA_CFG: cfg_to_json(cfg), EXTRA_QUANT: json.dumps(settings, sort_keys=True)},
        )
        load(tmp)  # it reads back


def _check_archive(path: Path) -> None:
    """Refuse a damaged file before torch reads it: torch's zip reader checks no checksums,
    so flipped bytes inside a weight would load and give wrong maps without a word."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{path} is not a TorchScript file (truncated, or not a zip archive: {exc})") from None
    if damaged is not None:
        raise ValueError(f"{path} is damaged: its entry {damaged!r} fails its CRC-32 checksum; copy the file again")


def load(path, check_cpu: bool = False) -> tuple[torch.jit.ScriptModule, dict]:
    """(module, cfg) of a file written by :func:`quantize_torch`; ValueError if it is not one.

    ``check_cpu``: refuse a file whose int8 would go wrong on this CPU, and warn once
    where int8 is no faster than fp32 here (:func:`dbdetect.runtime.int8_cpu.check_file`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    _check_archive(path)
    extra = {EXTRA_CFG: "", EXTRA_QUANT: ""}
    int8_cpu.use_engine()
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as exc:
        raise ValueError(f"{path} is not a TorchScript file ({str(exc).splitlines()[0]})") from None
    if not extra[EXTRA_CFG]:
        raise ValueError(f"{path} carries no dbdetect settings ({EXTRA_CFG!r}): write it with dbdetect export")
    if check_cpu:
        int8_cpu.check_file(path, module, json.loads(extra[EXTRA_QUANT] or "{}"))
    channels_last_constants(module)
    return module.eval(), cfg_from_json(extra[EXTRA_CFG], str(path))


def channels_last_constants(module: torch.jit.ScriptModule) -> int:
    """Store the frozen graph's fp32 4-D weights channels-last, in place; returns how many moved.

    oneDNN runs the fp32 convolutions of an int8 file (stem, deconvolutions) several times
    slower on NCHW weights, and a file traced from an NCHW module keeps them so (the
    bundled ``ppocrv4_ic15_int8``'s forward pass at side 1440: 243 ms as stored, 197 ms
    re-laid). The values do not change; the summation order may, so maps agree up to
    the int8 rounding that follows.
    """
    moved = 0
    for node in module.graph.findAllNodes("prim::Constant"):  # type: ignore[attr-defined]
        if not (node.hasAttribute("value") and node.kindOf("value") == "t"):
            continue
        t = node.t("value")
        if t.dim() == 4 and t.is_floating_point() and not t.is_contiguous(memory_format=torch.channels_last):
            node.t_("value", t.contiguous(memory_format=torch.channels_last))
            moved += 1
    return moved


class TorchScriptRuntime:
    """A torch int8 file of :func:`dbdetect.deploy.torch_int8.quantize_torch`: x86 int8 kernels, CPU only.

    The file is checked against this CPU first (:func:`dbdetect.runtime.int8_cpu.check_file`).
    """

    backend = "torch"

    def __init__(self, path: str | os.PathLike[str], device: str = "cpu", num_threads: int | None = None) -> None:
        self.device = check_device(device)
        if self.device.type != "cpu":
            raise ValueError(f"{path} holds x86 int8 kernels, which run on the CPU only; use device='cpu'")
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        self.module: Any
        self.module, self.cfg = load(path, check_cpu=True)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.module(torch.from_numpy(batch))[:, 0].float().numpy()
        return out
