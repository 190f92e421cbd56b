"""The import path of :func:`to_onnx` and :func:`quantize` (``dbdetect export`` is :mod:`dbdetect.cli.export`).

:func:`to_onnx` writes the BatchNorm-folded eval-mode network with dynamic
batch, height and width and one output, the probability map; the model's cfg
goes into the file's metadata so ``Detector("model.onnx")`` needs nothing
else. :func:`quantize` turns such a file into a static int8 model calibrated
on real images pre-processed exactly as the detector does.

Needs the ``onnx`` extra: ``pip install "dbdetect[onnx]"``. torch's own int8
(``--out model.torchscript``) is :mod:`dbdetect.deploy.torch_int8` and needs torch alone.

>>> from dbdetect.export import to_onnx, quantize
>>> to_onnx("ppocrv4", "ppocrv4.onnx")                                          # doctest: +SKIP
>>> quantize("ppocrv4.onnx", "ppocrv4_int8.onnx", "icdar2015/train/images")    # doctest: +SKIP
"""

from __future__ import annotations

from .deploy.calibration import calibration_paths
from .deploy.onnx_int8 import POLICIES, quantize
from .runtime.onnx import DEFAULT_OPSET, set_metadata, to_onnx

__all__ = ["DEFAULT_OPSET", "POLICIES", "calibration_paths", "quantize", "set_metadata", "to_onnx"]
