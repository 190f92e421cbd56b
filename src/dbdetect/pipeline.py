"""Streaming detection: worker threads prepare images while the model runs.

A folder of 100,000 images must not be decoded into memory first, and the
model should not wait for JPEG decoding. :func:`prefetch` runs a function over
an iterable in a small thread pool, at most ``depth`` items ahead of the
consumer; :func:`detect_stream` uses it to decode, resize and normalise images
(OpenCV releases the GIL for all three) while the network runs on the previous
batch. Memory is bounded by the window of prepared inputs, never by the length
of the input.

``streams=2`` runs two forward passes at once, each in its own thread (torch
and onnxruntime release the GIL) with half the threads. Whether that, or
decoding in a worker thread, pays for itself depends on the CPU: on one
2-core machine two single-thread passes got 1.22x the images per second of
one two-thread pass, on another 2-core machine they lost 11% to it, and the
decoding thread lost 2% to a plain loop. So by default
(``streams="auto"``, ``workers=None``) a torch model on the CPU measures
instead of guessing: the first images of the stream run in turns under each
candidate plan (1 or 2 streams, decoding inline or in a worker thread), and
the plan that did the most network pixels per second runs the rest
(:func:`choose_plan`). A thread count does not change the network's output
(checked bit for bit), so the results are those of the single-image call
whichever plan runs.

>>> from dbdetect import Detector
>>> from dbdetect.pipeline import detect_stream
>>> for r in detect_stream(Detector(), ["a.jpg", "b.jpg"]):   # doctest: +SKIP
...     print(r.index, r.error or len(r.detections))
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from . import plan_cache
from .batching import forward_all
from .memory import single_malloc_arena

__all__ = ["Plan", "Result", "prefetch", "detect_stream", "candidate_plans", "choose_plan", "single_malloc_arena"]

log = logging.getLogger("dbdetect.pipeline")
AUTO = "auto"
# images per turn of a candidate plan; one untimed image goes first (the model's warm-up)
PROBE_IMAGES = 3
# a plan below this fraction of the leader's rate after its first pass takes no more probe images
CUTOFF = 0.8
# a plan ahead of the first by more than MARGIN but less than 1 / CLOSE takes a second turn with it
CLOSE = 0.9
# how much faster in the probe another plan must be to replace the first (the loop's plan)
MARGIN = 0.05


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


@dataclass(frozen=True)
class Plan:
    """How a stream runs: forward passes at once, decoding threads, torch threads per pass.

    ``threads`` None leaves torch's thread setting as it is (onnxruntime, GPUs).
    """

    streams: int
    workers: int
    threads: int | None = None


@dataclass
class _Probe:
    """Seconds and network-input pixels each candidate plan spent in the probe."""

    seconds: dict = field(default_factory=dict)
    pixels: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)

    def add(self, plan: Plan, seconds: float, pixels: int, images: int = 1) -> None:
        self.seconds[plan] = self.seconds.get(plan, 0.0) + seconds
        self.pixels[plan] = self.pixels.get(plan, 0) + pixels
        self.images[plan] = self.images.get(plan, 0) + images

    def rate(self, plan: Plan) -> float:
        return self.pixels.get(plan, 0) / max(self.seconds.get(plan, 0.0), 1e-9)


def _torch_on_cpu(det: Any) -> bool:
    return getattr(det, "backend", None) == "torch" and str(getattr(det, "device", "cpu")).startswith("cpu")


def candidate_plans(det: Any, workers: int | None = None, streams: int | str = AUTO) -> list[Plan]:
    """The plans :func:`detect_stream` chooses from; one plan when nothing is left to choose.

    ``streams="auto"`` tries 1 and 2 streams for a torch model on a CPU with
    2 or more threads (1 elsewhere); ``workers=None`` tries decoding inline
    and in one worker thread on a CPU (1 worker elsewhere: a GPU waits for
    the host). A torch CPU plan of ``s`` streams gives each ``threads // s``
    of torch's threads.
    """
    if streams != AUTO and (not isinstance(streams, int) or isinstance(streams, bool) or streams < 1):
        raise ValueError(f"streams must be an integer >= 1 or 'auto', got {streams!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers must be an integer >= 0 or None (choose), got {workers!r}")
    cpu = _torch_on_cpu(det)
    total = _torch_threads() if cpu else 1
    if streams == AUTO:
        stream_options = [1, 2] if cpu and total >= 2 else [1]
    else:
        stream_options = [int(streams)]
    worker_options = [workers] if workers is not None else ([0, 1] if cpu else [1])
    return [Plan(s, w, max(1, total // s) if cpu else None) for s in stream_options for w in worker_options]


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def detect_stream(
    det: Any,
    images: Iterable,
    batch_size: int = 1,
    workers: int | None = None,
    channel_order: str | None = None,
    streams: int | str = AUTO,
) -> Iterator[Result]:
    """Detect text in a stream of images; one :class:`Result` per input, in order.

    Prepared inputs are grouped into passes inside a window of
    ``4 * batch_size`` images (:func:`dbdetect.batching.plan_batches`: by
    network shape, on a GPU into padded buckets; each result equals the
    single-image call either way). At most ``streams + 1`` windows plus ``2 * workers +
    streams`` prepared images are held at once. A bad image gives a ``Result``
    with ``error`` set and the stream goes on.

    Args:
        det: a :class:`dbdetect.Detector`.
        images: an iterable of anything ``Detector`` accepts (paths, bytes, arrays, PIL).
        batch_size: images per forward pass (>= 1).
        workers: threads that decode and pre-process; 0 does it inline;
            ``None`` (default) chooses by measurement on a CPU (see :func:`choose_plan`), 1 elsewhere.
        channel_order: as in :meth:`Detector.__call__`.
        streams: forward passes run at once, each in its own thread (>= 1),
            each with its share of torch's CPU threads; ``"auto"`` (default)
            chooses 1 or 2 by measurement for a torch model on a CPU.

    Returns:
        An iterator of :class:`Result`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    plans = candidate_plans(det, workers, streams)
    indexed = enumerate(images)
    threads_before = _torch_threads() if _torch_on_cpu(det) else None
    try:
        best = plans[0]
        if len(plans) > 1:
            key = plan_cache.plan_key(det, batch_size, threads_before or 1, plans)
            remembered = plan_cache.recall(key, plans)
            best = remembered or (yield from _probe(det, indexed, plans, batch_size, channel_order, key))
        yield from _run(det, indexed, best, batch_size, channel_order)
    finally:
        if threads_before is not None:
            _set_torch_threads(threads_before)


