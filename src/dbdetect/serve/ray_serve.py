"""The same API on Ray Serve: N replicas, Ray Serve's ``@serve.batch`` and its backpressure.

Each replica builds the FastAPI app of :func:`dbdetect.serve.create_app` (so the
routes, limits and answers are the same) with one difference: images are batched by
``@serve.batch`` (``max_batch_size=--max-batch``, ``batch_wait_timeout_s=--max-wait-ms``)
instead of the in-process queue, and overload is Ray Serve's to refuse
(``max_ongoing_requests`` per replica, ``max_queued_requests`` in front of them: 503).

    dbdetect serve --ray --replicas 2            # a local Ray on 127.0.0.1
    serve run dbdetect.serve.ray_serve:app       # the application object, default settings
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .app import create_app
from .batcher import Job, run_jobs
from .engine import Engine, Prepared
from .metrics import Metrics
from .settings import ServeSettings


class ServeBatcher:
    """The batcher interface of :class:`dbdetect.serve.batcher.MicroBatcher` over ``@serve.batch``."""

    waiting = 0  # Ray Serve's own queue limits apply; this one never refuses

    def __init__(self, engine: Engine, settings: ServeSettings, metrics: Metrics, threads: ThreadPoolExecutor) -> None:
        from ray import serve

        self.engine, self.metrics = engine, metrics

        @serve.batch(max_batch_size=settings.max_batch, batch_wait_timeout_s=settings.max_wait_ms / 1000.0)
        async def run(jobs: list[Job]) -> list[Any]:
            # in the thread that loaded the model (see create_app), not asyncio's pool
            return await asyncio.get_running_loop().run_in_executor(threads, self._run, jobs)

        self._batched = run

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def submit(self, data: bytes, post: dict[str, Any], prepared: Prepared | None = None) -> asyncio.Future[Any]:
        job = Job(data, post, asyncio.get_running_loop().create_future(), prepared)
        return asyncio.ensure_future(self._answer(job))

    async def _answer(self, job: Job) -> Any:
        # the job's own future is a placeholder: the batched call returns each answer
        answer = await self._batched(job)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _run(self, jobs: list[Job]) -> list[Any]:
        """The batch runs in forward passes as in the in-process batcher (:func:`run_jobs`)."""
        return run_jobs(self.engine, jobs, self.metrics.batch_size.observe)


def replica_app(settings: ServeSettings) -> Any:
    """The FastAPI app of one replica (built there, at start-up)."""
    return create_app(settings, batcher=ServeBatcher)


def application(settings: ServeSettings | None = None, replicas: int = 1) -> Any:
    """The Ray Serve application: ``serve.run(application(settings, replicas))``."""
    from ray import serve

    cfg = settings or ServeSettings()
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")

    def build() -> Any:  # Ray Serve calls a plain function of no arguments on each replica
        return replica_app(cfg)

    service = serve.ingress(build)(type("DbdetectService", (), {}))
    deployment = serve.deployment(
        name="dbdetect",
        num_replicas=replicas,
        max_ongoing_requests=max(cfg.max_batch * 2, 1),
        max_queued_requests=cfg.max_queue,
        # the network's threads are the replica's work; Ray need not reserve a CPU per replica
        ray_actor_options={"num_cpus": 0},
    )(service)
    return deployment.bind()


def start(
    settings: ServeSettings, address: str | None, replicas: int, host: str = "127.0.0.1", port: int = 8000
) -> str:
    """Start Ray (or join ``address``), then the application; returns its base URL."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        if address in (None, "local"):
            ray.init(include_dashboard=False, num_cpus=max(os.cpu_count() or 1, replicas))
        else:
            ray.init(address=address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(application(settings, replicas), name="dbdetect", route_prefix="/")
    return f"http://{host}:{port}"


def run_ray(settings: ServeSettings, address: str | None, replicas: int, host: str, port: int) -> int:
    """``dbdetect serve --ray``: serve until interrupted, then shut Serve down."""
    from ray import serve

    url = start(settings, address, replicas, host, port)
    print(f"dbdetect serve: {replicas} replica(s) on Ray Serve at {url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
    return 0


app = application()  # for `serve run dbdetect.serve.ray_serve:app`
