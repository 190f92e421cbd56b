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

Exact resume: batch order is a function of ``(seed, epoch)`` and each
sample's augmentation of ``(seed, epoch, index)``, so a resumed run continues
with the very batches the interrupted run would have drawn.

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

import numpy as np

# Hyper-parameters that decide what is learned. On --resume they come from the
# checkpoint (a different value on the command line is ignored with a warning).
HPARAMS = {
    "model": "ppocrv4", "pretrained": True, "format": "auto", "root": None, "lenient": False,
    "epochs": 10, "batch_size": 8, "lr": 1e-4, "weight_decay": 1e-4, "warmup_steps": None,
    "min_lr_ratio": 0.0, "backbone_lr_scale": 1.0, "freeze_backbone_epochs": 0, "bn": "auto", "size": 640, "prob_loss": "bce", "prob_weight": 1.0, "alpha": 1.0, "beta": 10.0,
    "shrink_ratio": 0.4, "clip_grad": 5.0, "seed": 0, "max_steps": None, "amp": True,
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``dbdetect train``."""
    p = subparsers.add_parser(
        "train", help="train or fine-tune a detector on labelled images",
        description="Train or fine-tune a DBNet text detector. Writes last.pt/best.pt, metrics.jsonl and "
                    "metrics.png into --out. Multi-process: torchrun --nproc-per-node N -m dbdetect train ...",
    )
    d = HPARAMS
    p.add_argument("--train", help="training set: dataset folder (images/ + gts/) or PaddleOCR label file")
    p.add_argument("--val", default=None, help="validation set (H-mean each epoch); optional")
    p.add_argument("--format", default=None, help=f"label format: auto, icdar2015, polygon, totaltext, paddle (default {d['format']})")
    p.add_argument("--root", default=None, help="image root for PaddleOCR label files")
    p.add_argument("--lenient", action="store_true", default=None, help="skip malformed label lines with a warning")
    p.add_argument("--model", default=None, help=f"model name or checkpoint to start from (default {d['model']})")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                   help="start from the bundled weights (default: yes)")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs (default {d['epochs']})")
    p.add_argument("--batch-size", type=int, default=None, help=f"images per step and process (default {d['batch_size']})")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {d['lr']})")
    p.add_argument("--weight-decay", type=float, default=None, help=f"AdamW weight decay (default {d['weight_decay']})")
    p.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (default: 5%% of the run, at most 200)")
    p.add_argument("--min-lr-ratio", type=float, default=None, help="cosine floor as a fraction of --lr (default 0)")
    p.add_argument("--backbone-lr-scale", type=float, default=None,
                   help="backbone learning rate as a fraction of --lr (default 1). The PP-OCR ports have "
                        "no BatchNorm left to absorb large steps, so fine-tuning them wants a small backbone rate")
    p.add_argument("--freeze-backbone-epochs", type=int, default=None,
                   help="keep the backbone (weights and BatchNorm statistics) frozen for the first N epochs (default 0)")
    p.add_argument("--bn", choices=("auto", "train", "frozen"), default=None,
                   help="BatchNorm outside frozen parts: 'train' updates statistics, 'frozen' keeps the pretrained "
                        "ones; 'auto' (default) = frozen when starting from trained weights, else train")
    p.add_argument("--size", type=int, default=None, help=f"square training size, multiple of 32 (default {d['size']})")
    p.add_argument("--prob-loss", choices=("bce", "dice"), default=None,
                   help="probability-map loss: 'bce' (default; balanced BCE with 3:1 hard-negative mining, "
                        "the DBNet paper) or 'dice' (what PaddleOCR trains PP-OCR with)")
    p.add_argument("--prob-weight", type=float, default=None, help="weight of the probability-map loss (default 1)")
    p.add_argument("--alpha", type=float, default=None, help="weight of the binary-map dice loss (default 1)")
    p.add_argument("--beta", type=float, default=None, help="weight of the threshold-map L1 loss (default 10)")
    p.add_argument("--shrink-ratio", type=float, default=None, help="DB shrink ratio (default 0.4)")
    p.add_argument("--clip-grad", type=float, default=None, help="gradient-norm clip, 0 = off (default 5)")
    p.add_argument("--seed", type=int, default=None, help="seed of order and augmentation (default 0)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimiser steps in total (the schedule is sized to it)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision on CUDA (default: yes)")
    # run-time settings: free to change on resume
    p.add_argument("--out", default=None, help="run folder (must be empty unless --resume or --overwrite)")
    p.add_argument("--resume", default=None, help="continue from a last.pt (the run folder defaults to its folder)")
    p.add_argument("--overwrite", action="store_true", help="allow a non-empty --out")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2; 0 = in-process)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--val-limit-side-len", type=int, default=None, help="validation resize limit (default: the model's)")
    p.add_argument("--val-limit-type", choices=("min", "max"), default=None, help="validation resize rule (default: the model's)")
    p.add_argument("--val-box-thresh", type=float, default=None, help="validation box threshold (default: the model's)")
    p.add_argument("--val-limit", type=int, default=None, help="validate on the first N images only")
    p.add_argument("--val-every", type=int, default=1, help="validate every N epochs (and at the end)")
    p.add_argument("--save-every", type=int, default=0, help="also write last.pt every N steps (0 = epoch ends only)")
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
                print(f"warning: --{k.replace('_', '-')} {given} ignored on resume (the run uses {saved[k]})", file=sys.stderr)
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
    st = {"python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                    int(has_gauss), float(cached)],
          "torch": torch.get_rng_state()}
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
        cv2.putText(canvas, f"steps {int(xs.min())} - {int(xs.max())}", (x0 + pad, H - 12),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)

    panel(0, steps, "train loss")
    panel(W, vals, "val H-mean", (0.0, 1.0))
    cv2.imwrite(str(path), canvas)


# ---------------------------------------------------------------- main

def run(args) -> int:
    """``dbdetect train`` (see module doc)."""
    import torch
    import torch.distributed as dist

    rank, world, local_rank = _dist_info()

    # ---- run folder / resume
    ckpt = None
    if args.resume:
        rp = Path(args.resume)
        if rp.is_dir():
            rp = rp / "last.pt"
        if not rp.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {rp}")
        ckpt = torch.load(rp, map_location="cpu", weights_only=False)
        if "train_state" not in ckpt:
            raise ValueError(f"{rp} is not a resumable training checkpoint (no train_state); use it as --model instead")
        out = Path(args.out) if args.out else rp.parent
    else:
        if not args.out:
            raise ValueError("--out RUN_DIR is required")
        out = Path(args.out)
        if out.exists() and any(out.iterdir()) and not args.overwrite:
            raise ValueError(f"run folder {out} is not empty: pass --resume {out / 'last.pt'} to continue, "
                             "--overwrite to reuse it, or choose another --out")
    saved = ckpt["train_state"]["hparams"] if ckpt else None
    hp = _resolve_hparams(args, saved)
    train_src = args.train or (ckpt["train_state"]["train"] if ckpt else None)
    val_src = args.val if args.val is not None else (ckpt["train_state"].get("val") if ckpt else None)
    if not train_src:
        raise ValueError("--train DIR_OR_LABELS is required")
    # absolute, so --resume works from any working directory
    train_src = str(Path(train_src).resolve())
    val_src = str(Path(val_src).resolve()) if val_src else None

    if args.threads:
        torch.set_num_threads(args.threads)
    device = _pick_device(args.device, local_rank, world)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(hours=3))
    try:
        return _train(args, hp, ckpt, out, train_src, val_src, device, rank, world)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(args, hp, ckpt, out, train_src, val_src, device, rank, world):
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from tqdm import tqdm

    from . import models
    from .data import load_samples
    from .data.dataset import DetDataset, EpochBatchSampler, collate, steps_per_epoch, worker_init
    from .evaluate import evaluate_model
    from .losses import DBLoss

    is_main = rank == 0
    torch.manual_seed(hp["seed"])
    random.seed(hp["seed"])
    np.random.seed(hp["seed"])

    train_samples = load_samples(train_src, fmt=hp["format"], root=hp["root"], lenient=hp["lenient"])
    if not train_samples:
        raise ValueError(f"no training images in {train_src}")
    val_samples = None
    if val_src and is_main:
        val_samples = load_samples(val_src, fmt=hp["format"], root=hp["root"], lenient=hp["lenient"])
        if args.val_limit is not None:
            val_samples = val_samples[: args.val_limit]

    model = models.create(hp["model"], pretrained=hp["pretrained"])
    if hp["bn"] == "auto":
        # Batch statistics of small, padded training crops are far from the
        # pretrained running statistics (PP-OCRv4 on ICDAR 2015: balanced BCE
        # 10.6 with batch statistics vs 1.5 with running ones on the same
        # batch), so fine-tuning keeps the pretrained ones.
        from_weights = hp["pretrained"] or Path(str(hp["model"])).suffix in (".pt", ".pth", ".ckpt")
        hp["bn"] = "frozen" if from_weights else "train"
    cfg = dict(model.cfg)
    arch = ckpt["arch"] if ckpt else cfg["arch"]  # registry name; a checkpoint start keeps its own
    if ckpt:
        model.load_state_dict(ckpt["model"])
    model.to(device)

    spe = steps_per_epoch(len(train_samples), hp["batch_size"], world)
    total = hp["epochs"] * spe
    if hp["max_steps"]:
        total = min(total, hp["max_steps"])
    warmup = hp["warmup_steps"] if hp["warmup_steps"] is not None else min(200, max(1, total // 20))
    opt = torch.optim.AdamW(param_groups(model, hp["lr"], hp["backbone_lr_scale"]), lr=hp["lr"],
                            weight_decay=hp["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda_factory(total, warmup, hp["min_lr_ratio"]))
    use_amp = bool(hp["amp"]) and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    loss_fn = DBLoss(alpha=hp["alpha"], beta=hp["beta"], prob_loss=hp["prob_loss"], prob_weight=hp["prob_weight"])

    step, epoch, batch_in_epoch = 0, 0, 0
    best = {"hmean": None, "loss": None, "epoch": None}
    epoch_sums = {}
    if ckpt:
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        ts = ckpt["train_state"]
        step, epoch, batch_in_epoch = ckpt["step"], ckpt["epoch"], ts["batch_in_epoch"]
        best = ckpt["best"]
        epoch_sums = ts.get("epoch_sums", {})
        _set_rng_state(ts["rng"])  # data randomness is per-sample seeded; this covers the rest

    dataset = DetDataset(train_samples, cfg, size=hp["size"], augment=True, shrink_ratio=hp["shrink_ratio"],
                         seed=hp["seed"])
    sampler = EpochBatchSampler(len(dataset), hp["batch_size"], seed=hp["seed"], rank=rank, world=world)
    worker_kw = {}
    if args.workers:
        import multiprocessing as mp

        # Workers forked after validation inherit OpenCV/OpenMP thread pools in a
        # locked state and can hang; start them clean, once, and keep them.
        ctx = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        worker_kw = dict(worker_init_fn=worker_init, persistent_workers=True, multiprocessing_context=ctx)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=args.workers,
                                         collate_fn=collate, pin_memory=device.type == "cuda", **worker_kw,
                                         # own generator: creating an iterator must not consume the global RNG
                                         # (model randomness), or resume would be off by one draw
                                         generator=torch.Generator().manual_seed(hp["seed"]))

    metrics_path = out / "metrics.jsonl"
    records = []
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        if ckpt and metrics_path.is_file():
            # keep only what the checkpoint had seen, so a crash after it leaves no duplicates
            records = [json.loads(ln) for ln in metrics_path.read_text().splitlines() if ln.strip()]
            records = [r for r in records if r.get("step", 0) <= step]
            metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))
        elif not ckpt:
            metrics_path.write_text("")
        (out / "args.json").write_text(json.dumps(
            {"hparams": hp, "train": str(train_src), "val": str(val_src) if val_src else None,
             "world_size": world, "steps_per_epoch": spe, "total_steps": total, "warmup_steps": warmup,
             "argv": sys.argv[1:]}, indent=1))

    def log(rec):
        if is_main:
            records.append(rec)
            with metrics_path.open("a") as f:
                f.write(json.dumps(rec) + "\n")

    def base_model():
        return model.module if isinstance(model, DDP) else model

    def checkpoint(path: Path, with_state: bool = True):
        if not is_main:
            return
        m = base_model()
        ck = {"arch": arch, "model": {k: v.detach().cpu() for k, v in m.state_dict().items()}, "cfg": cfg,
              "epoch": epoch, "step": step, "best": best}
        if with_state:
            ck.update(optimizer=opt.state_dict(), scheduler=sched.state_dict(), scaler=scaler.state_dict(),
                      train_state={"hparams": hp, "train": str(train_src), "val": str(val_src) if val_src else None,
                                   "batch_in_epoch": batch_in_epoch, "epoch_sums": epoch_sums, "rng": _rng_state()})
        _atomic_save(ck, path)

    def validate():
        if val_samples is None:
            return None
        m = base_model()
        was_training = m.training
        m.eval()
        try:
            res = evaluate_model(m, val_samples, args.val_limit_side_len, args.val_limit_type, args.val_box_thresh,
                                 device=device, progress=not args.no_progress)
        finally:
            m.train(was_training)
        return {k: res[k] for k in ("precision", "recall", "hmean")}

    ddp_frozen_state = None
    t_start = time.perf_counter()
    session_steps = 0
    stop_reason = None
    try:
        while step < total and stop_reason is None:
            frozen = epoch < hp["freeze_backbone_epochs"]
            set_backbone_frozen(base_model(), frozen)
            if world > 1 and ddp_frozen_state != frozen:
                # DDP fixes its parameter set at wrap time: re-wrap when freezing changes it
                model = DDP(base_model(), device_ids=[device.index] if device.type == "cuda" else None)
                ddp_frozen_state = frozen
            model.train()
            apply_bn_mode(base_model(), frozen, hp["bn"])
            sampler.set_epoch(epoch, batch_in_epoch)
            n_batches = min(spe - batch_in_epoch, total - step)
            bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{hp['epochs']}", disable=not is_main or args.no_progress,
                       leave=False, dynamic_ncols=True)
            t_log = time.perf_counter()
            steps_since_log = 0
            for batch in loader:
                if step >= total:
                    break
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                    preds = model(batch["image"])
                loss, parts = loss_fn(preds, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at step {step}: lower --lr or check the labels")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if hp["clip_grad"]:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], hp["clip_grad"])
                scaler.step(opt)
                scaler.update()
                sched.step()
                step += 1
                batch_in_epoch += 1
                session_steps += 1
                steps_since_log += 1
                vals = {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}}
                for k, v in vals.items():
                    epoch_sums[k] = epoch_sums.get(k, 0.0) + v
                epoch_sums["n"] = epoch_sums.get("n", 0) + 1
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in vals.items()}, refresh=False)
                if step % args.log_every == 0 or step == total:
                    now = time.perf_counter()
                    log({"type": "train", "epoch": epoch, "step": step, "lr": sched.get_last_lr()[-1], **vals,
                         "sec_per_step": (now - t_log) / steps_since_log})
                    t_log, steps_since_log = now, 0
                if args.save_every and step % args.save_every == 0:
                    checkpoint(out / "last.pt")
                if args.stop_after is not None and session_steps >= args.stop_after:
                    stop_reason = f"--stop-after {args.stop_after}"
                elif args.time_limit is not None and time.perf_counter() - t_start > args.time_limit * 60:
                    stop_reason = f"--time-limit {args.time_limit} min"
                if stop_reason:
                    break
            bar.close()
            epoch_done = batch_in_epoch >= spe or step >= total
            if stop_reason and not epoch_done:
                break
            # ---- end of epoch (or of the run)
            n = max(epoch_sums.get("n", 0), 1)
            rec = {"type": "epoch", "epoch": epoch, "step": step, "lr": sched.get_last_lr()[-1],
                   **{k: v / n for k, v in epoch_sums.items() if k != "n"},
                   "seconds": round(time.perf_counter() - t_start, 1)}
            last_epoch = step >= total
            metrics = None
            if is_main and ((epoch + 1) % args.val_every == 0 or last_epoch):
                metrics = validate()
            if world > 1:
                dist.barrier()
            if metrics is not None:
                rec.update(metrics)
            if is_main:
                improved = False
                if metrics is not None:
                    improved = best["hmean"] is None or metrics["hmean"] > best["hmean"]
                    if improved:
                        best = {"hmean": metrics["hmean"], "loss": rec.get("loss"), "epoch": epoch}
                elif val_samples is None:
                    improved = best["loss"] is None or rec.get("loss", math.inf) < best["loss"]
                    if improved:
                        best = {"hmean": None, "loss": rec.get("loss"), "epoch": epoch}
                log(rec)
                msg = f"epoch {epoch + 1}: loss {rec.get('loss', float('nan')):.4f}"
                if metrics is not None:
                    msg += f"  val P {metrics['precision']:.4f} R {metrics['recall']:.4f} H {metrics['hmean']:.4f}"
                print(msg, file=sys.stderr, flush=True)
            epoch += 1
            batch_in_epoch = 0
            epoch_sums = {}
            if is_main:
                checkpoint(out / "last.pt")
                if improved:
                    checkpoint(out / "best.pt", with_state=False)
                plot_metrics(records, out / "metrics.png")
    except KeyboardInterrupt:
        if is_main:
            checkpoint(out / "last.pt")
            print(f"interrupted: resume with --resume {out / 'last.pt'}", file=sys.stderr)
        raise
    if stop_reason and is_main:
        checkpoint(out / "last.pt")
        plot_metrics(records, out / "metrics.png")
        print(f"stopped by {stop_reason} at step {step}/{total}: resume with --resume {out / 'last.pt'}",
              file=sys.stderr)
    elif is_main:
        if not (out / "best.pt").exists():
            shutil.copyfile(out / "last.pt", out / "best.pt")
        print(f"done: {step} steps; best {best}; checkpoints in {out}", file=sys.stderr)
    return 0
