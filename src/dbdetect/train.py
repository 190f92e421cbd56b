"""``dbdetect train``: fine-tune or train a DBNet detector.

Recipe (the DBNet paper's, as PaddleOCR fine-tunes PP-OCR): augmentation with
colour jitter, flip, +-15 degree rotation and a crop that cuts no text, square
training crops, DB targets with shrink ratio 0.4, loss ``Ls + alpha Lb + beta Lt``
(1 and 10), AdamW with linear warm-up then cosine annealing, the backbone frozen
(weights and BatchNorm statistics) for the first epochs.

The run folder holds ``args.json``, ``metrics.jsonl`` (one JSON object per
log step and per epoch), ``metrics.png`` (loss and H-mean curves),
``last.pt`` (everything needed to resume exactly) and ``best.pt`` (best
validation H-mean; lowest epoch loss without ``--val``). Checkpoints are
dicts ``{"arch", "model", "cfg", ...}`` that ``dbdetect.models.create(path)``
loads.

Several training sets: ``--train A --train B --train-weight 1 --train-weight 0.5``
(one weight per ``--train``, in order; ``--format``/``--root`` once for all or
once per set). A weight is the mean number of draws per image and epoch, so
the example takes all of A and a different random half of B each epoch
(see :mod:`dbdetect.data.mixing`).

Recipe options, all off by default: ``--ema DECAY`` (validation and best.pt
use the moving average of the weights), ``--size S --size-max M`` (each batch
a random multiple of 32 in [S, M]), ``--ohem-ratio`` (negatives per positive
in the balanced BCE), ``--max-angle`` (rotation augmentation). The train lines
of metrics.jsonl carry ``data_wait``, the share of the time spent waiting for
batches.

Exact resume: batch order (and size) is a function of ``(seed, epoch)`` and
each sample's augmentation of ``(seed, epoch, index)``, so a resumed run
continues with the very batches the interrupted run would have drawn.

Multi-process: ``torchrun --nproc-per-node N -m dbdetect train ...`` runs
DistributedDataParallel (NCCL on CUDA, gloo on CPU); ``--batch-size`` is per
process.

Fine-tuning PP-OCRv4 on ICDAR 2015 on a 2-core CPU (50 min; the recipe behind
``ppocrv4_ic15``, see the README for the held-out split)::

    dbdetect train --train ic15_split/train900 --val ic15_split/val100 --val-limit-side-len 960 \\
        --model ppocrv4 --epochs 6 --batch-size 8 --size 640 --lr 2e-4 --backbone-lr-scale 0.1 \\
        --prob-loss dice --prob-weight 5 --threads 2 --workers 1 --out runs/ic15_v4d
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# Hyper-parameters that decide what is learned. On --resume they come from the
# checkpoint (a different value on the command line is ignored with a warning).
# The training sets (paths, weights, formats, roots) are kept with the run the same way.
HPARAMS = {
    "model": "ppocrv4",
    "pretrained": True,
    "lenient": False,
    "epochs": 10,
    "batch_size": 8,
    "lr": 1e-4,
    "weight_decay": 1e-4,
    "warmup_steps": None,
    "min_lr_ratio": 0.0,
    "backbone_lr_scale": 1.0,
    "freeze_backbone_epochs": 0,
    "bn": "auto",
    "size": 640,
    "size_max": None,
    "max_angle": 15.0,
    "prob_loss": "bce",
    "prob_weight": 1.0,
    "alpha": 1.0,
    "beta": 10.0,
    "ohem_ratio": 3.0,
    "shrink_ratio": 0.4,
    "clip_grad": 5.0,
    "seed": 0,
    "max_steps": None,
    "amp": True,
    "ema": None,
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``dbdetect train``."""
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a detector on labelled images",
        description="Train or fine-tune a DBNet text detector. Writes last.pt/best.pt, metrics.jsonl and "
        "metrics.png into --out. Multi-process: torchrun --nproc-per-node N -m dbdetect train ...",
    )
    d = HPARAMS
    p.add_argument(
        "--train",
        action="append",
        default=None,
        help="training set: dataset folder (images/ + gts/) or PaddleOCR label file; repeat for several",
    )
    p.add_argument(
        "--train-weight",
        type=float,
        action="append",
        default=None,
        help="sampling weight of each --train, one per --train in the same order: the mean number of "
        "draws per image and epoch (default 1; 0.5 = a random half each epoch, 2 = twice)",
    )
    p.add_argument("--val", default=None, help="validation set (H-mean each epoch); optional")
    p.add_argument(
        "--format",
        action="append",
        default=None,
        help="label format: auto, icdar2015, polygon, totaltext, paddle (default auto); "
        "once for every set or once per --train",
    )
    p.add_argument(
        "--root",
        action="append",
        default=None,
        help="image root for PaddleOCR label files; once for every set or once per --train",
    )
    p.add_argument("--val-format", default=None, help="label format of --val (default: a single --format, else auto)")
    p.add_argument("--val-root", default=None, help="image root of a --val label file (default: a single --root)")
    p.add_argument("--lenient", action="store_true", default=None, help="skip malformed label lines with a warning")
    p.add_argument("--model", default=None, help=f"model name or checkpoint to start from (default {d['model']})")
    p.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start from the bundled weights (default: yes)",
    )
    p.add_argument("--epochs", type=int, default=None, help=f"epochs (default {d['epochs']})")
    p.add_argument(
        "--batch-size", type=int, default=None, help=f"images per step and process (default {d['batch_size']})"
    )
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {d['lr']})")
    p.add_argument("--weight-decay", type=float, default=None, help=f"AdamW weight decay (default {d['weight_decay']})")
    p.add_argument(
        "--warmup-steps", type=int, default=None, help="linear warm-up steps (default: 5%% of the run, at most 200)"
    )
    p.add_argument("--min-lr-ratio", type=float, default=None, help="cosine floor as a fraction of --lr (default 0)")
    p.add_argument(
        "--backbone-lr-scale",
        type=float,
        default=None,
        help="backbone learning rate as a fraction of --lr (default 1). The PP-OCR ports have "
        "no BatchNorm left to absorb large steps, so fine-tuning them wants a small backbone rate",
    )
    p.add_argument(
        "--freeze-backbone-epochs",
        type=int,
        default=None,
        help="keep the backbone (weights and BatchNorm statistics) frozen for the first N epochs (default 0)",
    )
    p.add_argument(
        "--bn",
        choices=("auto", "train", "frozen"),
        default=None,
        help="BatchNorm outside frozen parts: 'train' updates statistics, 'frozen' keeps the pretrained "
        "ones; 'auto' (default) = frozen when starting from trained weights, else train",
    )
    p.add_argument("--size", type=int, default=None, help=f"square training size, multiple of 32 (default {d['size']})")
    p.add_argument(
        "--size-max",
        type=int,
        default=None,
        help="multi-scale training: each batch takes a random size, a multiple of 32 in [--size, --size-max]",
    )
    p.add_argument(
        "--max-angle",
        type=float,
        default=None,
        help=f"largest random rotation of the augmentation, degrees (default {d['max_angle']:g})",
    )
    p.add_argument(
        "--prob-loss",
        choices=("bce", "dice"),
        default=None,
        help="probability-map loss: 'bce' (default; balanced BCE with 3:1 hard-negative mining, "
        "the DBNet paper) or 'dice' (what PaddleOCR trains PP-OCR with)",
    )
    p.add_argument("--prob-weight", type=float, default=None, help="weight of the probability-map loss (default 1)")
    p.add_argument(
        "--ohem-ratio",
        type=float,
        default=None,
        help=f"negatives kept per positive by the balanced BCE's hard-negative mining "
        f"(default {d['ohem_ratio']:g}; --prob-loss bce only)",
    )
    p.add_argument(
        "--ema",
        type=float,
        default=None,
        metavar="DECAY",
        help="keep an exponential moving average of the weights (e.g. 0.999); validation and best.pt "
        "use it, last.pt keeps both (default: off)",
    )
    p.add_argument("--alpha", type=float, default=None, help="weight of the binary-map dice loss (default 1)")
    p.add_argument("--beta", type=float, default=None, help="weight of the threshold-map L1 loss (default 10)")
    p.add_argument("--shrink-ratio", type=float, default=None, help="DB shrink ratio (default 0.4)")
    p.add_argument("--clip-grad", type=float, default=None, help="gradient-norm clip, 0 = off (default 5)")
    p.add_argument("--seed", type=int, default=None, help="seed of order and augmentation (default 0)")
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop after N optimiser steps in total (the schedule is sized to it)",
    )
    p.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision on CUDA (default: yes)"
    )
    # run-time settings: free to change on resume
    p.add_argument("--out", default=None, help="run folder (must be empty unless --resume or --overwrite)")
    p.add_argument("--resume", default=None, help="continue from a last.pt (the run folder defaults to its folder)")
    p.add_argument("--overwrite", action="store_true", help="allow a non-empty --out")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2; 0 = in-process)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument(
        "--val-limit-side-len", type=int, default=None, help="validation resize limit (default: the model's)"
    )
    p.add_argument(
        "--val-limit-type", choices=("min", "max"), default=None, help="validation resize rule (default: the model's)"
    )
    p.add_argument("--val-box-thresh", type=float, default=None, help="validation box threshold (default: the model's)")
    p.add_argument("--val-limit", type=int, default=None, help="validate on the first N images only")
    p.add_argument("--val-every", type=int, default=1, help="validate every N epochs (and at the end)")
    p.add_argument("--save-every", type=int, default=0, help="also write last.pt every N steps (0 = epoch ends only)")
    p.add_argument(
        "--keep-snapshots",
        action="store_true",
        help="with --save-every, also keep each of those checkpoints' deployed weights (the EMA's "
        "with --ema) as step_N.pt, to choose among them on held-out images",
    )
    p.add_argument("--log-every", type=int, default=10, help="write a train line to metrics.jsonl every N steps")
    p.add_argument("--time-limit", type=float, default=None, help="stop (resumably) after this many minutes")
    p.add_argument("--stop-after", type=int, default=None, help="stop (resumably) after N steps in this session")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


