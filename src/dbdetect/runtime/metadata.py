"""The settings a dbdetect model file carries, so that the file alone is enough to run it.

An ONNX file written by :func:`dbdetect.export.to_onnx` stores the model's cfg (registry
name, architecture, resize policy, mean/std, channel order, stride, post-processing
defaults) as JSON under the ``metadata_props`` key :data:`META_KEY`. A file without it
(a "foreign" DBNet export) runs with the PP-OCR settings in :data:`FOREIGN_DEFAULTS`,
overridable per setting, and a warning naming them.
"""

from __future__ import annotations

import json
import warnings

from ..defaults import PPOCR

META_KEY = "dbdetect.cfg"
# Bumped when the meaning of the stored cfg changes.
META_VERSION = 1
INSTALL_HINT = 'pip install "dbdetect[onnx]"'

# What a DBNet ONNX without dbdetect metadata is assumed to want: the PP-OCR
# conventions (BGR, ImageNet mean/std, short side 736), since PaddleOCR's own
# exports are the DBNet ONNX files found in the wild.
FOREIGN_DEFAULTS = dict(name=None, arch=None, **PPOCR)
_CFG_KEYS = tuple(FOREIGN_DEFAULTS) + ("arch_kwargs",)


def cfg_to_json(cfg: dict) -> str:
    """The JSON stored in an ONNX file: the inference-relevant part of a model cfg."""
    keep = {k: cfg[k] for k in _CFG_KEYS if k in cfg}
    for k in ("mean", "std"):
        if k in keep:
            keep[k] = [float(v) for v in keep[k]]
    return json.dumps({"version": META_VERSION, **keep}, sort_keys=True)


def cfg_from_json(text: str, where: str) -> dict:
    """Inverse of :func:`cfg_to_json`; ValueError naming ``where`` if it is not ours."""
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: metadata {META_KEY!r} is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict) or cfg.pop("version", None) != META_VERSION:
        raise ValueError(f"{where}: metadata {META_KEY!r} is not dbdetect cfg version {META_VERSION}")
    return cfg


def with_defaults(meta: dict | None, where: str, explicit: dict) -> dict:
    """The cfg to run a file with: its metadata, or the foreign defaults with a warning.

    Args:
        meta: the cfg read from the file (None when it has none).
        where: the file, for the warning.
        explicit: settings the caller gave (name -> value); they are not "assumed".

    Returns:
        A complete cfg dict.
    """
    if meta is not None:
        return {**FOREIGN_DEFAULTS, **meta}
    assumed = {k: v for k, v in FOREIGN_DEFAULTS.items() if k not in ("name", "arch") and explicit.get(k) is None}
    if assumed:
        listed = ", ".join(f"{k}={v!r}" for k, v in assumed.items())
        warnings.warn(
            f"{where} carries no dbdetect metadata ({META_KEY}); assuming {listed}. "
            f"Pass the Detector settings you need explicitly; export with dbdetect export to store them in the file.",
            UserWarning,
            stacklevel=3,
        )
    return dict(FOREIGN_DEFAULTS)
