"""A run's settings: the hyper-parameters that decide what is learned, and the data it learns from.

On ``--resume`` both come from the checkpoint, so a resumed run learns what the interrupted one would have.
"""

from __future__ import annotations

import sys
from pathlib import Path

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
    "scan_prob": 0.0,
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
    "qat": False,
    "qat_calibration": 50,
    "qat_freeze": 0.25,
}


def resolve_hparams(args, saved: dict | None) -> dict:
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


# Validation options a resumed run keeps unless they are given again.
VAL_SETTINGS = ("val_limit_side_len", "val_limit_type", "val_box_thresh")


def resolve_data(args, ckpt) -> dict:
    """Training sets and validation set, from the command line or the checkpoint being resumed."""
    from ..data.mixing import TrainSet, parse_train_sets

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
    val_settings = {k: getattr(args, k) if getattr(args, k) is not None else ts.get(k) for k in VAL_SETTINGS}
    # absolute, so --resume works from any working directory
    return {
        "train_sets": sets,
        "val": str(Path(val).resolve()) if val else None,
        "val_format": val_format,
        "val_root": str(Path(val_root).resolve()) if val_root else None,
        **val_settings,
    }


def check_recipe(hp: dict) -> None:
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
    if not 0 <= hp.get("qat_freeze", 0.0) <= 1:
        raise ValueError(f"--qat-freeze must be a fraction of the run in [0, 1], got {hp['qat_freeze']}")
    if hp.get("qat") and int(hp.get("qat_calibration", 1)) < 1:
        raise ValueError(f"--qat-calibration must be >= 1 image, got {hp['qat_calibration']}")
    if not 0 <= hp.get("scan_prob", 0.0) <= 1:
        raise ValueError(f"--scan-prob must be in [0, 1], got {hp['scan_prob']}")
