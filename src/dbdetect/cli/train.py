"""``dbdetect train``: the parser; the run itself is :func:`dbdetect.training.fit.run`."""

from __future__ import annotations

import argparse

from ..training.config import HPARAMS
from ..training.fit import fit


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``dbdetect train``."""
    p = subparsers.add_parser(
        "train",
        # a flag left out is absent, so that a --config file's value is kept
        argument_default=argparse.SUPPRESS,
        help="train or fine-tune a detector on labelled images",
        description="Train or fine-tune a DBNet text detector. Writes last.pt/best.pt, metrics.jsonl and "
        "metrics.png into --out. Multi-process: torchrun --nproc-per-node N -m dbdetect train ...",
    )
    d = HPARAMS
    p.add_argument(
        "--config",
        metavar="FILE",
        help="recipe file (YAML) of these settings, dashes or underscores (e.g. recipes/ppocrv4_ic15.yaml); "
        "flags given here override it",
    )
    p.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder that the relative data paths of a --config file are read from (default: the working directory)",
    )
    p.add_argument(
        "--train",
        action="append",
        help="training set: dataset folder (images/ + gts/) or PaddleOCR label file; repeat for several",
    )
    p.add_argument(
        "--train-weight",
        type=float,
        action="append",
        help="sampling weight of each --train, one per --train in the same order: the mean number of "
        "draws per image and epoch (default 1; 0.5 = a random half each epoch, 2 = twice)",
    )
    p.add_argument("--val", help="validation set (H-mean each epoch); optional")
    p.add_argument(
        "--format",
        action="append",
        help="label format: auto, icdar2015, polygon, totaltext, paddle, funsd (default auto); "
        "once for every set or once per --train",
    )
    p.add_argument(
        "--root",
        action="append",
        help="image root for PaddleOCR label files; once for every set or once per --train",
    )
    p.add_argument("--val-format", help="label format of --val (default: a single --format, else auto)")
    p.add_argument("--val-root", help="image root of a --val label file (default: a single --root)")
    p.add_argument("--lenient", action="store_true", help="skip malformed label lines with a warning")
    p.add_argument("--model", help=f"model name or checkpoint to start from (default {d['model']})")
    p.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        help="start from the bundled weights (default: yes)",
    )
    p.add_argument("--epochs", type=int, help=f"epochs (default {d['epochs']})")
    p.add_argument("--batch-size", type=int, help=f"images per step and process (default {d['batch_size']})")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {d['lr']})")
    p.add_argument("--weight-decay", type=float, help=f"AdamW weight decay (default {d['weight_decay']})")
    p.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default: 5%% of the run, at most 200)")
    p.add_argument("--min-lr-ratio", type=float, help="cosine floor as a fraction of --lr (default 0)")
    p.add_argument(
        "--backbone-lr-scale",
        type=float,
        help="backbone learning rate as a fraction of --lr (default 1). The PP-OCR ports have "
        "no BatchNorm left to absorb large steps, so fine-tuning them wants a small backbone rate",
    )
    p.add_argument(
        "--freeze-backbone-epochs",
        type=int,
        help="keep the backbone (weights and BatchNorm statistics) frozen for the first N epochs (default 0)",
    )
    p.add_argument(
        "--bn",
        choices=("auto", "train", "frozen"),
        help="BatchNorm outside frozen parts: 'train' updates statistics, 'frozen' keeps the pretrained "
        "ones; 'auto' (default) = frozen when starting from trained weights, else train",
    )
    p.add_argument("--size", type=int, help=f"square training size, multiple of 32 (default {d['size']})")
    p.add_argument(
        "--size-max",
        type=int,
        help="multi-scale training: each batch takes a random size, a multiple of 32 in [--size, --size-max]",
    )
    p.add_argument(
        "--max-angle",
        type=float,
        help=f"largest random rotation of the augmentation, degrees (default {d['max_angle']:g})",
    )
    p.add_argument(
        "--scan-prob",
        type=float,
        help="chance per sample of scanner artefacts (blur, noise, JPEG) for documents (default 0)",
    )
    p.add_argument(
        "--prob-loss",
        choices=("bce", "dice"),
        help="probability-map loss: 'bce' (default; balanced BCE with 3:1 hard-negative mining, "
        "the DBNet paper) or 'dice' (what PaddleOCR trains PP-OCR with)",
    )
    p.add_argument("--prob-weight", type=float, help="weight of the probability-map loss (default 1)")
    p.add_argument(
        "--ohem-ratio",
        type=float,
        help=f"negatives kept per positive by the balanced BCE's hard-negative mining "
        f"(default {d['ohem_ratio']:g}; --prob-loss bce only)",
    )
    p.add_argument(
        "--ema",
        type=float,
        metavar="DECAY",
        help="keep an exponential moving average of the weights (e.g. 0.999); validation and best.pt "
        "use it, last.pt keeps both (default: off)",
    )
    q = p.add_argument_group("quantisation-aware training")
    q.add_argument(
        "--qat",
        action="store_true",
        help="fine-tune --model with torch int8's fake quantisation, starting from post-training "
        "calibrated ranges; writes RUN/best_int8.torchscript (a CPU int8 model Detector runs)",
    )
    q.add_argument(
        "--qat-calibration",
        type=int,
        metavar="N",
        help=f"training images, evenly spread, that set the activation ranges (default {d['qat_calibration']})",
    )
    q.add_argument(
        "--qat-freeze",
        type=float,
        metavar="FRACTION",
        help=f"last fraction of the steps with every int8 range fixed (default {d['qat_freeze']:g})",
    )
    p.add_argument("--alpha", type=float, help="weight of the binary-map dice loss (default 1)")
    p.add_argument("--beta", type=float, help="weight of the threshold-map L1 loss (default 10)")
    p.add_argument("--shrink-ratio", type=float, help="DB shrink ratio (default 0.4)")
    p.add_argument("--clip-grad", type=float, help="gradient-norm clip, 0 = off (default 5)")
    p.add_argument("--seed", type=int, help="seed of order and augmentation (default 0)")
    p.add_argument(
        "--max-steps",
        type=int,
        help="stop after N optimiser steps in total (the schedule is sized to it)",
    )
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, help="mixed precision on CUDA (default: yes)")
    # run-time settings: free to change on resume
    p.add_argument("--out", help="run folder (must be empty unless --resume or --overwrite)")
    p.add_argument("--resume", help="continue from a last.pt (the run folder defaults to its folder)")
    p.add_argument("--overwrite", action="store_true", help="allow a non-empty --out")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default 2; 0 = in-process)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--val-limit-side-len", type=int, help="validation resize limit (default: the model's)")
    p.add_argument("--val-limit-type", choices=("min", "max"), help="validation resize rule (default: the model's)")
    p.add_argument("--val-box-thresh", type=float, help="validation box threshold (default: the model's)")
    p.add_argument("--val-limit", type=int, help="validate on the first N images only")
    p.add_argument("--val-every", type=int, help="validate every N epochs (and at the end)")
    p.add_argument("--save-every", type=int, help="also write last.pt every N steps (0 = epoch ends only)")
    p.add_argument(
        "--keep-snapshots",
        action="store_true",
        help="with --save-every, also keep each of those checkpoints' deployed weights (the EMA's "
        "with --ema) as step_N.pt, to choose among them on held-out images",
    )
    p.add_argument("--log-every", type=int, help="write a train line to metrics.jsonl every N steps")
    p.add_argument("--time-limit", type=float, help="stop (resumably) after this many minutes")
    p.add_argument("--stop-after", type=int, help="stop (resumably) after N steps in this session")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """``dbdetect train``: the flags given, over the ``--config`` file, to :func:`dbdetect.training.fit`."""
    given = {k: v for k, v in vars(args).items() if k not in ("func", "command", "config")}
    fit(getattr(args, "config", None), **given)
    return 0
