"""Read text-detection ground truth into one in-memory form, :class:`Sample`.

Supported layouts (``load_samples(source, fmt=...)``):

``icdar2015`` -- a folder ``DIR/images`` + ``DIR/gts`` (or images and label
    files side by side in one folder). Image ``name.jpg`` is labelled by
    ``gt_name.txt`` (``name.txt`` also accepted). One text per line:
    ``x1,y1,x2,y2,x3,y3,x4,y4,transcription``; the transcription is the rest
    of the line and may contain commas. ``###`` marks a don't-care region.
    UTF-8 with or without BOM, LF or CRLF.

``polygon`` -- same folder layout, variable-length polygons:
    ``x1,y1,...,xn,yn,transcription`` with n >= 3. The coordinates are the
    leading numeric fields; their count must be even, so an odd run means the
    last number starts the transcription. A transcription that itself begins
    with two numeric comma-separated fields is ambiguous in this format: use
    ``totaltext`` or ``paddle`` for such data.

``totaltext`` -- same folder layout (``poly_gt_name.txt`` also accepted), the
    Total-Text ``.txt`` ground truth, one text per line::

        x: [[115 503 494 115]], y: [[322 346 426 404]], ornt: [u'm'], transcriptions: [u'nauGHTY']

    ``ornt`` ``'#'`` or transcription ``'#'``/``'###'`` marks don't care.

``paddle`` -- a PaddleOCR label file: ``image_path<TAB>json`` per line, where
    json is ``[{"transcription": "...", "points": [[x, y], ...]}, ...]``.
    Image paths are relative to ``root`` when given, else to the label file's
    folder (absolute paths are used as they are).

``funsd`` -- the FUNSD layout: ``DIR/images/name.png`` and
    ``DIR/annotations/name.json``, ``{"form": [{"words": [{"box": [x0, y0, x1,
    y1], "text": ...}, ...], ...}, ...]}``. Each word is one axis-aligned
    box; words with empty text are skipped (FUNSD marks no don't-care).

``auto`` (default) -- a file is read as ``paddle``; a folder whose
    ``annotations/`` holds ``.json`` files and no ``.txt`` as ``funsd``; in
    other folders each label file is read as ``totaltext`` when its first
    line starts with ``x:``, else as ``icdar2015``.

Malformed lines raise :class:`LabelError` naming ``file:line``; with
``lenient=True`` they are skipped with a warning instead.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..imageio import IMAGE_EXTENSIONS

FORMATS = ("auto", "icdar2015", "polygon", "totaltext", "paddle", "funsd")
DONT_CARE = "###"


class LabelError(ValueError):
    """A label file that cannot be parsed; the message names file and line."""


@dataclass
class Sample:
    """One image and its text regions.

    Attributes:
        image_path: the image file.
        polygons: list of float32 ``(K, 2)`` arrays (K >= 3), image pixels.
        ignore: per polygon, True for don't-care regions (``###``).
        texts: per polygon, the transcription.
    """

    image_path: Path
    polygons: list = field(default_factory=list)
    ignore: list = field(default_factory=list)
    texts: list = field(default_factory=list)


_NUM = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")


def _read_lines(path: Path) -> list[str]:
    # utf-8-sig strips a BOM if there is one and is plain UTF-8 otherwise.
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelError(f"{path}: not valid UTF-8 ({exc})") from None
    return text.splitlines()


def _check_poly(coords: list[float], where: str) -> np.ndarray:
    pts = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        raise LabelError(f"{where}: a polygon needs at least 3 points, got {len(pts)}")
    if not np.isfinite(pts).all():
        raise LabelError(f"{where}: non-finite coordinate")
    return pts.astype(np.float32)


def parse_icdar2015_line(line: str, where: str):
    """Parse ``x1,y1,...,x4,y4,transcription`` -> (polygon (4,2), text)."""
    parts = line.split(",")
    if len(parts) < 8:
        raise LabelError(f"{where}: expected 8 coordinates and a transcription, got {line!r}")
    try:
        coords = [float(p) for p in parts[:8]]
    except ValueError:
        raise LabelError(f"{where}: the first 8 fields must be numbers, got {line!r}") from None
    text = ",".join(parts[8:]).strip()
    return _check_poly(coords, where), text


def parse_polygon_line(line: str, where: str):
    """Parse ``x1,y1,...,xn,yn,transcription`` (n >= 3) -> (polygon (n,2), text)."""
    parts = line.split(",")
    n = 0
    while n < len(parts) and _NUM.match(parts[n]):
        n += 1
    if n == len(parts) or n % 2 == 1:
        n -= 1  # the transcription is mandatory; an odd run ends in it
    if n < 6:
        raise LabelError(f"{where}: expected at least 3 points (6 numbers) then a transcription, got {line!r}")
    coords = [float(p) for p in parts[:n]]
    text = ",".join(parts[n:]).strip()
    return _check_poly(coords, where), text


_TT = re.compile(
    r"^\s*x:\s*\[\[(?P<x>[^\]]*)\]\]\s*,\s*y:\s*\[\[(?P<y>[^\]]*)\]\]\s*,\s*"
    r"ornt:\s*\[(?P<ornt>.*?)\]\s*,\s*transcriptions:\s*\[(?P<text>.*)\]\s*$"
)


def _py_str(token: str, where: str) -> str:
    token = token.strip()
    if not token:
        return ""
    try:
        value = ast.literal_eval(token)
    except (ValueError, SyntaxError):
        raise LabelError(f"{where}: cannot read string {token!r}") from None
    if not isinstance(value, str):
        raise LabelError(f"{where}: expected a string, got {token!r}")
    return value


def parse_totaltext_line(line: str, where: str):
    """Parse a Total-Text txt line -> (polygon (n,2), text, ignore)."""
    m = _TT.match(line)
    if not m:
        raise LabelError(
            f"{where}: not a Total-Text line 'x: [[...]], y: [[...]], ornt: [...], transcriptions: [...]': {line!r}"
        )
    try:
        xs = [float(v) for v in m["x"].replace(",", " ").split()]
        ys = [float(v) for v in m["y"].replace(",", " ").split()]
    except ValueError:
        raise LabelError(f"{where}: non-numeric coordinate in {line!r}") from None
    if len(xs) != len(ys):
        raise LabelError(f"{where}: {len(xs)} x values but {len(ys)} y values")
    ornt = _py_str(m["ornt"], where)
    text = _py_str(m["text"], where)
    poly = _check_poly([v for xy in zip(xs, ys) for v in xy], where)
    return poly, text, ornt == "#" or text in ("#", DONT_CARE)


def _parse_label_file(path: Path, fmt: str, lenient: bool) -> tuple[list, list, list]:
    lines = _read_lines(path)
    if fmt == "auto":
        first = next((ln for ln in lines if ln.strip()), "")
        fmt = "totaltext" if first.lstrip().startswith("x:") else "icdar2015"
    polys, ignore, texts = [], [], []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            if fmt == "totaltext":
                poly, text, ign = parse_totaltext_line(line, where)
            else:
                parse = parse_icdar2015_line if fmt == "icdar2015" else parse_polygon_line
                poly, text = parse(line, where)
                ign = text == DONT_CARE
        except LabelError as exc:
            if not lenient:
                raise
            warnings.warn(f"skipping malformed label: {exc}", stacklevel=3)
            continue
        polys.append(poly)
        ignore.append(bool(ign))
        texts.append(text)
    return polys, ignore, texts


def _label_candidates(label_dir: Path, stem: str) -> Iterable[Path]:
    for name in (f"gt_{stem}.txt", f"poly_gt_{stem}.txt", f"{stem}.txt"):
        yield label_dir / name


def read_folder(folder, fmt: str = "auto", lenient: bool = False) -> list[Sample]:
    """Read an ICDAR-style folder (``images/`` + ``gts/``, or both in one folder).

    Args:
        folder: the dataset folder.
        fmt: ``auto``, ``icdar2015``, ``polygon`` or ``totaltext`` (see module doc).
        lenient: skip malformed lines (and images without a label file) with a
            warning instead of raising.

    Returns:
        list of :class:`Sample`, sorted by image path.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {folder}")
    if (folder / "images").is_dir():
        img_dir = folder / "images"
        label_dir = next((folder / d for d in ("gts", "gt", "labels", "annotations") if (folder / d).is_dir()), img_dir)
    else:
        img_dir = label_dir = folder
    images = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise FileNotFoundError(f"no images found in {img_dir}")
    samples = []
    for img in images:
        label = next((p for p in _label_candidates(label_dir, img.stem) if p.is_file()), None)
        if label is None:
            msg = f"no label file for {img} (looked for gt_{img.stem}.txt in {label_dir})"
            if not lenient:
                raise LabelError(msg)
            warnings.warn(f"skipping image: {msg}", stacklevel=2)
            continue
        polys, ignore, texts = _parse_label_file(label, fmt, lenient)
        samples.append(Sample(img, polys, ignore, texts))
    return samples