def _probe(
    det: Any, indexed: Iterator, plans: list[Plan], batch_size: int, channel_order: str | None, key: str
) -> Generator[Result, None, Plan]:
    """Run the first images under the candidate plans in turns, yield their results, return the fastest plan.

    The stream count is chosen first (decoding as ``plans[0]`` does), then the
    decoding threads for that count, so a plan that loses on streams never
    takes a turn with a worker too. A plan more than ``1 / CUTOFF`` slower than
    the best so far after its first pass per stream takes no more images. A
    plan that beat ``plans[0]`` (the loop's own plan) by more than ``MARGIN``
    but by less than ``1 / CLOSE`` takes a second turn with ``plans[0]`` (in
    reverse order, so that a drift in the machine's load hits both alike)
    before it replaces it: on a CPU where the plans tie, every image run under
    a losing plan is lost to the choice. A probe that ran to its end is kept
    for the next stream (:mod:`dbdetect.plan_cache`).
    """
    probe = _Probe()
    yield from _run(det, itertools.islice(indexed, 1), plans[0], batch_size, channel_order)  # warm-up
    warm = {plans[0].threads}
    by_streams = [p for p in plans if p.workers == plans[0].workers]
    for plan in by_streams:
        yield from _turn(det, indexed, plan, batch_size, channel_order, probe, warm)
    streams = max(by_streams, key=probe.rate).streams
    for plan in plans:
        if plan.streams == streams and plan not in probe.seconds:
            yield from _turn(det, indexed, plan, batch_size, channel_order, probe, warm)
    leader = max(probe.seconds, key=probe.rate)
    first = probe.rate(plans[0])
    if leader != plans[0] and (1.0 + MARGIN) * first <= probe.rate(leader) < first / CLOSE:
        for plan in (leader, plans[0]):
            n = _turn_size(plan, batch_size)
            yield from _run(det, itertools.islice(indexed, n), plan, batch_size, channel_order, probe)
    best = choose_plan(plans, probe)
    if all(probe.images[p] >= p.streams * batch_size for p in probe.seconds):
        plan_cache.remember(key, best, {_name(p): round(probe.rate(p) / 1e6, 3) for p in probe.seconds})
    return best


