"""What a detection request carries: its images (raw, multipart or base64 JSON) and its settings."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from .headers import ImageHeaderError, image_size, looks_complete


class BadRequest(Exception):
    """A request the service refuses: an HTTP status and a message naming the problem."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


# setting -> (type, check, what the check says)
SETTINGS: dict[str, tuple[type, Any, str]] = {
    "thresh": (float, lambda v: 0 < v < 1, "in (0, 1)"),
    "box_thresh": (float, lambda v: 0 <= v <= 1, "in [0, 1]"),
    "unclip_ratio": (float, lambda v: 0 < v <= 10, "in (0, 10]"),
    "box_type": (str, lambda v: v in ("quad", "poly"), "'quad' or 'poly'"),
    "limit_side_len": (int, lambda v: 32 <= v <= 4096, "in [32, 4096]"),
}
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def parse_settings(fields: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(detector settings, visualize) from query, form or JSON fields; BadRequest 422 naming a bad one."""
    out: dict[str, Any] = {}
    for key, (kind, ok, what) in SETTINGS.items():
        if fields.get(key) is None or fields.get(key) == "":
            continue
        raw = fields[key]
        try:
            if isinstance(raw, bool) or (kind is not str and isinstance(raw, str) and not raw.strip()):
                raise ValueError
            value = kind(raw)
            if kind is int and isinstance(raw, float) and raw != int(raw):
                raise ValueError
        except (TypeError, ValueError):
            raise BadRequest(422, f"{key} must be a {kind.__name__} {what}, got {raw!r}") from None
        if not ok(value):
            raise BadRequest(422, f"{key} must be {what}, got {raw!r}")
        out[key] = value
    vis = fields.get("visualize", False)
    if isinstance(vis, str):
        if vis.lower() not in TRUE | FALSE:
            raise BadRequest(422, f"visualize must be 0 or 1, got {vis!r}")
        vis = vis.lower() in TRUE
    return out, bool(vis)


def check_image(data: bytes, max_pixels: int, name: str) -> tuple[int, int]:
    """(width, height) of an upload from its header; 415/422/413 when it cannot or must not be decoded."""
    if not data:
        raise BadRequest(422, f"{name}: empty upload")
    try:
        kind, w, h = image_size(data)
    except ImageHeaderError as exc:
        status = 415 if "supported format" in str(exc) else 422
        raise BadRequest(status, f"{name}: {exc}") from None
    if w * h > max_pixels:
        raise BadRequest(413, f"{name}: {w} x {h} = {w * h} pixels is over the limit of {max_pixels} (--max-pixels)")
    if not looks_complete(kind, data):
        raise BadRequest(422, f"{name}: the {kind} data is truncated (no end marker)")
    return w, h


@dataclass
class Upload:
    name: str
    data: bytes


def from_json(body: bytes) -> tuple[list[Upload], dict[str, Any]]:
    """Images and fields of ``{"image": BASE64}`` or ``{"images": [BASE64, ...]}`` plus settings."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(422, f"the JSON body is invalid: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest(422, 'the JSON body must be an object: {"image": "<base64>", ...}')
    items = doc.get("images", [doc["image"]] if "image" in doc else None)
    if not isinstance(items, list) or not items:
        raise BadRequest(422, 'the JSON body needs "image" (base64) or "images" (a list of base64 strings)')
    uploads = []
    for k, item in enumerate(items):
        if not isinstance(item, str):
            raise BadRequest(422, f"images[{k}] must be a base64 string")
        if item.startswith("data:") and "," in item:  # a data URL, as a browser's FileReader gives
            item = item.split(",", 1)[1]
        try:
            uploads.append(Upload(f"images[{k}]", base64.b64decode(item, validate=True)))
        except (binascii.Error, ValueError):
            raise BadRequest(422, f"images[{k}] is not valid base64") from None
    fields = {k: v for k, v in doc.items() if k not in ("image", "images")}
    return uploads, fields