# ---------------------------------------------------------------- helpers


def _resolve_hparams(args, saved: dict | None) -> dict:
    hp = {}
    for k, default in HPARAMS.items():
        given = getattr(args, k, None)
        if saved is not None and k in saved:
            if given is not None and given != saved[k]:
                print(
                    f"warning: --{k.replace('_', '-')} {given} ignored on resume (the run uses {saved[k]})",
                    file=sys.stderr,
                )
            hp[k] = saved[k]
        else:
            hp[k] = given if given is not None else default
    return hp


def _dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def _pick_device(requested, local_rank: int, world: int):
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


def lr_lambda_factory(total_steps: int, warmup_steps: int, min_ratio: float = 0.0):
    """LR multiplier: linear warm-up to 1, then cosine down to ``min_ratio`` at ``total_steps``."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))

    return f


def param_groups(model, lr: float, backbone_lr_scale: float = 1.0) -> list:
    """Optimizer groups: the backbone at ``lr * backbone_lr_scale``, the neck and head at ``lr``."""
    if not backbone_lr_scale > 0:
        raise ValueError(f"--backbone-lr-scale must be > 0, got {backbone_lr_scale}")
    backbone = list(model.backbone.parameters())
    ids = {id(p) for p in backbone}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": backbone, "lr": lr * backbone_lr_scale}, {"params": rest, "lr": lr}]


def set_backbone_frozen(model, frozen: bool) -> None:
    """Freeze/unfreeze the backbone's weights (BatchNorm handled by :func:`apply_bn_mode`)."""
    for p in model.backbone.parameters():
        p.requires_grad_(not frozen)


