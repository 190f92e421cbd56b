"""Image size and completeness from the encoded bytes, before anything is decoded.

A decompression bomb (a small file that decodes to gigapixels) must be refused
from its header; a truncated upload must be refused rather than decoded into
half a picture. Formats: PNG, JPEG, BMP, WebP, TIFF.

>>> import struct
>>> png = b"\\x89PNG\\r\\n\\x1a\\n" + struct.pack(">I4sII", 13, b"IHDR", 640, 480) + b"\\0" * 5
>>> image_size(png)
('png', 640, 480)
"""

from __future__ import annotations

import struct

FORMATS = ("png", "jpeg", "bmp", "webp", "tiff")


class ImageHeaderError(ValueError):
    """The bytes are not an image of a supported format, or its header is broken."""


def _png(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageHeaderError("broken PNG header (no IHDR chunk)")
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)


# start-of-frame markers that carry the size (not DHT C4, JPG C8, DAC CC)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes) -> tuple[int, int]:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ImageHeaderError("broken JPEG header (marker expected)")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF:
            if i + 9 > n:
                break
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        if marker == 0xDA:  # start of scan before any frame header
            break
        i += 2 + length
    raise ImageHeaderError("broken JPEG header (no frame size before the image data)")


def _bmp(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise ImageHeaderError("broken BMP header")
    w, h = struct.unpack("<ii", data[18:26])
    return abs(int(w)), abs(int(h))


def _webp(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise ImageHeaderError("broken WebP header")


def _tiff(data: bytes) -> tuple[int, int]:
    end = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(end + "I", data[4:8])
        (count,) = struct.unpack(end + "H", data[ifd : ifd + 2])
        size: dict[int, int] = {}
        for k in range(count):
            at = ifd + 2 + 12 * k
            tag, kind = struct.unpack(end + "HH", data[at : at + 4])
            if tag in (256, 257):
                fmt = end + ("H" if kind == 3 else "I")
                (size[tag],) = struct.unpack(fmt, data[at + 8 : at + 8 + struct.calcsize(fmt)])
        return int(size[256]), int(size[257])
    except (struct.error, KeyError):
        raise ImageHeaderError("broken TIFF header (no image width and length)") from None


def kind_of(data: bytes) -> str | None:
    """The format of encoded image bytes by their signature, or None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header alone.

    Raises:
        ImageHeaderError: not a supported image format, or a broken header.
    """
    kind = kind_of(data)
    if kind is None:
        raise ImageHeaderError(f"not an image of a supported format ({', '.join(FORMATS)})")
    reader = {"png": _png, "jpeg": _jpeg, "bmp": _bmp, "webp": _webp, "tiff": _tiff}[kind]
    w, h = reader(data)
    if w <= 0 or h <= 0:
        raise ImageHeaderError(f"{kind} header gives an empty image ({w} x {h})")
    return kind, w, h


def looks_complete(kind: str, data: bytes) -> bool:
    """False for a PNG without its end chunk or a JPEG without its end marker (a cut-off upload)."""
    tail = data[-1024:].rstrip(b"\x00\r\n ")
    if kind == "png":
        return b"IEND" in tail[-16:]
    if kind == "jpeg":
        return b"\xff\xd9" in tail[-64:]
    return True
