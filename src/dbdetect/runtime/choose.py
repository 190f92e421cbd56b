"""Which runtime a model runs on: the one place that looks at what a model is.

A registry name, a checkpoint or an ``nn.Module`` runs in torch (or, asked for,
exported once and run in onnxruntime); an ``.onnx`` file in onnxruntime; a
``.torchscript`` int8 file in torch's int8 kernels.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .base import Runtime
from .torchscript import SUFFIX as TORCHSCRIPT

BACKENDS = ("torch", "onnxruntime")


def is_file_of(model: object, suffix: str) -> bool:
    """``model`` is a path whose name ends in ``suffix`` (any case)."""
    return isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(suffix)


def pick_backend(model: object, backend: str | None) -> str:
    """``backend``, or the one ``model`` needs; ValueError when they contradict each other."""
    is_onnx = is_file_of(model, ".onnx")
    if backend is None:
        return "onnxruntime" if is_onnx else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'torch' or 'onnxruntime', got {backend!r}")
    if is_onnx and backend == "torch":
        raise ValueError(f"{model} is an ONNX file: it runs with backend='onnxruntime', not 'torch'")
    if is_file_of(model, TORCHSCRIPT) and backend == "onnxruntime":
        raise ValueError(f"{model} is a torch int8 (TorchScript) file: it runs with backend='torch'")
    return backend


def open_runtime(
    model: str | os.PathLike[str] | torch.nn.Module,
    backend: str | None = None,
    device: str = "cpu",
    num_threads: int | None = None,
    explicit: dict[str, Any] | None = None,
    precision: str = "auto",
) -> Runtime:
    """The runtime of ``model`` (see the module doc).

    ``explicit``: the settings the caller gave, so that a foreign ONNX file's
    warning names only the defaults it falls back on.
    """
    from .. import models

    if isinstance(model, str) and model in models.list_int8_models():
        model = models.int8_file(model)
    chosen = pick_backend(model, backend)
    if precision not in ("auto", "fp32") and (chosen == "onnxruntime" or is_file_of(model, TORCHSCRIPT)):
        raise ValueError(
            f"precision={precision!r} runs the torch network in eager mode; an exported model runs as it was "
            "exported (precision 'auto' or 'fp32')"
        )
    if chosen == "onnxruntime":
        from .onnx import OnnxRuntime

        return OnnxRuntime(model, device, num_threads, explicit)
    if is_file_of(model, TORCHSCRIPT) and not isinstance(model, torch.nn.Module):
        from .torchscript import TorchScriptRuntime

        return TorchScriptRuntime(model, device, num_threads)
    from .torch_module import TorchModuleRuntime

    return TorchModuleRuntime(model, device, num_threads, precision)
