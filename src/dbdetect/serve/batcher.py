"""Micro-batching with a bounded queue: concurrent requests share forward passes, never the event loop.

Requests put prepared images on one queue. A single worker task takes the first,
waits up to ``max_wait_ms`` for more (at most ``max_batch``), stacks the ones whose
network input has the same shape (no padding, so each result equals a single
:class:`dbdetect.Detector` call) and runs the forward pass and the
post-processing in one inference thread per stream. Meanwhile the next batch gathers.
A full queue refuses at once (:class:`QueueFull`); a request that gives up
(timeout, disconnected client) cancels its job, which the worker then skips.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .metrics import Metrics


class QueueFull(Exception):
    """The queue holds ``max_queue`` images already."""


@dataclass
class Job:
    """One prepared image: the network input, what to post-process it with, where the answer goes."""

    x: np.ndarray
    shape: tuple[int, int]
    post: dict[str, Any]
    future: asyncio.Future[Any]
    queued_at: float = field(default_factory=time.perf_counter)


# (network input batch) -> probability maps; (probability map, image shape, post settings) -> detections
Forward = Callable[[np.ndarray], np.ndarray]
Boxes = Callable[[np.ndarray, tuple[int, int], dict[str, Any]], Any]


class MicroBatcher:
    def __init__(
        self,
        forward: Forward,
        boxes: Boxes,
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        metrics: Metrics,
        streams: int = 1,
    ) -> None:
        self.forward, self.boxes = forward, boxes
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
        self.max_queue, self.metrics = max_queue, metrics
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.waiting = 0  # jobs put and not yet taken by the worker
        # on a CPU, two forward passes of half the threads each beat one of all (dbdetect.pipeline)
        self.streams = max(1, int(streams))
        self.executor = ThreadPoolExecutor(self.streams, thread_name_prefix="dbdetect-inference")
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._work()) for _ in range(self.streams)]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True, cancel_futures=True)

    def submit(self, x: np.ndarray, shape: tuple[int, int], post: dict[str, Any]) -> asyncio.Future[Any]:
        """Queue one prepared image; its future gets ``(detections, timings)``. QueueFull when full."""
        if self.waiting >= self.max_queue:
            raise QueueFull
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting += 1
        self.metrics.queue_depth.set(self.waiting)
        self.queue.put_nowait(Job(x, shape, post, fut))
        return fut

    async def _take(self, timeout: float | None) -> Job | None:
        try:
            job = await (asyncio.wait_for(self.queue.get(), timeout) if timeout is not None else self.queue.get())
        except asyncio.TimeoutError:
            return None
        self.waiting -= 1
        self.metrics.queue_depth.set(self.waiting)
        return job

    async def _gather(self) -> list[Job]:
        first = await self._take(None)
        jobs = [first] if first is not None else []
        deadline = time.perf_counter() + self.max_wait
        while len(jobs) < self.max_batch:
            left = deadline - time.perf_counter()
            if left <= 0:
                # take what is already there without waiting: a burst fills the batch
                if self.queue.empty():
                    break
                left = 0.0
            job = await self._take(left if left > 0 else 0.0001)
            if job is None:
                break
            jobs.append(job)
        return [j for j in jobs if not j.future.done()]  # given up while waiting

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            groups: dict[tuple[int, ...], list[Job]] = {}
            for j in jobs:
                groups.setdefault(j.x.shape, []).append(j)
            for group in groups.values():
                self.metrics.batch_size.observe(len(group))
                try:
                    results = await loop.run_in_executor(self.executor, self._run, group)
                except Exception as exc:  # a broken model: every waiting request learns why
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(exc)
                    continue
                for j, res in zip(group, results):
                    if not j.future.done():
                        j.future.set_result(res)

    def _run(self, group: list[Job]) -> list[tuple[Any, dict[str, float]]]:
        return run_group(self.forward, self.boxes, group)


def run_group(forward: Forward, boxes: Boxes, group: list[Job]) -> list[tuple[Any, dict[str, float]]]:
    """Forward pass and post-processing of one same-shape group (in an inference thread).

    Returns ``(detections, timings)`` per job, in order.
    """
    started = time.perf_counter()
    prob = forward(np.stack([j.x for j in group]))
    network = time.perf_counter()
    out = []
    for j, p in zip(group, prob):
        t0 = time.perf_counter()
        dets = boxes(p, j.shape, j.post)
        timings = {
            "queue_ms": (started - j.queued_at) * 1e3,
            "inference_ms": (network - started) * 1e3,
            "postprocess_ms": (time.perf_counter() - t0) * 1e3,
            "batch": float(len(group)),
        }
        out.append((dets, timings))
    return out
