"""Training: fine-tune or train a DBNet detector (``dbdetect train`` and :func:`fit`).

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

Modules, in the order a run uses them: :mod:`.config` (hyper-parameters and data),
:mod:`.checkpoints`, :mod:`.optim`, :mod:`.losses`, :mod:`.ema`, :mod:`.loader`,
:mod:`.session` (the loop), :mod:`.plots`, and :mod:`.fit`, which starts a run.

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

from .config import HPARAMS
from .fit import FitResult, fit
from .loader import make_loader, multiscale_sizes
from .optim import apply_bn_mode, lr_lambda_factory, param_groups, set_backbone_frozen
from .plots import plot_metrics
from .recipe import read_recipe

__all__ = [
    "FitResult",
    "HPARAMS",
    "apply_bn_mode",
    "lr_lambda_factory",
    "make_loader",
    "multiscale_sizes",
    "param_groups",
    "plot_metrics",
    "fit",
    "read_recipe",
    "set_backbone_frozen",
]
