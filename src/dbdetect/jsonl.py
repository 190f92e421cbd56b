"""An append-only JSON-lines results file that survives being killed.

Each record is written as one whole line and flushed, so after a crash (even
SIGKILL) the file holds complete lines plus, at worst, one torn last line
without its newline. :func:`open_results` with ``resume=True`` finds that torn
tail, cuts it off (its image is simply done again) and returns the set of
paths already written, so a resumed run appends only what is missing.

>>> done, f = open_results("results.jsonl", resume=True)   # doctest: +SKIP
>>> f.write_record({"path": "/data/a.jpg", "polygons": [], "scores": []})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["ResultsFile", "open_results", "path_key"]


def path_key(path) -> str:
    """The key a result is recorded under: the absolute path, without touching the disk."""
    return os.path.abspath(os.fspath(path))


class ResultsFile:
    """A text file opened for appending whole, flushed JSON lines."""

    def __init__(self, path: Path, mode: str):
        self.path = Path(path)
        self._f = open(self.path, mode, encoding="utf-8", newline="\n")

    def write_record(self, rec: dict) -> None:
        # One write call per line, then flush: a kill can only tear the line
        # being written, and the reader recognises it by its missing newline.
        self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _read_done(path: Path) -> tuple[set[str], int]:
    """Paths recorded in ``path`` and the byte length of its complete lines."""
    done: set[str] = set()
    good = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                break  # torn tail from an interrupted write
            try:
                rec = json.loads(raw)
                done.add(path_key(rec["path"]))
            except (ValueError, KeyError, TypeError):
                raise ValueError(
                    f"{path}, line {lineno}: not a dbdetect result line "
                    "(expected a JSON object with a 'path'); refusing to append to it"
                ) from None
            good += len(raw)
    return done, good


def open_results(path, resume: bool = False, overwrite: bool = False) -> tuple[set[str], ResultsFile]:
    """Open a results file for writing; with ``resume``, keep what is there.

    Args:
        path: the ``.jsonl`` file.
        resume: keep existing complete lines, drop a torn last line, append.
        overwrite: start afresh even if the file exists.

    Returns:
        ``(done, file)``: the :func:`path_key` of every recorded image (empty
        unless resuming) and a :class:`ResultsFile` to append to.

    Raises:
        ValueError: the file exists and neither flag allows touching it, or a
            complete line is not a result record.
    """
    path = Path(path)
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other: choose one")
    if path.exists() and not (resume or overwrite):
        raise ValueError(f"--out {path} already exists (use --resume to continue it or --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not (resume and path.exists()):
        return set(), ResultsFile(path, "w")
    done, good = _read_done(path)
    if good < path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good)
    return done, ResultsFile(path, "a")
