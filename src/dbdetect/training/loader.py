"""The training DataLoader and its multi-scale sizes."""

from __future__ import annotations

from typing import Any


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

    from ..data.dataset import collate, worker_init

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
