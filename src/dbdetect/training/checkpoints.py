"""Checkpoint files: opening the one to resume, writing them atomically, and the RNG state that makes resume exact."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np


def rng_state():
    import torch

    # tensors and plain types only, so models.create() can read checkpoints with weights_only=True
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    st = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st):
    import torch

    random.setstate(st["python"])
    kind, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def atomic_save(obj, path: Path) -> None:
    import torch

    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def open_checkpoint(args):
    """The checkpoint to resume (or None) and the run folder."""
    import torch

    if args.resume:
        rp = Path(args.resume)
        if rp.is_dir():
            rp = rp / "last.pt"
        if not rp.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {rp}")
        ckpt = torch.load(rp, map_location="cpu", weights_only=False)
        if "train_state" not in ckpt:
            raise ValueError(f"{rp} is not a resumable training checkpoint (no train_state); use it as --model instead")
        return ckpt, Path(args.out) if args.out else rp.parent
    if not args.out:
        raise ValueError("--out RUN_DIR is required")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise ValueError(
            f"run folder {out} is not empty: pass --resume {out / 'last.pt'} to continue, "
            "--overwrite to reuse it, or choose another --out"
        )
    return None, out
