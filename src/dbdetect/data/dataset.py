"""PyTorch dataset and sampler for DBNet training.

Targets (``labels.make_targets``) are computed in DataLoader workers. Each
sample is augmented with a generator seeded from ``(seed, epoch, index)``
(plus the repeat number when a set's weight draws an image twice), and the
sampler's order and batch sizes from ``(seed, epoch)``, so a run resumed
mid-epoch sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import numpy as np
import torch

from ..imageio import load_image
from .mixing import epoch_draws, epoch_size
from .transforms import augment, normalize, resize_pad


class DetDataset(torch.utils.data.Dataset):
    """Training samples: augmented, normalised image and DB targets.

    Args:
        samples: list of :class:`~dbdetect.data.readers.Sample`.
        cfg: model config (``mean``, ``std``, ``channel_order``).
        size: square training size (multiple of 32) when the key names none.
        augment: apply the random augmentation pipeline (else only resize+pad).
        shrink_ratio: DB shrink ratio for the targets.
        seed: base seed of the per-sample generators.
        max_angle: largest rotation of the augmentation, degrees.
        scan_prob: chance of scanner artefacts (see :func:`~dbdetect.data.transforms.scan_artefacts`).

    Items are keyed by ``(index, epoch, repeat, size)`` (from
    :class:`EpochBatchSampler`; ``size`` None = the dataset's), ``(index,
    epoch)`` or a plain index (epoch 0) and are dicts of tensors: ``image``
    (3, S, S), ``shrink_map``, ``shrink_mask``, ``thresh_map``, ``thresh_mask`` (S, S).
    """

    def __init__(
        self,
        samples,
        cfg: dict,
        size: int = 640,
        augment: bool = True,
        shrink_ratio: float = 0.4,
        seed: int = 0,
        max_angle: float = 15.0,
        scan_prob: float = 0.0,
    ):
        if size % 32:
            raise ValueError(f"training size must be a multiple of 32, got {size}")
        self.samples = list(samples)
        self.cfg = {k: cfg[k] for k in ("mean", "std", "channel_order")}
        self.size = size
        self.augment = augment
        self.shrink_ratio = shrink_ratio
        self.seed = seed
        self.max_angle = max_angle
        self.scan_prob = scan_prob

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        key = tuple(key) if isinstance(key, (tuple, list)) else (key,)
        index, epoch, repeat, size = key + (0, 0, 0, None)[len(key) :]  # missing fields take their defaults
        size = size or self.size
        from ..labels import make_targets  # imported here: built by the labels module

        s = self.samples[index]
        img = load_image(s.image_path)
        polys = [p.astype(np.float32) for p in s.polygons]
        ignore = list(s.ignore)
        if self.augment:
            # a first draw keeps the seed it always had (exact resume of older runs)
            rng = np.random.default_rng([self.seed, epoch, index] + ([repeat] if repeat else []))
            img, polys, ignore = augment(
                img, polys, ignore, size, rng, max_angle=self.max_angle, scan_prob=self.scan_prob
            )
        else:
            img, polys = resize_pad(img, polys, size)
        t = make_targets(polys, ignore, img.shape[:2], shrink_ratio=self.shrink_ratio)
        out = {"image": torch.from_numpy(normalize(img, self.cfg))}
        for k in ("shrink_map", "shrink_mask", "thresh_map", "thresh_mask"):
            out[k] = torch.from_numpy(np.ascontiguousarray(t[k], dtype=np.float32))
        return out


class EpochBatchSampler(torch.utils.data.Sampler):
    """Deterministic, shardable, resumable batch sampler.

    Each epoch draws with ``(seed, epoch)`` (every image once, or per-set
    weights, see :mod:`dbdetect.data.mixing`), gives rank ``r`` of ``world``
    every ``world``-th draw (the tail that does not divide evenly is dropped
    so all ranks take the same number of steps) and drops the last partial
    batch. Yields lists of ``(index, epoch, repeat, size)`` keys; a batch's
    ``size`` is one of ``sizes`` drawn from ``(seed, epoch, batch)``, the same
    in every rank, or None (the dataset's) without ``sizes``.

    Args:
        n: dataset length, or the length of each training set (stored one
            after another in the dataset).
        batch_size: per-rank batch size.
        seed: shuffle seed.
        rank, world: this process's shard.
        weights: per-set sampling weights (default 1 each).
        sizes: training sizes to draw from per batch (multi-scale), or None.
    """

    def __init__(self, n, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1, weights=None, sizes=None):
        self.lengths = [int(v) for v in n] if isinstance(n, (list, tuple)) else [int(n)]
        self.weights = [float(w) for w in weights] if weights is not None else [1.0] * len(self.lengths)
        if len(self.weights) != len(self.lengths):
            raise ValueError(f"{len(self.weights)} weights for {len(self.lengths)} training sets")
        if sizes is not None and any(int(v) % 32 or v < 32 for v in sizes):
            raise ValueError(f"training sizes must be multiples of 32, got {list(sizes)}")
        self.sizes = [int(v) for v in sizes] if sizes else None
        self.n = epoch_size(self.lengths, self.weights)
        if self.n < world:
            raise ValueError(f"{self.n} training images cannot be split over {world} processes")
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch and skip its first ``start_batch`` batches (resume)."""
        self.epoch, self.start = epoch, start_batch

    def __len__(self) -> int:
        per_rank = self.n // self.world
        return max(per_rank // self.batch_size, 1)

    def crop_size(self, b: int):
        """The training size of the epoch's batch ``b`` (None: the dataset's)."""
        if not self.sizes:
            return None
        return self.sizes[int(np.random.default_rng([self.seed, self.epoch, 104729, b]).integers(len(self.sizes)))]

    def __iter__(self):
        idx, rep = epoch_draws(self.lengths, self.weights, self.seed, self.epoch)
        per_rank = self.n // self.world
        idx, rep = idx[self.rank :: self.world][:per_rank], rep[self.rank :: self.world][:per_rank]
        bs = min(self.batch_size, per_rank)  # a tiny set still yields one batch
        for b in range(self.start, len(self)):
            size = self.crop_size(b)
            part = slice(b * bs, (b + 1) * bs)
            yield [(int(i), self.epoch, int(r), size) for i, r in zip(idx[part], rep[part])]


def steps_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    """Number of optimiser steps in one epoch (matches :class:`EpochBatchSampler`)."""
    return max((n // world) // batch_size, 1)


def collate(items: list) -> dict:
    """Stack a list of dataset items into a batch dict."""
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def worker_init(worker_id: int) -> None:
    # Each worker renders whole images; OpenCV's own thread pool per worker would oversubscribe the CPU.
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # pragma: no cover - cv2 is a hard dependency
        pass


__all__ = ["DetDataset", "EpochBatchSampler", "steps_per_epoch", "collate", "worker_init"]
