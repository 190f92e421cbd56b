"""ONNX files: write one from a DBNet (:func:`to_onnx`) and run one on onnxruntime (:class:`OnnxSession`).

:func:`to_onnx` writes the BatchNorm-folded eval-mode network with dynamic batch, height
and width and one output, the probability map; the model's cfg goes into the file's
metadata (:mod:`dbdetect.runtime.metadata`), so ``Detector("model.onnx")`` needs nothing
else. Conversion and session live in one module: the export verifies itself on a
session, and a session of a registry model exports it into a cache.

onnx and onnxruntime are optional (``pip install "dbdetect[onnx]"``): imported only when
a file is written or a session is created, never by the torch path.

>>> sess = OnnxSession("ppocrv4.onnx")          # doctest: +SKIP
>>> sess.cfg["name"], sess(batch).shape         # doctest: +SKIP
('ppocrv4', (1, 736, 1312))
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..files import atomic_file, cache_root, check_out
from .metadata import INSTALL_HINT, META_KEY, cfg_from_json, cfg_to_json, with_defaults

if TYPE_CHECKING:
    import torch

DEFAULT_OPSET = 17
# Trace shape: small, and not square, so no H/W confusion can hide in the graph.
_TRACE_SHAPE = (1, 3, 96, 128)


def import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(f"ONNX export needs the onnx package: {INSTALL_HINT}") from exc
    return onnx


def save_atomic(model_proto: Any, path: Path, check: Callable[[Path], object] | None = None) -> None:
    """Save through :func:`atomic_file`, running ``check(tmp_path)`` before the rename."""
    onnx = import_onnx()
    with atomic_file(path) as tmp:
        onnx.save(model_proto, str(tmp))
        if check is not None:
            check(tmp)


def set_metadata(model_proto: Any, key: str, value: str) -> None:
    """Set (or replace) one ``metadata_props`` entry of an ONNX ModelProto."""
    for p in model_proto.metadata_props:
        if p.key == key:
            p.value = value
            return
    model_proto.metadata_props.add(key=key, value=value)


def _load_torch_model(model: Any) -> torch.nn.Module:
    import torch

    from .. import models

    if isinstance(model, torch.nn.Module):
        if not isinstance(getattr(model, "cfg", None), dict):
            raise TypeError("a model passed as nn.Module needs a .cfg dict (see dbdetect.models.create)")
        return copy.deepcopy(model)
    if str(model).lower().endswith(".onnx"):
        raise ValueError(f"{model} is already an ONNX file; to_onnx needs a registry name, checkpoint or nn.Module")
    return models.create(model, pretrained=True)


def _drop_identities(graph: Any) -> None:
    """Remove Identity nodes (the legacy exporter leaves them for shared weights)."""
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
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
    import torch

    x = torch.rand(2, 3, 160, 96, generator=torch.Generator().manual_seed(0)) * 4 - 2
    with torch.inference_mode():
        ref = net(x)[:, 0].numpy()
    diff = float(np.abs(OnnxSession(path)(x.numpy()) - ref).max())
    if not diff <= tol:
        raise RuntimeError(f"exported {path} differs from the torch model by {diff:.2e} (> {tol:g})")
    return diff


def to_onnx(
    model: str | os.PathLike[str] | torch.nn.Module,
    path: str | os.PathLike[str],
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    verify: bool = True,
) -> Path:
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
    import torch

    from .. import models

    onnx = import_onnx()
    path = Path(path)
    check_out(path, overwrite)
    if int(opset) < 13:
        raise ValueError(f"opset must be >= 13 (Resize with sizes), got {opset}")
    net = models.fuse(_load_torch_model(model).eval(), channels_last=False)
    cfg = models.cfg_of(net)

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        raw = Path(tmp) / "raw.onnx"
        # The TorchScript exporter (dynamo=False): the dynamo one needs onnxscript and gives
        # nothing these convolution-only graphs need.
        torch.onnx.export(
            net,
            (torch.zeros(_TRACE_SHAPE),),
            str(raw),
            dynamo=False,
            opset_version=int(opset),
            input_names=["image"],
            output_names=["prob"],
            do_constant_folding=True,
            dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}, "prob": {0: "N", 2: "H", 3: "W"}},
        )
        proto = onnx.load(str(raw))
    _drop_identities(proto.graph)
    proto.producer_name = "dbdetect"
    set_metadata(proto, META_KEY, cfg_to_json(cfg))
    onnx.checker.check_model(proto)
    save_atomic(proto, path, check=(lambda p: _verify(net, p)) if verify and _has_ort() else None)
    return path


def _has_ort() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False  # export works without it; the check is skipped
    return True


def import_onnxruntime() -> Any:
    """``onnxruntime``, or an ImportError that says which extra to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(f"the onnxruntime backend needs onnxruntime: {INSTALL_HINT}") from exc
    return onnxruntime


