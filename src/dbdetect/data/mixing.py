"""Several training sets in one run, each with a sampling weight.

A set's weight is how many times, on average, each of its images is drawn
per epoch: weight 1 takes every image once, 0.5 a different random half each
epoch, 2 every image twice (the second copy augmented differently), 1.5 every
image once plus a random half again. An epoch of sets with lengths ``n_i``
and weights ``w_i`` therefore holds ``round(w_i * n_i)`` draws of set ``i``,
a share ``w_i n_i / sum_j w_j n_j`` of its images. This extends PaddleOCR's
``ratio_list`` (SimpleDataSet: a fixed random fraction <= 1 of each label
file) above 1, and redraws the fraction every epoch.

The draws of an epoch are a function of ``(seed, epoch)`` only, so they are
the same in every DDP process (each then takes its shard) and on resume.

>>> draws, repeats = epoch_draws([3, 2], [1.0, 2.0], seed=0, epoch=0)
>>> sorted(draws.tolist()), sorted(repeats.tolist())
([0, 1, 2, 3, 3, 4, 4], [0, 0, 0, 0, 0, 1, 1])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .readers import FORMATS, load_samples


@dataclass
class TrainSet:
    """One training source.

    Attributes:
        path: a dataset folder or a PaddleOCR label file (made absolute).
        weight: sampling weight (draws per image per epoch, see module doc).
        format: label format, one of :data:`~dbdetect.data.FORMATS`.
        root: image root for PaddleOCR label files.
    """

    path: str
    weight: float = 1.0
    format: str = "auto"
    root: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _per_set(values, n: int, flag: str, default):
    """One value per set: none given -> default, one -> for all, n -> in order."""
    values = list(values or [])
    if not values:
        return [default] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ValueError(
            f"got {len(values)} {flag} values for {n} --train sets: give one (for all) "
            f"or one per --train, in the same order"
        )
    return values


def parse_train_sets(paths, weights=None, formats=None, roots=None) -> list[TrainSet]:
    """Pair ``--train`` paths with their ``--train-weight``, ``--format`` and ``--root``.

    Args:
        paths: the training sources, in order.
        weights: none (all 1), or exactly one per path.
        formats, roots: none, one for every path, or one per path.

    Returns:
        list of :class:`TrainSet` with absolute paths.

    >>> [s.weight for s in parse_train_sets(["a", "b"], [1, 0.5])]
    [1.0, 0.5]
    """
    paths = [str(p) for p in (paths or [])]
    if not paths:
        raise ValueError("--train DIR_OR_LABELS is required")
    weights = list(weights or [])
    if weights and len(weights) != len(paths):
        raise ValueError(
            f"got {len(weights)} --train-weight values for {len(paths)} --train sets: "
            "give one per --train, in the same order"
        )
    weights = weights or [1.0] * len(paths)
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise ValueError(f"--train-weight must be a positive number, got {w!r}")
    formats = _per_set(formats, len(paths), "--format", "auto")
    for f in formats:
        if f not in FORMATS:
            raise ValueError(f"unknown label format {f!r}; choose from {', '.join(FORMATS)}")
    roots = _per_set(roots, len(paths), "--root", None)
    return [
        TrainSet(str(Path(p).resolve()), float(w), f, str(Path(r).resolve()) if r else None)
        for p, w, f, r in zip(paths, weights, formats, roots)
    ]


def load_train_sets(sets: list[TrainSet], lenient: bool = False) -> tuple[list, list[int]]:
    """Read every set; returns all samples (set after set) and each set's length."""
    samples, lengths = [], []
    for s in sets:
        got = load_samples(s.path, fmt=s.format, root=s.root, lenient=lenient)
        if not got:
            raise ValueError(f"no training images in {s.path}")
        if round(s.weight * len(got)) < 1:
            raise ValueError(f"--train-weight {s.weight} draws no image of {s.path} ({len(got)} images) per epoch")
        samples.extend(got)
        lengths.append(len(got))
    return samples, lengths


def epoch_size(lengths, weights) -> int:
    """Number of draws in one epoch: ``sum round(w_i * n_i)``."""
    return int(sum(round(w * n) for n, w in zip(lengths, weights)))


def epoch_draws(lengths, weights, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The epoch's draws in random order: sample indices and their repeat numbers.

    Args:
        lengths: each set's number of images (sets stored one after another).
        weights: each set's sampling weight.
        seed, epoch: the draws are a function of these alone.

    Returns:
        ``(indices, repeats)``, int64 arrays of :func:`epoch_size` entries;
        ``repeats`` is 0 for an image's first draw in the epoch, 1 for its second...
    """
    idx, rep = [], []
    start = 0
    for i, (n, w) in enumerate(zip(lengths, weights)):
        full, part = divmod(int(round(w * n)), n)
        for r in range(full):
            idx.append(np.arange(start, start + n))
            rep.append(np.full(n, r))
        if part:
            pick = np.random.default_rng([seed, epoch, 7919, i + 1]).choice(n, part, replace=False)
            idx.append(start + np.sort(pick))
            rep.append(np.full(part, full))
        start += n
    idx_all = np.concatenate(idx).astype(np.int64)
    rep_all = np.concatenate(rep).astype(np.int64)
    # the same stream as the single-set sampler had, so one set at weight 1 keeps its old order
    perm = np.random.default_rng([seed, epoch, 7919]).permutation(len(idx_all))
    return idx_all[perm], rep_all[perm]


__all__ = ["TrainSet", "parse_train_sets", "load_train_sets", "epoch_size", "epoch_draws"]
