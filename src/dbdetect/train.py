"""The old import path of ``dbdetect train``'s pieces, now in :mod:`dbdetect.training` and :mod:`dbdetect.cli.train`."""

from .cli.train import add_parser, run
from .training.config import HPARAMS
from .training.fit import pick_device as _pick_device
from .training.loader import make_loader, multiscale_sizes
from .training.losses import make_loss
from .training.optim import apply_bn_mode, lr_lambda_factory, param_groups, set_backbone_frozen
from .training.plots import plot_metrics

__all__ = [
    "HPARAMS",
    "_pick_device",
    "add_parser",
    "apply_bn_mode",
    "lr_lambda_factory",
    "make_loader",
    "make_loss",
    "multiscale_sizes",
    "param_groups",
    "plot_metrics",
    "run",
    "set_backbone_frozen",
]