def _providers(ort: Any, device: str) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(
                f"device {device!r} requested, but this onnxruntime has no CUDA provider; "
                "use device='cpu' or install onnxruntime-gpu"
            )
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

    def __init__(self, path: str | os.PathLike[str], device: str = "cpu", num_threads: int | None = None) -> None:
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
            raise ValueError(
                f"{self.path}: expected one input (N, 3, H, W), found {len(inputs)}: {[i.name for i in inputs]}"
            )
        shape = inputs[0].shape
        if len(shape) != 4 or shape[1] not in (3, "3") or inputs[0].type != "tensor(float)":
            raise ValueError(
                f"{self.path}: input {inputs[0].name!r} must be float (N, 3, H, W), found {inputs[0].type} {shape}"
            )
        out = outputs[0].shape
        if len(out) not in (3, 4):
            raise ValueError(
                f"{self.path}: output {outputs[0].name!r} must be a probability map (N, 1, H, W), found shape {out}"
            )
        self.input_name = inputs[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probability maps, float32 (N, H, W), for a float32 (N, 3, H, W) batch."""
        prob: np.ndarray = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]
        return prob[:, 0] if prob.ndim == 4 else prob


# ---------------------------------------------------------------- export cache


def cache_dir() -> Path:
    """Where on-the-fly exports go: ``$DBDETECT_CACHE/onnx``, else ``~/.cache/dbdetect/onnx``."""
    return cache_root() / "onnx"


def weights_hash(module: torch.nn.Module) -> str:
    """A short hash of a model's weights (state dict names, shapes and bytes)."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def cached_export(net: torch.nn.Module, opset: int) -> Path:
    """The cached ONNX export of ``net`` (an eval-mode DBNet with a cfg), exporting it if needed.

    The file name is keyed on the registry name, the weights hash, the opset
    and the dbdetect version, so a retrained checkpoint never reuses a stale file.
    """
    from .. import __version__
    from ..models import cfg_of

    name = str(cfg_of(net).get("name") or "model")
    path = cache_dir() / f"{name}-{weights_hash(net)}-opset{opset}-v{__version__}.onnx"
    if not path.is_file():
        to_onnx(net, path, opset=opset)
    return path


def open_session(
    model: Any, device: str, num_threads: int | None, explicit: dict[str, Any], opset: int | None = None
) -> tuple[OnnxSession, dict[str, Any]]:
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

    from .. import models

    if isinstance(model, torch.nn.Module):
        if not isinstance(getattr(model, "cfg", None), dict):
            raise TypeError("a model passed as nn.Module needs a .cfg dict (see dbdetect.models.create)")
        net = model
    else:
        net = models.create(model, pretrained=True)
    path = cached_export(net, opset or DEFAULT_OPSET)
    sess = OnnxSession(path, device, num_threads)
    return sess, with_defaults(sess.cfg, str(path), explicit)


class OnnxRuntime:
    """An onnxruntime session of an ``.onnx`` file, or of any other model exported to the cache first."""

    backend = "onnxruntime"

    def __init__(
        self, model: Any, device: str = "cpu", num_threads: int | None = None, explicit: dict[str, Any] | None = None
    ) -> None:
        from .base import check_device

        self.device = check_device(device)
        self.session, self.cfg = open_session(model, str(self.device), num_threads, explicit or {})

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session(batch)