def read_paddle(label_file, root=None, lenient: bool = False) -> list[Sample]:
    """Read a PaddleOCR detection label file (``path<TAB>json`` per line).

    Args:
        label_file: the label file.
        root: folder the image paths are relative to (default: the label
            file's folder).
        lenient: skip malformed lines with a warning instead of raising.

    Returns:
        list of :class:`Sample` in file order.
    """
    label_file = Path(label_file)
    if not label_file.is_file():
        raise FileNotFoundError(f"label file not found: {label_file}")
    base = Path(root) if root is not None else label_file.parent
    samples = []
    for i, line in enumerate(_read_lines(label_file), 1):
        if not line.strip():
            continue
        where = f"{label_file}:{i}"
        try:
            samples.append(_parse_paddle_line(line, where, base))
        except LabelError as exc:
            if not lenient:
                raise
            warnings.warn(f"skipping malformed label: {exc}", stacklevel=2)
    return samples


def _parse_paddle_line(line: str, where: str, base: Path) -> Sample:
    if "\t" not in line:
        raise LabelError(f"{where}: expected 'image_path<TAB>json', found no tab")
    rel, payload = line.split("\t", 1)
    try:
        items = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise LabelError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(items, list):
        raise LabelError(f"{where}: expected a JSON list of regions")
    polys, ignore, texts = [], [], []
    for item in items:
        if not isinstance(item, dict) or "points" not in item:
            raise LabelError(f"{where}: each region needs 'points' (and 'transcription')")
        try:
            coords = [float(v) for pt in item["points"] for v in pt]
            if any(len(pt) != 2 for pt in item["points"]):
                raise ValueError
        except (TypeError, ValueError):
            raise LabelError(f"{where}: 'points' must be a list of [x, y] pairs") from None
        text = str(item.get("transcription", ""))
        polys.append(_check_poly(coords, where))
        texts.append(text)
        ignore.append(text == DONT_CARE or bool(item.get("difficult", False)) or bool(item.get("illegibility", False)))
    path = Path(rel.strip())
    return Sample(path if path.is_absolute() else base / path, polys, ignore, texts)


