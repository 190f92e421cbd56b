"""dbdetect: small, fast scene-text detection with DBNet.

>>> import dbdetect
>>> dets = dbdetect.detect("photo.jpg")          # doctest: +SKIP
>>> [(d.polygon.shape, round(d.score, 2)) for d in dets]  # doctest: +SKIP

Heavy modules (torch, the models) load on first use so that
``import dbdetect`` and ``dbdetect --version`` stay fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "detect": "dbdetect.detector",
    "Detector": "dbdetect.detector",
    "Detection": "dbdetect.detector",
    "to_json": "dbdetect.detector",
    "draw": "dbdetect.visualize",
    "crop": "dbdetect.crops",
    "load_image": "dbdetect.imageio",
}

__all__ = ["__version__", "labels", "postprocess", "models", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in ("labels", "postprocess", "models", "evaluate", "losses", "data", "train"):
        return importlib.import_module(f"dbdetect.{name}")
    raise AttributeError(f"module 'dbdetect' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
