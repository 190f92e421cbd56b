"""The old import path of :mod:`dbdetect.runtime.onnx`; the same module object, so its settings are shared."""

import sys

from .runtime import onnx as _module

sys.modules[__name__] = _module