def _name(plan: Plan) -> str:
    return f"{plan.streams}s/{plan.workers}w"


def _turn(
    det: Any, indexed: Iterator, plan: Plan, batch_size: int, channel_order: str | None, probe: _Probe, warm: set
) -> Iterator[Result]:
    """One turn of ``plan`` in the probe: a pass per stream, then the rest of the turn unless it is far behind.

    At a torch thread count not run before, a pass per stream goes first, untimed:
    oneDNN builds its kernels per thread count, and that first pass took 2.7x a
    warm one (two streams of one thread on a 2-core EPYC), enough to rule out a
    plan that wins once warm. A turn is a whole number of passes per stream, so
    no stream idles while another finishes the turn.
    """
    one_pass = plan.streams * batch_size
    if plan.threads not in warm:
        warm.add(plan.threads)
        yield from _run(det, itertools.islice(indexed, one_pass), plan, batch_size, channel_order)
    lead = max((probe.rate(p) for p in probe.seconds), default=0.0)
    yield from _run(det, itertools.islice(indexed, one_pass), plan, batch_size, channel_order, probe)
    rest = _turn_size(plan, batch_size) - one_pass
    if probe.rate(plan) >= CUTOFF * lead and rest > 0:
        yield from _run(det, itertools.islice(indexed, rest), plan, batch_size, channel_order, probe)


def _turn_size(plan: Plan, batch_size: int) -> int:
    """Images in a turn: at least PROBE_IMAGES, in whole passes of every stream."""
    one_pass = plan.streams * batch_size
    return one_pass * -(-PROBE_IMAGES // one_pass)


def choose_plan(plans: list[Plan], probe: _Probe, finalists: list[Plan] | None = None) -> Plan:
    """The plan (of ``finalists``, default all) with the most network-input pixels per second in the probe.

    ``plans[0]`` (one stream, the loop's own plan when it decodes inline) stays
    unless another plan beat it by ``MARGIN``: plans that tie within the
    probe's noise gain nothing by switching, and a switch on noise alone costs
    a few percent half the time.
    """
    best = max(finalists or plans, key=probe.rate)
    if plans[0] in probe.seconds and probe.rate(best) < (1.0 + MARGIN) * probe.rate(plans[0]):
        best = plans[0]
    log.info(
        "stream plan: %d stream(s) x %s torch thread(s), %d decoding worker(s); probe (Mpx/s): %s",
        best.streams,
        best.threads,
        best.workers,
        ", ".join(f"{_name(p)} {probe.rate(p) / 1e6:.2f}" for p in plans if p in probe.seconds),
    )
    return best


def _set_torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(int(n))


def _run(
    det: Any, indexed: Iterator, plan: Plan, batch_size: int, channel_order: str | None, probe: _Probe | None = None
) -> Iterator[Result]:
    """Run ``(index, image)`` pairs under one plan; with ``probe``, add the time and pixels it took."""
    if plan.threads is not None:
        _set_torch_threads(plan.threads)  # before the stream threads start: a new thread takes the setting
    pixels = [0, 0]  # network-input pixels, images

    def prepare(item):
        img = det._load(item[1], channel_order)
        x = det._prepare(img)
        pixels[0] += int(x.shape[-1] * x.shape[-2])
        pixels[1] += 1
        return img.shape[:2], x

    def run(window):
        return list(_run_window(det, window, batch_size))

    t0 = time.perf_counter()
    prepared = prefetch(indexed, prepare, plan.workers, depth=2 * plan.workers + plan.streams)
    windows = _windows(prepared, 4 * batch_size if batch_size > 1 else 1)
    for _, results, err in prefetch(windows, run, plan.streams if plan.streams > 1 else 0, depth=plan.streams):
        if err is not None:
            raise err  # a model failure (NaN output), not a bad image: stop as the single call would
        yield from results
    if probe is not None:
        probe.add(plan, time.perf_counter() - t0, pixels[0], pixels[1])


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
    ready = [entry for entry in window if isinstance(entry, tuple)]
    for (res, _), prob in zip(ready, forward_all(det, [x for _, x in ready], batch_size)):
        res.detections = det._boxes(prob, res.shape)
    for entry in window:
        yield entry[0] if isinstance(entry, tuple) else entry
