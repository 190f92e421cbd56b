"""Streaming detection: worker threads prepare images while the model runs.

A folder of 100,000 images must not be decoded into memory first, and the
model should not wait for JPEG decoding. :func:`prefetch` runs a function over
an iterable in a small thread pool, at most ``depth`` items ahead of the
consumer; :func:`detect_stream` uses it to decode, resize and normalise images
(OpenCV releases the GIL for all three) while the network runs on the previous
batch. Memory is bounded by the window of prepared inputs, never by the length
of the input.

``streams=2`` runs two forward passes at once, each in its own thread (torch
and onnxruntime release the GIL). On a small CPU two single-thread passes get
more done than one two-thread pass: on this project's 2-core machines, over
the 500 ICDAR 2015 test images, 1.22x the images per second
(``bench/throughput.py``, bound-2s against bound). A thread
count does not change the network's output (checked bit for bit), so the
results are those of the single-image call either way.

>>> from dbdetect import Detector
>>> from dbdetect.pipeline import detect_stream
>>> for r in detect_stream(Detector(), ["a.jpg", "b.jpg"]):   # doctest: +SKIP
...     print(r.index, r.error or len(r.detections))
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .memory import single_malloc_arena

__all__ = ["Result", "prefetch", "detect_stream", "single_malloc_arena"]


@dataclass
class Result:
    """What :func:`detect_stream` yields for one input, in input order.

    ``shape`` is the decoded image's (height, width); on failure ``error``
    holds the exception and ``shape``/``detections`` are ``None``.
    """

    index: int
    source: Any
    shape: tuple[int, int] | None = None
    detections: list | None = None
    error: BaseException | None = None


def _guarded(fn: Callable, item):
    try:
        return fn(item), None
    except Exception as exc:  # handed to the consumer, who decides to skip or raise
        return None, exc


def prefetch(
    items: Iterable, fn: Callable, workers: int = 1, depth: int = 4
) -> Iterator[tuple[Any, Any, Exception | None]]:
    """Yield ``(item, fn(item), None)`` or ``(item, None, exception)`` in input order.

    ``items`` is consumed lazily in the caller's thread; ``fn`` runs in
    ``workers`` threads with at most ``depth`` calls started and not yet
    yielded. ``workers=0`` calls ``fn`` inline.

    Args:
        items: any iterable (a generator of paths is fine).
        fn: the function to apply; its exceptions are returned, not raised.
        workers: pool size; 0 runs in the caller's thread.
        depth: how many results may wait ahead of the consumer (>= 1).

    Returns:
        An iterator of ``(item, value, error)`` triples.

    >>> [v for _, v, _ in prefetch(range(3), lambda x: x * x, workers=2)]
    [0, 1, 4]
    """
    if workers < 0 or depth < 1:
        raise ValueError(f"workers must be >= 0 and depth >= 1, got workers={workers}, depth={depth}")
    if workers == 0:
        for item in items:
            yield (item, *_guarded(fn, item))
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="dbdetect-prefetch")
    pending: deque = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(_guarded, fn, item)))
            if len(pending) >= depth:
                item0, fut = pending.popleft()
                yield (item0, *fut.result())
        while pending:
            item0, fut = pending.popleft()
            yield (item0, *fut.result())
    finally:
        # A consumer that stops early (break, error) must not leave decodes running.
        pool.shutdown(wait=True, cancel_futures=True)


def detect_stream(
    det: Any,
    images: Iterable,
    batch_size: int = 1,
    workers: int = 1,
    channel_order: str | None = None,
    streams: int = 1,
) -> Iterator[Result]:
    """Detect text in a stream of images; one :class:`Result` per input, in order.

    Prepared inputs are grouped by network shape inside a window of
    ``4 * batch_size`` images (no padding, so each result equals the
    single-image call). At most ``streams + 1`` windows plus ``2 * workers +
    streams`` prepared images are held at once. A bad image gives a ``Result``
    with ``error`` set and the stream goes on.

    Args:
        det: a :class:`dbdetect.Detector`.
        images: an iterable of anything ``Detector`` accepts (paths, bytes, arrays, PIL).
        batch_size: images per forward pass (>= 1).
        workers: threads that decode and pre-process; 0 does it inline.
        channel_order: as in :meth:`Detector.__call__`.
        streams: forward passes run at once, each in its own thread (>= 1).
            Give each its share of the cores: ``Detector(num_threads=cores // streams)``.

    Returns:
        An iterator of :class:`Result`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if streams < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")

    def prepare(indexed):
        img = det._load(indexed[1], channel_order)
        return img.shape[:2], det._prepare(img)

    def run(window):
        return list(_run_window(det, window, batch_size))

    prepared = prefetch(enumerate(images), prepare, workers, depth=2 * workers + streams)
    windows = _windows(prepared, 4 * batch_size if batch_size > 1 else 1)
    for _, results, err in prefetch(windows, run, streams if streams > 1 else 0, depth=streams):
        if err is not None:
            raise err  # a model failure (NaN output), not a bad image: stop as the single call would
        yield from results


def _windows(prepared: Iterator, size: int) -> Iterator[list]:
    """Group prefetched ``(item, value, error)`` triples into lists of ``size`` entries.

    An entry is a failed :class:`Result`, or a ``(Result, network input)`` pair.
    """
    window: list = []
    for (i, src), value, err in prepared:
        window.append(Result(i, src, error=err) if err else (Result(i, src, shape=value[0]), value[1]))
        if len(window) >= size:
            yield window
            window = []
    if window:
        yield window


def _run_window(det, window: list, batch_size: int) -> Iterator[Result]:
    by_shape: dict[tuple, list] = {}
    for entry in window:
        if isinstance(entry, tuple):
            by_shape.setdefault(entry[1].shape, []).append(entry)
    for group in by_shape.values():
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            probs = det._forward(np.stack([x for _, x in chunk]))
            for (res, _), prob in zip(chunk, probs):
                res.detections = det._boxes(prob, res.shape)
    for entry in window:
        yield entry[0] if isinstance(entry, tuple) else entry
