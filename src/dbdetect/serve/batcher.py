"""Micro-batching with a bounded queue: concurrent requests share forward passes, never the event loop.

Requests put their uploads on one queue. A single worker task takes the first,
waits up to ``max_wait_ms`` for more (at most ``max_batch``), and hands them to one
inference thread per stream, which decodes and resizes them (on a CPU; see
:attr:`dbdetect.serve.engine.Engine.decode_inline`), stacks the ones whose network
input has the same shape (on a GPU, pads the others into buckets:
:mod:`dbdetect.batching`; each result equals a single :class:`dbdetect.Detector`
call either way) and runs the forward pass and the post-processing.
Meanwhile the next batch gathers. A full queue refuses at once (:class:`QueueFull`);
a request that gives up (timeout, disconnected client) cancels its job, which the
worker then skips.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .engine import Engine, Prepared
from .metrics import Metrics


class QueueFull(Exception):
    """The queue holds ``max_queue`` images already."""


class BadImage(ValueError):
    """An upload that does not decode (the request answers 422)."""


@dataclass
class Job:
    """One upload: its bytes and settings, its network input once prepared, where the answer goes."""

    data: bytes
    post: dict[str, Any]
    future: asyncio.Future[Any]
    prepared: Prepared | None = None
    queued_at: float = field(default_factory=time.perf_counter)


# the answer of one job: (upright image, detections, timings), or the exception it met
Answer = Any


class MicroBatcher:
    def __init__(
        self,
        engine: Engine,
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        metrics: Metrics,
        threads: ThreadPoolExecutor,
        streams: int = 1,
    ) -> None:
        self.engine = engine
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
        self.max_queue, self.metrics = max_queue, metrics
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.waiting = 0  # jobs put and not yet taken by the worker
        # one gathering task per inference thread: with 2 streams on a CPU, two forward
        # passes of half the threads each run at once (dbdetect.pipeline)
        self.executor = threads
        self.streams = max(1, int(streams))
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

    def submit(self, data: bytes, post: dict[str, Any], prepared: Prepared | None = None) -> asyncio.Future[Any]:
        """Queue one upload; its future gets ``(image, detections, timings)``. QueueFull when full."""
        if self.waiting >= self.max_queue:
            raise QueueFull
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting += 1
        self.metrics.queue_depth.set(self.waiting)
        self.queue.put_nowait(Job(data, post, fut, prepared))
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
            if not jobs:
                continue
            try:
                answers = await loop.run_in_executor(self.executor, self._run, jobs)
            except Exception as exc:  # a broken model: every waiting request learns why
                answers = [exc] * len(jobs)
            for j, answer in zip(jobs, answers):
                if j.future.done():
                    continue
                if isinstance(answer, BaseException):
                    j.future.set_exception(answer)
                else:
                    j.future.set_result(answer)

    def _run(self, jobs: list[Job]) -> list[Answer]:
        return run_jobs(self.engine, jobs, self.metrics.batch_size.observe)


def _prepare(engine: Engine, job: Job) -> Prepared | BadImage:
    if job.prepared is not None:
        return job.prepared
    try:
        return engine.prepare(job.data, job.post)
    except ValueError as exc:
        return BadImage(str(exc))


def run_jobs(engine: Engine, jobs: list[Job], observe: Callable[[int], Any]) -> list[Answer]:
    """Prepare the jobs not yet prepared, then one forward pass per bucket (in an inference thread).

    Same-shape inputs share a pass; on a GPU, inputs of different shapes share
    padded ones too (:mod:`dbdetect.batching`). Returns an answer per job, in
    order: ``(image, detections, timings)``, or the :class:`BadImage` of an
    upload that does not decode. ``observe`` gets each pass's batch size.
    """
    answers: list[Answer] = [None] * len(jobs)
    ready: list[tuple[int, Prepared]] = []
    for k, job in enumerate(jobs):
        prepared = _prepare(engine, job)
        if isinstance(prepared, BadImage):
            answers[k] = prepared
        else:
            ready.append((k, prepared))
    for group in engine.buckets([p.x for _, p in ready]):
        members = [ready[i] for i in group]
        observe(len(members))
        started = time.perf_counter()
        probs = engine.forward_group([p.x for _, p in members])
        network = time.perf_counter()
        for (k, p), pk in zip(members, probs):
            t0 = time.perf_counter()
            dets = engine.boxes(pk, p.img.shape[:2], p.kwargs)
            timings = {
                "decode_ms": p.decode_ms,
                "queue_ms": (started - jobs[k].queued_at) * 1e3 - (0.0 if jobs[k].prepared else p.decode_ms),
                "inference_ms": (network - started) * 1e3,
                "postprocess_ms": (time.perf_counter() - t0) * 1e3,
                "batch": float(len(members)),
            }
            answers[k] = (p.img, dets, timings)
    return answers
