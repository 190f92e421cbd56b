"""PyTorch dataset and sampler for DBNet training.

Targets (``labels.make_targets``) are computed in DataLoader workers. Each
sample is augmented with a generator seeded from ``(seed, epoch, index)``, and
the sampler's order from ``(seed, epoch)``, so a run resumed mid-epoch sees
exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import numpy as np
import torch

from ..imageio import load_image
from .transforms import augment, normalize, resize_pad


class DetDataset(torch.utils.data.Dataset):
    """Training samples: augmented, normalised image and DB targets.

    Args:
        samples: list of :class:`~dbdetect.data.readers.Sample`.
        cfg: model config (``mean``, ``std``, ``channel_order``).
        size: square training size (multiple of 32).
        augment: apply the random augmentation pipeline (else only resize+pad).
        shrink_ratio: DB shrink ratio for the targets.
        seed: base seed of the per-sample generators.

    Items are keyed by ``(index, epoch)`` (from :class:`EpochBatchSampler`) or
    a plain index (epoch 0) and are dicts of tensors: ``image`` (3, S, S),
    ``shrink_map``, ``shrink_mask``, ``thresh_map``, ``thresh_mask`` (S, S).
    """

    def __init__(self, samples, cfg: dict, size: int = 640, augment: bool = True,
                 shrink_ratio: float = 0.4, seed: int = 0):
        if size % 32:
            raise ValueError(f"training size must be a multiple of 32, got {size}")
        self.samples = list(samples)
        self.cfg = {k: cfg[k] for k in ("mean", "std", "channel_order")}
        self.size = size
        self.augment = augment
        self.shrink_ratio = shrink_ratio
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        from ..labels import make_targets  # imported here: built by the labels module

        s = self.samples[index]
        img = load_image(s.image_path)
        polys = [p.astype(np.float32) for p in s.polygons]
        ignore = list(s.ignore)
        if self.augment:
            rng = np.random.default_rng([self.seed, epoch, index])
            img, polys, ignore = augment(img, polys, ignore, self.size, rng)
        else:
            img, polys = resize_pad(img, polys, self.size)
        t = make_targets(polys, ignore, img.shape[:2], shrink_ratio=self.shrink_ratio)
        out = {"image": torch.from_numpy(normalize(img, self.cfg))}
        for k in ("shrink_map", "shrink_mask", "thresh_map", "thresh_mask"):
            out[k] = torch.from_numpy(np.ascontiguousarray(t[k], dtype=np.float32))
        return out


class EpochBatchSampler(torch.utils.data.Sampler):
    """Deterministic, shardable, resumable batch sampler.

    Each epoch shuffles with ``(seed, epoch)``, gives rank ``r`` of ``world``
    every ``world``-th index (the tail that does not divide evenly is dropped
    so all ranks take the same number of steps) and drops the last partial
    batch. Yields lists of ``(index, epoch)`` keys.

    Args:
        n: dataset length.
        batch_size: per-rank batch size.
        seed: shuffle seed.
        rank, world: this process's shard.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1):
        if n < world:
            raise ValueError(f"{n} training images cannot be split over {world} processes")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch and skip its first ``start_batch`` batches (resume)."""
        self.epoch, self.start = epoch, start_batch

    def __len__(self) -> int:
        per_rank = self.n // self.world
        return max(per_rank // self.batch_size, 1)

    def __iter__(self):
        perm = np.random.default_rng([self.seed, self.epoch, 7919]).permutation(self.n)
        per_rank = self.n // self.world
        mine = perm[self.rank :: self.world][:per_rank]
        bs = min(self.batch_size, per_rank)  # a tiny set still yields one batch
        for b in range(self.start, len(self)):
            yield [(int(i), self.epoch) for i in mine[b * bs : (b + 1) * bs]]


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
