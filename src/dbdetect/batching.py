"""Which prepared inputs share a forward pass, and each one's probability map.

Inputs of one network shape are stacked as they are. On a runtime that can pad
without changing results (the torch network on a GPU: see
:mod:`dbdetect.models.padding`), inputs of different shapes are also grouped
into buckets: sorted by shape, each bucket takes inputs while the padded
canvas stays within ``1 + max_padding`` of the pixels it holds, so a mixed
collection runs full batches and pays at most that much extra compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["MAX_PADDING", "plan_batches", "forward_group", "forward_all", "runtime_pads"]

# extra canvas a padded bucket may carry, as a fraction of the pixels in it
MAX_PADDING = 0.25


def plan_batches(
    shapes: Sequence[tuple[int, int]], batch_size: int, pad: bool = False, max_padding: float = MAX_PADDING
) -> list[list[int]]:
    """Indices into ``shapes`` (each input's height, width), one list per forward pass.

    Without ``pad`` a pass holds inputs of one shape only, in input order. With
    ``pad`` a pass may hold different shapes whose common canvas (largest
    height x largest width) is at most ``1 + max_padding`` times their summed
    area.

    >>> plan_batches([(64, 96), (64, 64), (64, 96)], 8)
    [[0, 2], [1]]
    >>> plan_batches([(64, 96), (64, 64), (64, 96)], 8, pad=True)
    [[1, 0, 2]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_padding < 0:
        raise ValueError(f"max_padding must be >= 0, got {max_padding}")
    if not pad:
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(shapes):
            by_shape.setdefault((int(s[0]), int(s[1])), []).append(i)
        return [g[k : k + batch_size] for g in by_shape.values() for k in range(0, len(g), batch_size)]
    order = sorted(range(len(shapes)), key=lambda i: (shapes[i][0], shapes[i][1]))
    batches: list[list[int]] = []
    group: list[int] = []
    for i in order:
        if group and (len(group) >= batch_size or not _fits([shapes[j] for j in group] + [shapes[i]], max_padding)):
            batches.append(group)
            group = []
        group.append(i)
    if group:
        batches.append(group)
    return batches


def _fits(shapes: list[tuple[int, int]], max_padding: float) -> bool:
    canvas = max(h for h, _ in shapes) * max(w for _, w in shapes) * len(shapes)
    return canvas <= (1.0 + max_padding) * sum(h * w for h, w in shapes)


def forward_group(det: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each (3, h, w) input's (h, w) probability map from one forward pass (one entry of :func:`plan_batches`).

    ``det`` is a :class:`dbdetect.Detector`; inputs of different shapes need a
    runtime that pads (its ``pads`` attribute).
    """
    if len(inputs) == 1:  # a view: np.stack would copy the input (0.5 ms at side 960)
        return [det._forward(inputs[0][None])[0]]
    if all(x.shape == inputs[0].shape for x in inputs):
        return list(det._forward(np.stack(inputs)))
    return [det._checked(p) for p in det.runtime.run_padded(list(inputs))]


def forward_all(det: Any, inputs: Sequence[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Each input's probability map, in input order, in passes of at most ``batch_size``.

    ``det``'s runtime's ``pads`` says whether inputs of different shapes may share a pass.
    """
    probs: list[Any] = [None] * len(inputs)
    for group in plan_batches([x.shape[-2:] for x in inputs], batch_size, runtime_pads(det)):
        for i, p in zip(group, forward_group(det, [inputs[i] for i in group])):
            probs[i] = p
    return probs


def runtime_pads(det: Any) -> bool:
    """Whether ``det``'s runtime runs inputs of different shapes in one padded pass."""
    return bool(getattr(det.runtime, "pads", False))
