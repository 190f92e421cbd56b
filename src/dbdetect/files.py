"""Writing output files so that a crash or a refusal never costs what was already there."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cache_root() -> Path:
    """Where dbdetect keeps what it built or measured here: ``$DBDETECT_CACHE``, else ``~/.cache/dbdetect``."""
    root = os.environ.get("DBDETECT_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "dbdetect"


def check_out(path: Path, overwrite: bool) -> None:
    """Refuse an output path that exists (unless ``overwrite``) or is a folder."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite=True / --overwrite to replace it)")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file name such as model.onnx")


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it becomes ``path``.

    A crash or an exception inside the block never leaves half a file under ``path``
    nor replaces what was there. The file gets the permissions of any new file
    (mkstemp makes it private, 0600; a model file is not secret).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