def _parse_funsd(path: Path) -> tuple[list, list, list]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise LabelError(f"{path}: not valid UTF-8 ({exc})") from None
    except json.JSONDecodeError as exc:
        raise LabelError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("form"), list):
        raise LabelError(f"{path}: a FUNSD annotation is an object with a 'form' list")
    polys, texts = [], []
    for e, entity in enumerate(doc["form"]):
        words = entity.get("words", []) if isinstance(entity, dict) else None
        if not isinstance(words, list):
            raise LabelError(f"{path}: form[{e}] needs a 'words' list")
        for w, word in enumerate(words):
            where = f"{path}: form[{e}].words[{w}]"
            box = word.get("box") if isinstance(word, dict) else None
            text = str(word.get("text", "")).strip() if isinstance(word, dict) else ""
            if not text:
                continue
            try:
                x0, y0, x1, y1 = (float(v) for v in box)  # type: ignore[union-attr]
            except (TypeError, ValueError):
                raise LabelError(f"{where}: 'box' must be [x0, y0, x1, y1], got {box!r}") from None
            if x1 < x0 or y1 < y0:
                raise LabelError(f"{where}: box {box!r} has x1 < x0 or y1 < y0")
            polys.append(_check_poly([x0, y0, x1, y0, x1, y1, x0, y1], where))
            texts.append(text)
    return polys, [False] * len(polys), texts


def read_funsd(folder, lenient: bool = False) -> list[Sample]:
    """Read a FUNSD folder (``images/`` + ``annotations/``): one word box per polygon.

    Args:
        folder: the dataset folder.
        lenient: skip unreadable annotations (and images without one) with a
            warning instead of raising.

    Returns:
        list of :class:`Sample`, sorted by image path.
    """
    folder = Path(folder)
    img_dir, ann_dir = folder / "images", folder / "annotations"
    if not img_dir.is_dir() or not ann_dir.is_dir():
        raise FileNotFoundError(f"a FUNSD folder holds images/ and annotations/: {folder}")
    images = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise FileNotFoundError(f"no images found in {img_dir}")
    samples = []
    for img in images:
        ann = ann_dir / f"{img.stem}.json"
        try:
            if not ann.is_file():
                raise LabelError(f"no annotation for {img} (looked for {ann})")
            polys, ignore, texts = _parse_funsd(ann)
        except LabelError as exc:
            if not lenient:
                raise
            warnings.warn(f"skipping image: {exc}", stacklevel=2)
            continue
        samples.append(Sample(img, polys, ignore, texts))
    return samples


def _looks_funsd(folder: Path) -> bool:
    ann = folder / "annotations"
    return (folder / "images").is_dir() and ann.is_dir() and any(ann.glob("*.json")) and not any(ann.glob("*.txt"))


def load_samples(source, fmt: str = "auto", root=None, lenient: bool = False) -> list[Sample]:
    """Read a dataset from a folder or a PaddleOCR label file.

    Args:
        source: a dataset folder (``icdar2015``/``polygon``/``totaltext``/
            ``funsd``) or a PaddleOCR label file.
        fmt: one of :data:`FORMATS`; ``auto`` picks by what ``source`` is.
        root: image root for PaddleOCR label files.
        lenient: skip malformed lines with a warning instead of raising.

    Returns:
        list of :class:`Sample`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown label format {fmt!r}; choose from {', '.join(FORMATS)}")
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"dataset not found: {source}")
    if source.is_file():
        if fmt not in ("auto", "paddle"):
            raise ValueError(f"{source} is a file: only the 'paddle' label format is a single file")
        return read_paddle(source, root=root, lenient=lenient)
    if fmt == "paddle":
        raise ValueError(f"{source} is a folder: the 'paddle' format needs the label file")
    if fmt == "funsd" or (fmt == "auto" and _looks_funsd(source)):
        return read_funsd(source, lenient=lenient)
    return read_folder(source, fmt=fmt, lenient=lenient)
