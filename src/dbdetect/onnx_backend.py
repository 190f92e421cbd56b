"""Run an exported DBNet on onnxruntime, and the dbdetect metadata an ONNX file carries.

An ONNX file written by :func:`dbdetect.export.to_onnx` stores the model's
cfg (registry name, architecture, resize policy, mean/std, channel order,
stride, post-processing defaults) as JSON under the ``metadata_props`` key
:data:`META_KEY`, so ``Detector("model.onnx")`` needs nothing else. A file
without it (a "foreign" DBNet export) runs with the PP-OCR settings in
:data:`FOREIGN_DEFAULTS`, overridable per setting, and a warning naming them.

onnxruntime is an optional dependency (``pip install "dbdetect[onnx]"``): it is
imported only when an :class:`OnnxSession` is created, never by the torch path.

>>> sess = OnnxSession("ppocrv4.onnx")          # doctest: +SKIP
>>> sess.cfg["name"], sess(batch).shape         # doctest: +SKIP
('ppocrv4', (1, 736, 1312))
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .runtime.metadata import FOREIGN_DEFAULTS, INSTALL_HINT, META_KEY, META_VERSION, cfg_from_json, cfg_to_json, with_defaults  # noqa: F401

def import_onnxruntime():
    """``onnxruntime``, or an ImportError that says which extra to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(f"the onnxruntime backend needs onnxruntime: {INSTALL_HINT}") from exc
    return onnxruntime


def _providers(ort, device: str) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(f"device {device!r} requested, but this onnxruntime has no CUDA provider; "
                             "use device='cpu' or install onnxruntime-gpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


class OnnxSession:
    """An onnxruntime session around a DBNet ONNX file: float32 (N, 3, H, W) -> (N, H, W).

    Args:
        path: the ONNX file.
        device: "cpu" or "cuda[:N]" (needs onnxruntime-gpu).
        num_threads: intra-op threads; ``None`` leaves onnxruntime's choice.

    Attributes:
        cfg: the dbdetect cfg stored in the file, or ``None`` for a foreign file.
    """

    def __init__(self, path, device: str = "cpu", num_threads: int | None = None):
        ort = import_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {self.path}")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads is not None:
            so.intra_op_num_threads = int(num_threads)
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=_providers(ort, str(device)))
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            if isinstance(exc, ValueError) and "device" in str(exc):
                raise
            raise ValueError(f"{self.path} is not a loadable ONNX model: {exc}") from None
        self._check_io()
        if "CPUExecutionProvider" == self.session.get_providers()[0]:
            from .int8_ort import check_file

            check_file(self.path)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.cfg = cfg_from_json(meta[META_KEY], str(self.path)) if META_KEY in meta else None

    def _check_io(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: expected one input (N, 3, H, W), found {len(inputs)}: "
                             f"{[i.name for i in inputs]}")
        shape = inputs[0].shape
        if len(shape) != 4 or shape[1] not in (3, "3") or inputs[0].type != "tensor(float)":
            raise ValueError(f"{self.path}: input {inputs[0].name!r} must be float (N, 3, H, W), "
                             f"found {inputs[0].type} {shape}")
        out = outputs[0].shape
        if len(out) not in (3, 4):
            raise ValueError(f"{self.path}: output {outputs[0].name!r} must be a probability map "
                             f"(N, 1, H, W), found shape {out}")
        self.input_name = inputs[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probability maps, float32 (N, H, W), for a float32 (N, 3, H, W) batch."""
        prob = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]
        return prob[:, 0] if prob.ndim == 4 else prob


# ---------------------------------------------------------------- export cache

def cache_dir() -> Path:
    """Where on-the-fly exports go: ``$DBDETECT_CACHE/onnx``, else ``~/.cache/dbdetect/onnx``."""
    root = os.environ.get("DBDETECT_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "dbdetect") / "onnx"


def weights_hash(module) -> str:
    """A short hash of a model's weights (state dict names, shapes and bytes)."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def cached_export(net, opset: int) -> Path:
    """The cached ONNX export of ``net`` (an eval-mode DBNet with a cfg), exporting it if needed.

    The file name is keyed on the registry name, the weights hash, the opset
    and the dbdetect version, so a retrained checkpoint never reuses a stale file.
    """
    from . import __version__
    from .export import to_onnx

    name = str(net.cfg.get("name") or "model")
    path = cache_dir() / f"{name}-{weights_hash(net)}-opset{opset}-v{__version__}.onnx"
    if not path.is_file():
        to_onnx(net, path, opset=opset)
    return path


def open_session(model, device: str, num_threads: int | None, explicit: dict, opset: int | None = None):
    """(OnnxSession, cfg) for a Detector: an .onnx file as is, anything else exported to the cache.

    Args:
        model: an .onnx path, a registry name, a checkpoint path or an nn.Module with a cfg.
        device, num_threads: as for :class:`OnnxSession`.
        explicit: the Detector settings given by the caller (for the foreign-file warning).
        opset: opset of an on-the-fly export (default: :data:`dbdetect.export.DEFAULT_OPSET`).

    Returns:
        The session and the complete cfg to run it with.
    """
    import_onnxruntime()  # fail with the install hint before any export work
    if isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".onnx"):
        sess = OnnxSession(model, device, num_threads)
        return sess, with_defaults(sess.cfg, str(model), explicit)
    import torch

    from . import models
    from .export import DEFAULT_OPSET

    if isinstance(model, torch.nn.Module):
        if not isinstance(getattr(model, "cfg", None), dict):
            raise TypeError("a model passed as nn.Module needs a .cfg dict (see dbdetect.models.create)")
        net = model
    else:
        net = models.create(model, pretrained=True)
    path = cached_export(net, opset or DEFAULT_OPSET)
    sess = OnnxSession(path, device, num_threads)
    return sess, with_defaults(sess.cfg, str(path), explicit)