def apply_bn_mode(model, backbone_frozen: bool, bn: str) -> None:
    """After ``model.train()``: put frozen parts' BatchNorm (or all, ``bn="frozen"``) in eval mode.

    A frozen backbone must not drift its running statistics either, or the
    pretrained features change under the head without any gradient.
    """
    from torch import nn

    if backbone_frozen:
        model.backbone.eval()
    if bn == "frozen":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _rng_state():
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


def _set_rng_state(st):
    import torch

    random.setstate(st["python"])
    kind, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _atomic_save(obj, path: Path) -> None:
    import torch

    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def plot_metrics(records: list, path: Path) -> None:
    """Draw train loss (per log step) and validation H-mean (per epoch) into a PNG.

    Uses matplotlib when installed, else OpenCV (no extra dependency).
    """
    steps = [(r["step"], r["loss"]) for r in records if r.get("type") == "train"]
    vals = [(r["step"], r["hmean"]) for r in records if r.get("type") == "epoch" and r.get("hmean") is not None]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        if steps:
            ax[0].plot(*zip(*steps))
        ax[0].set(title="train loss", xlabel="step")
        if vals:
            ax[1].plot(*zip(*vals), marker="o")
        ax[1].set(title="val H-mean", xlabel="step", ylim=(0, 1))
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return
    except ImportError:
        pass
    import cv2

    W, H, pad = 480, 320, 40
    canvas = np.full((H, 2 * W, 3), 255, np.uint8)

    def panel(x0, pts, title, ylim=None):
        cv2.rectangle(canvas, (x0 + pad, pad), (x0 + W - 10, H - pad), (0, 0, 0), 1)
        cv2.putText(canvas, title, (x0 + pad, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        if not pts:
            return
        xs = np.array([p[0] for p in pts], float)
        ys = np.array([p[1] for p in pts], float)
        lo, hi = ylim if ylim else (float(ys.min()), float(ys.max()))
        hi = hi if hi > lo else lo + 1e-6
        xr = max(xs.max() - xs.min(), 1.0)
        px = x0 + pad + (xs - xs.min()) / xr * (W - 10 - pad - x0 + x0)
        py = (H - pad) - (ys - lo) / (hi - lo) * (H - 2 * pad)
        pts_i = np.stack([px, py], 1).round().astype(np.int32)
        cv2.polylines(canvas, [pts_i.reshape(-1, 1, 2)], False, (200, 80, 0), 2, cv2.LINE_AA)
        for q in pts_i:
            cv2.circle(canvas, tuple(int(v) for v in q), 2, (200, 80, 0), -1)
        for v, yy in ((hi, pad), (lo, H - pad)):
            cv2.putText(canvas, f"{v:.3g}", (x0 + 2, int(yy) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
        cv2.putText(
            canvas,
            f"steps {int(xs.min())} - {int(xs.max())}",
            (x0 + pad, H - 12),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (0, 0, 0),
            1,
        )

    panel(0, steps, "train loss")
    panel(W, vals, "val H-mean", (0.0, 1.0))
    cv2.imwrite(str(path), canvas)


# ---------------------------------------------------------------- main


def run(args) -> int:
    """``dbdetect train`` (see module doc)."""
    import torch
    import torch.distributed as dist

    if args.keep_snapshots and not args.save_every:
        raise ValueError("--keep-snapshots keeps the --save-every checkpoints: give --save-every N too")
    rank, world, local_rank = _dist_info()
    ckpt, out = _open_checkpoint(args)
    saved = ckpt["train_state"]["hparams"] if ckpt else None
    hp = _resolve_hparams(args, saved)
    _check_recipe(hp)
    data = _resolve_data(args, ckpt)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = _pick_device(args.device, local_rank, world)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=3))
    try:
        return _Session(args, hp, ckpt, out, data, device, rank, world).train()
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _open_checkpoint(args):
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


# Validation options a resumed run keeps unless they are given again.
_VAL_SETTINGS = ("val_limit_side_len", "val_limit_type", "val_box_thresh")


def _resolve_data(args, ckpt) -> dict:
    """Training sets and validation set, from the command line or the checkpoint being resumed."""
    from .data.mixing import TrainSet, parse_train_sets

    ts = ckpt["train_state"] if ckpt else {}
    saved_hp = ts.get("hparams", {})
    if not args.train and (args.train_weight or args.format or args.root):
        raise ValueError(
            "--train-weight, --format and --root describe --train sets: give the --train sets too "
            "(on --resume, all of them, in order)"
        )
    if args.train:
        sets = parse_train_sets(args.train, args.train_weight, args.format, args.root)
        if "train_sets" in ts and [s.to_dict() for s in sets] != ts["train_sets"]:
            print("warning: the training sets differ from the resumed run's", file=sys.stderr)
    elif "train_sets" in ts:
        sets = [TrainSet(**d) for d in ts["train_sets"]]
    elif ts:  # a checkpoint from before multi-set training: one set, format and root in its hparams
        sets = [TrainSet(str(Path(ts["train"]).resolve()), 1.0, saved_hp.get("format", "auto"), saved_hp.get("root"))]
    else:
        raise ValueError("--train DIR_OR_LABELS is required")
    val = args.val if args.val is not None else ts.get("val")

    def one(values):  # a single --format/--root also applies to --val
        return values[0] if values and len(values) == 1 else None

    val_format = args.val_format or one(args.format) or ts.get("val_format") or saved_hp.get("format") or "auto"
    val_root = args.val_root or one(args.root) or ts.get("val_root", saved_hp.get("root"))
    # Validation settings stay those of the run unless given again, so that every
    # epoch's H-mean (and the best.pt choice) is measured the same way.
    val_settings = {k: getattr(args, k) if getattr(args, k) is not None else ts.get(k) for k in _VAL_SETTINGS}
    # absolute, so --resume works from any working directory
    return {
        "train_sets": sets,
        "val": str(Path(val).resolve()) if val else None,
        "val_format": val_format,
        "val_root": str(Path(val_root).resolve()) if val_root else None,
        **val_settings,
    }


def _check_recipe(hp: dict) -> None:
    if hp["ema"] is not None and not 0.0 < hp["ema"] < 1.0:
        raise ValueError(f"--ema decay must be in (0, 1), e.g. 0.999; got {hp['ema']}")
    if hp["size"] % 32 or hp["size"] < 32:
        raise ValueError(f"--size must be a multiple of 32, got {hp['size']}")
    if hp["size_max"] is not None and (hp["size_max"] % 32 or hp["size_max"] < hp["size"]):
        raise ValueError(f"--size-max must be a multiple of 32 and >= --size {hp['size']}, got {hp['size_max']}")
    if not hp["ohem_ratio"] > 0:
        raise ValueError(f"--ohem-ratio must be > 0, got {hp['ohem_ratio']}")
    if not 0 <= hp["max_angle"] <= 180:
        raise ValueError(f"--max-angle must be in [0, 180] degrees, got {hp['max_angle']}")


def multiscale_sizes(size: int, size_max: int | None) -> list[int] | None:
    """Training sizes of ``--size S --size-max M``: the multiples of 32 in [S, M] (None without M).

    >>> multiscale_sizes(640, 736)
    [640, 672, 704, 736]
    """
    if size_max is None:
        return None
    return list(range(size, size_max + 1, 32))


def make_loader(dataset, sampler, workers: int, device, seed: int):
    """The training DataLoader: ``sampler``'s batches of ``dataset`` on ``workers`` processes (0 = in-process)."""
    import torch

    from .data.dataset import collate, worker_init

    worker_kw: dict[str, Any] = {}
    if workers:
        import multiprocessing as mp

        # Workers forked after validation inherit OpenCV/OpenMP thread pools in a
        # locked state and can hang; start them clean, once, and keep them.
        ctx = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        worker_kw = dict(worker_init_fn=worker_init, persistent_workers=True, multiprocessing_context=ctx)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.device(device).type == "cuda",
        **worker_kw,
        # own generator: creating an iterator must not consume the global RNG
        # (model randomness), or resume would be off by one draw
        generator=torch.Generator().manual_seed(seed),
    )


def make_loss(hp: dict):
    """The :class:`~dbdetect.losses.DBLoss` of a run's hyper-parameters."""
    from .losses import DBLoss

    return DBLoss(
        alpha=hp["alpha"],
        beta=hp["beta"],
        negative_ratio=hp["ohem_ratio"],
        prob_loss=hp["prob_loss"],
        prob_weight=hp["prob_weight"],
    )


class _Session:
    """One training session, in the order it runs.

    Set-up: ``__init__`` (data, model, optimiser, resume state, loader, run
    folder). Training: :meth:`train` runs epochs; :meth:`_run_epoch` iterates
    the batches of one, :meth:`_step` is one optimiser step. End of an epoch:
    :meth:`_end_epoch` (validation in :meth:`_validate`, best-model choice,
    logging). Checkpoints: :meth:`_checkpoint`.
    """

    def __init__(self, args, hp, ckpt, out: Path, data: dict, device, rank: int, world: int):
        import torch

        self.args, self.hp, self.out, self.data, self.device = args, hp, out, data, device
        self.rank, self.world, self.is_main = rank, world, rank == 0
        torch.manual_seed(hp["seed"])
        random.seed(hp["seed"])
        np.random.seed(hp["seed"])
        self._load_data()
        self._build_model(ckpt)
        self._build_optimizer()
        self._restore(ckpt)
        self._build_loader()
        self._open_run_folder(ckpt)

    # ---- set-up
    def _load_data(self):
        from .data import load_samples
        from .data.mixing import load_train_sets

        self.train_samples, self.set_lengths = load_train_sets(self.data["train_sets"], self.hp["lenient"])
        self.val_samples = None
        if self.data["val"] and self.is_main:
            self.val_samples = load_samples(
                self.data["val"], fmt=self.data["val_format"], root=self.data["val_root"], lenient=self.hp["lenient"]
            )
            if self.args.val_limit is not None:
                self.val_samples = self.val_samples[: self.args.val_limit]

    def _build_model(self, ckpt):
        from . import models

        hp = self.hp
        # A resumed checkpoint carries its own architecture, weights and cfg: the run
        # must go on where the starting model's file no longer exists.
        model = models.from_checkpoint(ckpt) if ckpt else models.create(hp["model"], pretrained=hp["pretrained"])
        if hp["bn"] == "auto":
            # Batch statistics of small, padded training crops are far from the
            # pretrained running statistics (PP-OCRv4 on ICDAR 2015: balanced BCE
            # 10.6 with batch statistics vs 1.5 with running ones on the same
            # batch), so fine-tuning keeps the pretrained ones.
            from_weights = hp["pretrained"] or Path(str(hp["model"])).suffix in (".pt", ".pth", ".ckpt")
            hp["bn"] = "frozen" if from_weights else "train"
        self.cfg = dict(model.cfg)
        self.arch = ckpt["arch"] if ckpt else self.cfg["arch"]  # registry name; a checkpoint start keeps its own
        self.model = model.to(self.device)
        if self.device.type == "cpu":
            from .memory import keep_freed_memory

            keep_freed_memory()

    def _build_optimizer(self):
        import torch

        from .data.dataset import steps_per_epoch
        from .data.mixing import epoch_size
        from .ema import EMA

        hp = self.hp
        n = epoch_size(self.set_lengths, [s.weight for s in self.data["train_sets"]])
        self.spe = steps_per_epoch(n, hp["batch_size"], self.world)
        self.total = hp["epochs"] * self.spe
        if hp["max_steps"]:
            self.total = min(self.total, hp["max_steps"])
        self.warmup = hp["warmup_steps"] if hp["warmup_steps"] is not None else min(200, max(1, self.total // 20))
        self.opt = torch.optim.AdamW(
            param_groups(self.model, hp["lr"], hp["backbone_lr_scale"]), lr=hp["lr"], weight_decay=hp["weight_decay"]
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lr_lambda_factory(self.total, self.warmup, hp["min_lr_ratio"])
        )
        self.use_amp = bool(hp["amp"]) and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.loss_fn = make_loss(hp)
        # only the main process validates and saves, so only it keeps the average
        self.ema = EMA(self.model, hp["ema"]) if hp["ema"] and self.is_main else None

    def _restore(self, ckpt):
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best = {"hmean": None, "loss": None, "epoch": None}
        self.epoch_sums = {}
        if not ckpt:
            return
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and "ema" in ckpt:
            self.ema.load_state_dict(ckpt["ema"])
        ts = ckpt["train_state"]
        self.step, self.epoch, self.batch_in_epoch = ckpt["step"], ckpt["epoch"], ts["batch_in_epoch"]
        self.best = ckpt["best"]
        self.epoch_sums = ts.get("epoch_sums", {})
        _set_rng_state(ts["rng"])  # data randomness is per-sample seeded; this covers the rest

    def _build_loader(self):
        from .data.dataset import DetDataset, EpochBatchSampler

        hp = self.hp
        dataset = DetDataset(
            self.train_samples,
            self.cfg,
            size=hp["size"],
            augment=True,
            shrink_ratio=hp["shrink_ratio"],
            seed=hp["seed"],
            max_angle=hp["max_angle"],
        )
        self.sampler = EpochBatchSampler(
            self.set_lengths,
            hp["batch_size"],
            seed=hp["seed"],
            rank=self.rank,
            world=self.world,
            weights=[s.weight for s in self.data["train_sets"]],
            sizes=multiscale_sizes(hp["size"], hp["size_max"]),
        )
        self.loader = make_loader(dataset, self.sampler, self.args.workers, self.device, hp["seed"])

    def _open_run_folder(self, ckpt):
        self.metrics_path = self.out / "metrics.jsonl"
        self.records = []
        if not self.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if ckpt and self.metrics_path.is_file():
            # keep only what the checkpoint had seen, so a crash after it leaves no duplicates
            records = [json.loads(ln) for ln in self.metrics_path.read_text().splitlines() if ln.strip()]
            self.records = [r for r in records if r.get("step", 0) <= self.step]
            self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in self.records))
        elif not ckpt:
            self.metrics_path.write_text("")
        (self.out / "args.json").write_text(
            json.dumps(
                {
                    "hparams": self.hp,
                    **self._data_state(),
                    "world_size": self.world,
                    "steps_per_epoch": self.spe,
                    "total_steps": self.total,
                    "warmup_steps": self.warmup,
                    "argv": sys.argv[1:],
                },
                indent=1,
            )
        )

    def _data_state(self) -> dict:
        sets = self.data["train_sets"]
        return {
            "train": sets[0].path,
            "train_sets": [s.to_dict() for s in sets],
            "val": self.data["val"],
            "val_format": self.data["val_format"],
            "val_root": self.data["val_root"],
            **{k: self.data[k] for k in _VAL_SETTINGS},
        }

    # ---- small shared pieces
    def base_model(self):
        from torch.nn.parallel import DistributedDataParallel as DDP

        return self.model.module if isinstance(self.model, DDP) else self.model

    def _log(self, rec: dict):
        if self.is_main:
            self.records.append(rec)
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(rec) + "\n")

    # ---- training
    def train(self) -> int:
        """Run epochs until the schedule ends or a stop condition; returns the exit code."""
        self.t_start = time.perf_counter()
        self.session_steps = 0
        self.stop_reason = None
        self.ddp_frozen_state = None
        try:
            while self.step < self.total and self.stop_reason is None:
                self._start_epoch()
                self._run_epoch()
                epoch_done = self.batch_in_epoch >= self.spe or self.step >= self.total
                if self.stop_reason and not epoch_done:
                    break
                self._end_epoch()
        except KeyboardInterrupt:
            if self.is_main:
                self._checkpoint(self.out / "last.pt")
                print(f"interrupted: resume with --resume {self.out / 'last.pt'}", file=sys.stderr)
            raise
        self._finish()
        return 0

    def _start_epoch(self):
        from torch.nn.parallel import DistributedDataParallel as DDP

        frozen = self.epoch < self.hp["freeze_backbone_epochs"]
        set_backbone_frozen(self.base_model(), frozen)
        if self.world > 1 and self.ddp_frozen_state != frozen:
            # DDP fixes its parameter set at wrap time: re-wrap when freezing changes it
            dev = self.device
            self.model = DDP(self.base_model(), device_ids=[dev.index] if dev.type == "cuda" else None)
            self.ddp_frozen_state = frozen
        self.model.train()
        apply_bn_mode(self.base_model(), frozen, self.hp["bn"])
        self.sampler.set_epoch(self.epoch, self.batch_in_epoch)

    def _run_epoch(self):
        """The batches of one epoch (from ``batch_in_epoch`` on), with logging and stop checks."""
        from tqdm import tqdm

        args = self.args
        n_batches = min(self.spe - self.batch_in_epoch, self.total - self.step)
        bar = tqdm(
            total=n_batches,
            desc=f"epoch {self.epoch + 1}/{self.hp['epochs']}",
            leave=False,
            disable=not self.is_main or args.no_progress,
            dynamic_ncols=True,
        )
        t_log = time.perf_counter()
        steps_since_log, waited = 0, 0.0
        batches = iter(self.loader)
        while True:
            t_wait = time.perf_counter()
            batch = next(batches, None)
            if batch is None or self.step >= self.total:
                break
            waited += time.perf_counter() - t_wait
            vals = self._step(batch)
            self.session_steps += 1
            steps_since_log += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in vals.items()}, refresh=False)
            if self.step % args.log_every == 0 or self.step == self.total:
                now = time.perf_counter()
                self._log(
                    {
                        "type": "train",
                        "epoch": self.epoch,
                        "step": self.step,
                        "lr": self.sched.get_last_lr()[-1],
                        **vals,
                        "sec_per_step": (now - t_log) / steps_since_log,
                        "data_wait": round(waited / max(now - t_log, 1e-9), 4),
                    }
                )
                t_log, steps_since_log, waited = now, 0, 0.0
            if args.save_every and self.step % args.save_every == 0:
                self._checkpoint(self.out / "last.pt")
                if args.keep_snapshots:
                    self._checkpoint(self.out / f"step_{self.step}.pt", resumable=False)
            if args.stop_after is not None and self.session_steps >= args.stop_after:
                self.stop_reason = f"--stop-after {args.stop_after}"
            elif args.time_limit is not None and time.perf_counter() - self.t_start > args.time_limit * 60:
                self.stop_reason = f"--time-limit {args.time_limit} min"
            if self.stop_reason:
                break
        bar.close()

    def _step(self, batch: dict) -> dict:
        """One optimiser step; returns the loss and its parts as floats."""
        import torch

        hp = self.hp
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            preds = self.model(batch["image"])
        loss, parts = self.loss_fn(preds, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.step}: lower --lr or check the labels")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if hp["clip_grad"]:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], hp["clip_grad"])
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        if self.ema is not None:
            self.ema.update(self.base_model())
        self.step += 1
        self.batch_in_epoch += 1
        vals = {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}}
        for k, v in vals.items():
            self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v
        self.epoch_sums["n"] = self.epoch_sums.get("n", 0) + 1
        return vals

    # ---- end of an epoch
    def _validate(self):
        """Validation H-mean of the deployed weights (the EMA's with ``--ema``), or None without --val."""
        from .evaluation.protocol import evaluate_model

        if self.val_samples is None:
            return None
        m = self.ema.module if self.ema is not None else self.base_model()
        was_training = m.training
        m.eval()
        args = self.args
        try:
            d = self.data
            res = evaluate_model(
                m,
                self.val_samples,
                d["val_limit_side_len"],
                d["val_limit_type"],
                d["val_box_thresh"],
                device=self.device,
                progress=not args.no_progress,
            )
        finally:
            m.train(was_training)
        return {k: res[k] for k in ("precision", "recall", "hmean")}

    def _end_epoch(self):
        """Epoch record, validation, best-model choice, checkpoints; then the next epoch."""
        import torch.distributed as dist

        n = max(self.epoch_sums.get("n", 0), 1)
        rec = {
            "type": "epoch",
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.sched.get_last_lr()[-1],
            **{k: v / n for k, v in self.epoch_sums.items() if k != "n"},
            "seconds": round(time.perf_counter() - self.t_start, 1),
        }
        last_epoch = self.step >= self.total
        metrics = None
        if self.is_main and ((self.epoch + 1) % self.args.val_every == 0 or last_epoch):
            metrics = self._validate()
        if self.world > 1:
            dist.barrier()
        if metrics is not None:
            rec.update(metrics)
        improved = False
        if self.is_main:
            improved = self._update_best(rec, metrics)
            self._log(rec)
            msg = f"epoch {self.epoch + 1}: loss {rec.get('loss', float('nan')):.4f}"
            if metrics is not None:
                msg += f"  val P {metrics['precision']:.4f} R {metrics['recall']:.4f} H {metrics['hmean']:.4f}"
            print(msg, file=sys.stderr, flush=True)
        self.epoch += 1
        self.batch_in_epoch = 0
        self.epoch_sums = {}
        if self.is_main:
            self._checkpoint(self.out / "last.pt")
            if improved:
                self._checkpoint(self.out / "best.pt", resumable=False)
            plot_metrics(self.records, self.out / "metrics.png")

    def _update_best(self, rec: dict, metrics) -> bool:
        """Best validation H-mean, or lowest epoch loss without --val; True when this epoch is the new best."""
        if metrics is not None:
            if self.best["hmean"] is None or metrics["hmean"] > self.best["hmean"]:
                self.best = {"hmean": metrics["hmean"], "loss": rec.get("loss"), "epoch": self.epoch}
                return True
        elif self.val_samples is None:
            if self.best["loss"] is None or rec.get("loss", math.inf) < self.best["loss"]:
                self.best = {"hmean": None, "loss": rec.get("loss"), "epoch": self.epoch}
                return True
        return False

    def _finish(self):
        if not self.is_main:
            return
        last = self.out / "last.pt"
        if self.stop_reason:
            self._checkpoint(last)
            plot_metrics(self.records, self.out / "metrics.png")
            print(
                f"stopped by {self.stop_reason} at step {self.step}/{self.total}: resume with --resume {last}",
                file=sys.stderr,
            )
            return
        if not (self.out / "best.pt").exists():
            if self.ema is not None:
                self._checkpoint(self.out / "best.pt", resumable=False)
            else:
                shutil.copyfile(last, self.out / "best.pt")
        print(f"done: {self.step} steps; best {self.best}; checkpoints in {self.out}", file=sys.stderr)

    # ---- checkpoints
    def _checkpoint(self, path: Path, resumable: bool = True):
        """Write ``path`` atomically (main process only).

        A resumable checkpoint (last.pt) holds the trained weights and all
        training state, the EMA's included; a non-resumable one (best.pt)
        holds the deployed weights: the EMA's with ``--ema``.
        """
        if not self.is_main:
            return
        m = self.ema.module if self.ema is not None and not resumable else self.base_model()
        ck = {
            "arch": self.arch,
            "model": {k: v.detach().cpu() for k, v in m.state_dict().items()},
            "cfg": self.cfg,
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
        }
        if resumable:
            ck.update(
                optimizer=self.opt.state_dict(),
                scheduler=self.sched.state_dict(),
                scaler=self.scaler.state_dict(),
                train_state={
                    "hparams": self.hp,
                    **self._data_state(),
                    "batch_in_epoch": self.batch_in_epoch,
                    "epoch_sums": self.epoch_sums,
                    "rng": _rng_state(),
                },
            )
            if self.ema is not None:
                ck["ema"] = self.ema.state_dict()
        _atomic_save(ck, path)
