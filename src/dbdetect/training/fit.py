"""Start a run: settings, devices and processes, then a :class:`~dbdetect.training.session.Session`."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from . import recipe
from .checkpoints import open_checkpoint
from .config import check_recipe, resolve_data, resolve_hparams
from .session import Session

if TYPE_CHECKING:
    import torch


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        run_dir: the run folder (``last.pt``, ``best.pt``, ``metrics.jsonl``, ``config.yaml``).
        best: ``{"hmean", "loss", "epoch"}`` of ``best.pt`` (``hmean`` is None without validation).
        steps: optimiser steps done so far, of ``total_steps``.
        stopped: why the run stopped before the end of its schedule (``--time-limit``,
            ``--stop-after``), or None when it finished; resume it with ``resume=run_dir``.
    """

    run_dir: Path
    best: dict[str, Any]
    steps: int
    total_steps: int
    stopped: str | None


def fit(config: str | Path | dict[str, Any] | None = None, **overrides: Any) -> FitResult:
    """Train or fine-tune a detector, as ``dbdetect train`` does.

    Args:
        config: a YAML recipe file (see :mod:`dbdetect.training.recipe`), a mapping of
            the same settings, or None for the defaults.
        **overrides: settings that replace the file's, named as the command's flags
            with underscores: ``out="runs/a"``, ``epochs=3``, ``train=["my_set"]``,
            ``resume="runs/a"``. None leaves a setting as the file (or the default) has it.

    Returns:
        a :class:`FitResult`: the run folder and its best metrics.

    Raises:
        ValueError: an unknown setting, a value of the wrong type, or an invalid recipe.
        FileNotFoundError: a missing recipe file, data set or checkpoint.

    >>> fit("recipes/ppocrv4_td500.yaml", data_root="data", out="runs/td500")  # doctest: +SKIP
    FitResult(run_dir=PosixPath('runs/td500'), best={'hmean': 0.82, ...}, ...)
    """
    args = recipe.resolve(config, overrides)
    session = train_session(args)
    return FitResult(
        run_dir=session.out,
        best=dict(session.best),
        steps=session.step,
        total_steps=session.total,
        stopped=session.stop_reason,
    )


def dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def pick_device(requested: str | None, local_rank: int, world: int) -> torch.device:
    import torch

    if requested:
        dev = torch.device(requested)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda requested but CUDA is not available")
    else:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", local_rank)
    elif dev.type == "cuda" and dev.index is None:
        # torch.cuda.set_device refuses a device without an index ("Expected a
        # torch.device with a specified index"): plain "cuda" means the current one
        dev = torch.device("cuda", torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def _apply_split(args: SimpleNamespace, out: Path, rank: int) -> None:
    """A recipe's held-out split, written into ``out/split/``, as the training and validation sets."""
    spec = args.split
    if not spec or args.train or args.resume:
        return
    from ..data import load_samples
    from ..data.split import write_split

    if not spec.get("source") or not spec.get("held_out"):
        raise ValueError("split needs 'source' (a dataset) and 'held_out' (a rule)")
    folder = out / "split"
    if rank == 0:
        samples = load_samples(spec["source"], fmt=spec.get("format", "auto"), lenient=bool(args.lenient))
        write_split(samples, spec["held_out"], folder)
    args.train = [str(folder / "train.txt")]
    if args.val is None:
        args.val = str(folder / "held_out.txt")
    args.format = args.root = None


def train_session(args: SimpleNamespace) -> Session:
    """Run the training that ``args`` (resolved settings) describes; returns the finished session."""
    import torch
    import torch.distributed as dist

    if args.keep_snapshots and not args.save_every:
        raise ValueError("--keep-snapshots keeps the --save-every checkpoints: give --save-every N too")
    rank, world, local_rank = dist_info()
    ckpt, out = open_checkpoint(args)
    saved = ckpt["train_state"]["hparams"] if ckpt else None
    hp = resolve_hparams(args, saved)
    check_recipe(hp)
    _apply_split(args, out, rank)
    data = resolve_data(args, ckpt)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device, local_rank, world)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=3))
    try:
        session = Session(args, hp, ckpt, out, data, device, rank, world)
        session.train()
        return session
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
