"""Held-out splits written as label files, so a recipe's split is reproduced exactly.

A rule picks the held-out images of a dataset by file name, in natural order
(``img_2`` before ``img_10``):

- ``{"every": 10, "offset": 9}``: every 10th image, starting with the 10th;
- ``{"numbered": [901, 1000]}``: images whose name ends in a number in that range
  (``img_901`` ... ``img_1000``).

The two parts are written as PaddleOCR label files with absolute image paths
(``train.txt`` and ``held_out.txt``), which every command reads like a folder.

>>> split_by_rule(["img_1", "img_2", "img_10"], {"numbered": [2, 10]})
([0], [1, 2])
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from .readers import DONT_CARE, Sample

_DIGITS = re.compile(r"(\d+)")
_TRAILING = re.compile(r"(\d+)$")
RULES = ("every", "numbered")


def natural_key(name: str) -> list:
    """Sort key that orders the numbers inside a name by value."""
    return [int(t) if t.isdigit() else t.lower() for t in _DIGITS.split(name)]


def split_by_rule(names: Sequence[str], rule: dict) -> tuple[list[int], list[int]]:
    """Indices of ``names`` kept for training and held out, each in natural order of the names."""
    allowed = {"every": {"every", "offset"}, "numbered": {"numbered"}}
    kind = next((k for k in RULES if isinstance(rule, dict) and k in rule), None)
    if kind is None or set(rule) - allowed[kind]:
        raise ValueError(
            f"held_out must be one rule, {{every: N, offset: K}} or {{numbered: [FIRST, LAST]}}; got {rule!r}"
        )
    order = sorted(range(len(names)), key=lambda i: natural_key(Path(names[i]).stem))
    if "every" in rule:
        every = rule["every"]
        offset = rule.get("offset", 0)
        if not isinstance(every, int) or every < 2:
            raise ValueError(f"held_out every must be an integer >= 2, got {every!r}")
        if not isinstance(offset, int):
            raise ValueError(f"held_out offset must be an integer, got {offset!r}")
        held = {order[k] for k in range(len(order)) if k % every == offset % every}
    else:
        span = rule["numbered"]
        if not (isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span)):
            raise ValueError(f"held_out numbered must be [FIRST, LAST] (integers), got {span!r}")
        held = set()
        for i in order:
            m = _TRAILING.search(Path(names[i]).stem)
            if m and span[0] <= int(m.group(1)) <= span[1]:
                held.add(i)
    if not held or len(held) == len(names):
        raise ValueError(f"held_out rule {rule!r} keeps {len(names) - len(held)} of {len(names)} images for training")
    return [i for i in order if i not in held], [i for i in order if i in held]


def write_paddle(samples: Sequence[Sample], path: Path) -> Path:
    """Write ``samples`` as a PaddleOCR label file (absolute image paths; don't-care as ``###``)."""
    lines = []
    for s in samples:
        regions = [
            {"transcription": DONT_CARE if ign else str(text), "points": [[float(x), float(y)] for x, y in poly]}
            for poly, ign, text in zip(s.polygons, s.ignore, s.texts)
        ]
        lines.append(f"{Path(s.image_path).resolve()}\t{json.dumps(regions, ensure_ascii=False)}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(path)
    return path


def write_split(samples: Sequence[Sample], rule: dict, folder: Path) -> tuple[Path, Path]:
    """Split ``samples`` by ``rule`` into ``folder/train.txt`` and ``folder/held_out.txt``."""
    keep, held = split_by_rule([str(s.image_path) for s in samples], rule)
    train = write_paddle([samples[i] for i in keep], folder / "train.txt")
    val = write_paddle([samples[i] for i in held], folder / "held_out.txt")
    return train, val
