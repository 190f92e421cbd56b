"""The HTTP API: ``POST /v1/detect``, health, readiness, metrics and the demo page (FastAPI)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import cv2
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..memory import single_malloc_arena
from .batcher import BadImage, MicroBatcher, QueueFull
from .engine import Engine
from .metrics import Metrics
from .settings import ServeSettings
from .uploads import BadRequest, Upload, check_image, from_json, parse_settings

RETRY_AFTER_S = "1"
BEARER = {"WWW-Authenticate": "Bearer"}
IMAGE_BODY = {"schema": {"type": "string", "format": "binary"}}
OPENAPI_BODY = {
    "requestBody": {
        "description": "one image as the raw body (image/png, image/jpeg, ...), multipart `file` fields "
        '(several allowed), or JSON `{"image": "<base64>"}` / `{"images": [...]}` with the settings as keys',
        "content": {
            "image/*": IMAGE_BODY,
            "application/octet-stream": IMAGE_BODY,
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "string"},
                        "images": {"type": "array", "items": {"type": "string"}},
                    },
                }
            },
        },
    }
}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def local_batcher(engine: Engine, cfg: ServeSettings, metrics: Metrics, threads: ThreadPoolExecutor) -> MicroBatcher:
    """The in-process micro-batcher (the default of :func:`create_app`)."""
    streams = cfg.streams_and_threads()[0]
    return MicroBatcher(engine, cfg.max_batch, cfg.max_wait_ms, cfg.max_queue, metrics, threads, streams)


def create_app(
    settings: ServeSettings | None = None,
    engine: Engine | None = None,
    batcher: Callable[[Engine, ServeSettings, Metrics, ThreadPoolExecutor], Any] = local_batcher,
) -> FastAPI:
    """The service as an ASGI app (run it with uvicorn, or ``dbdetect serve``).

    Args:
        settings: model, limits and security (:class:`ServeSettings`; default: its defaults).
        engine: the detector to serve; default: one built from ``settings`` at start-up.
        batcher: builds what gathers images into forward passes, given the inference threads
            that run them; default the in-process :class:`~dbdetect.serve.batcher.MicroBatcher`
            (Ray Serve passes its ``@serve.batch``).
    """
    cfg = settings or ServeSettings()
    # Forward passes run in an inference thread, never the main one. glibc gives other
    # threads arenas of 64 MiB heaps, so a feature map larger than that (a batch at side
    # 960 has several) is mmap'd and page-faulted afresh on every pass: measured 2x slower.
    # One arena serves every thread from the main heap, which keeps freed memory (dbdetect.memory).
    single_malloc_arena()
    metrics = Metrics()
    state: dict[str, Any] = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        # Every torch call (loading, warm-up, forward passes) runs in these threads and no other.
        # libgomp keeps a team of worker threads for each thread that has run a parallel region,
        # and once it manages more threads than there are cores it cuts their spin to almost
        # nothing: the workers then sleep and are woken by the kernel at each of a pass's few
        # hundred regions. Loading in one thread and passing in another did that on 2 cores
        # (about 300 context switches and 15-25 ms more per pass).
        threads = ThreadPoolExecutor(cfg.streams_and_threads()[0], thread_name_prefix="dbdetect-inference")
        loop = asyncio.get_running_loop()
        try:
            eng: Engine = (
                engine if engine is not None else await loop.run_in_executor(threads, Engine.from_settings, cfg)
            )
            await loop.run_in_executor(threads, eng.warm_up)
            gather = batcher(eng, cfg, metrics, threads)
            gather.start()
            state.update(engine=eng, batcher=gather, ready=True)
            try:
                yield
            finally:
                state["ready"] = False
                await gather.stop()
        finally:
            threads.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(
        title="dbdetect",
        summary="Scene-text detection (DBNet) over HTTP",
        version=_version(),
        lifespan=lifespan,
    )
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["GET", "POST"], allow_headers=["*"]
        )

    @app.get("/healthz", summary="the process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="the model is loaded and warmed up")
    async def readyz() -> JSONResponse:
        if not state["ready"]:
            return _error(503, "the model is loading")
        return JSONResponse({"status": "ready", "model": state["engine"].name})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics_text() -> Response:
        return Response(metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse, summary="demo page")
    async def demo() -> HTMLResponse:
        return HTMLResponse(resources.files("dbdetect.serve").joinpath("demo.html").read_text(encoding="utf-8"))

    @app.post("/v1/detect", summary="detect text in one or several images", openapi_extra=OPENAPI_BODY)
    async def detect(
        request: Request,
        thresh: float | None = Query(None, description="binarisation threshold, in (0, 1)"),
        box_thresh: float | None = Query(None, description="minimum box score, in [0, 1]"),
        unclip_ratio: float | None = Query(None, description="box expansion ratio, in (0, 10]"),
        box_type: str | None = Query(None, description="'quad' or 'poly'"),
        limit_side_len: int | None = Query(None, description="resize limit, in [32, 4096]"),
        visualize: str | None = Query(None, description="1: add the picture with the boxes drawn (PNG, base64)"),
    ) -> Response:
        t0 = time.perf_counter()
        metrics.in_flight.inc()
        try:
            query = dict(
                thresh=thresh,
                box_thresh=box_thresh,
                unclip_ratio=unclip_ratio,
                box_type=box_type,
                limit_side_len=limit_side_len,
                visualize=visualize,
            )
            response = await _detect(request, {k: v for k, v in query.items() if v is not None}, t0)
        except BadRequest as exc:
            reason = {413: "too_large", 503: "queue_full", 504: "timeout"}.get(exc.status, "bad_input")
            metrics.rejections.labels(reason).inc()
            response = _error(exc.status, exc.message, exc.headers)
        finally:
            metrics.in_flight.dec()
        metrics.requests.labels(str(response.status_code)).inc()
        if response.status_code == 200:
            metrics.latency.observe(time.perf_counter() - t0)
        return response

    async def _detect(request: Request, query: dict[str, Any], t0: float) -> Response:
        if not cfg.authorized(request.headers.get("authorization")):
            raise BadRequest(
                401, "missing or wrong API key (Authorization: Bearer <key>)", {"WWW-Authenticate": "Bearer"}
            )
        if not state["ready"]:
            raise BadRequest(503, "the model is loading", {"Retry-After": RETRY_AFTER_S})
        if state["batcher"].waiting >= cfg.max_queue:  # refuse before reading the body
            raise _queue_full(cfg)
        uploads, fields = await _read_uploads(request)
        post, vis = parse_settings({**fields, **query})
        results = await asyncio.gather(*(_one(request, u, post, vis) for u in uploads), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        total_ms = round((time.perf_counter() - t0) * 1e3, 2)
        name = state["engine"].name
        if len(results) == 1:
            return JSONResponse({"model": name, **results[0], "total_ms": total_ms})  # type: ignore[dict-item]
        return JSONResponse({"model": name, "results": results, "total_ms": total_ms})

    async def _read_uploads(request: Request) -> tuple[list[Upload], dict[str, Any]]:
        body = await _read_body(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            request._body = body  # Starlette's form parser reads the body already read
            try:
                form = await request.form(max_files=cfg.max_files + 1, max_fields=64)
            except Exception as exc:  # python-multipart's and Starlette's parse errors
                raise BadRequest(422 if "Too many" not in str(exc) else 413, f"bad multipart body: {exc}") from None
            files = [f for f in form.getlist("file") if hasattr(f, "read")]
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            uploads = [
                Upload(getattr(f, "filename", None) or f"file[{k}]", await f.read()) for k, f in enumerate(files)
            ]
            if not uploads:
                raise BadRequest(422, "the multipart body has no 'file' field")
        elif ctype == "application/json":
            uploads, fields = from_json(body)
        else:
            uploads, fields = [Upload("body", body)], {}
        if len(uploads) > cfg.max_files:
            raise BadRequest(413, f"{len(uploads)} images in one request; at most {cfg.max_files} (--max-files)")
        return uploads, fields

    async def _read_body(request: Request) -> bytes:
        limit = cfg.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BadRequest(
                413, f"the body is {int(declared)} bytes; at most {limit} (--max-body-mb {cfg.max_body_mb:g})"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # a chunked body says no length: stop reading at the limit
                raise BadRequest(413, f"the body is over {limit} bytes (--max-body-mb {cfg.max_body_mb:g})")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _one(request: Request, up: Upload, post: dict[str, Any], vis: bool) -> dict[str, Any]:
        eng: Engine = state["engine"]
        check_image(up.data, cfg.max_pixels, up.name)
        prepared = None
        if not eng.decode_inline:
            try:
                prepared = await asyncio.to_thread(eng.prepare, up.data, post)
            except ValueError as exc:
                raise BadRequest(422, f"{up.name}: {exc}") from None
        try:
            fut = state["batcher"].submit(up.data, post, prepared)
        except QueueFull:
            raise _queue_full(cfg) from None
        try:
            img, dets, timings = await _wait(request, fut)
        except BadImage as exc:
            raise BadRequest(422, f"{up.name}: {exc}") from None
        out: dict[str, Any] = {
            "width": int(img.shape[1]),
            "height": int(img.shape[0]),
            "detections": [d.to_dict() for d in dets],
            "timings": {k: round(v, 2) for k, v in timings.items()},
        }
        if len(post) or vis:
            out["settings"] = post
        if vis:
            out["visualization"] = await asyncio.to_thread(_picture, img, dets)
        return out

    async def _wait(request: Request, fut: asyncio.Future[Any]) -> Any:
        async def gone() -> None:
            while not await request.is_disconnected():
                await asyncio.sleep(0.05)

        watch = asyncio.ensure_future(gone())
        try:
            done, _ = await asyncio.wait({fut, watch}, timeout=cfg.timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
        if fut.done() and not fut.cancelled():
            exc = fut.exception()
            if isinstance(exc, BadImage):
                raise exc
            if exc is not None:
                raise BadRequest(500, f"inference failed: {exc}")
            return fut.result()
        fut.cancel()  # the batcher skips it: a client that gave up keeps no slot
        if watch in done:
            raise BadRequest(499, "the client disconnected")
        raise BadRequest(504, f"no answer within {cfg.timeout_s:g} s (--timeout)")

    return app


def _queue_full(cfg: ServeSettings) -> BadRequest:
    return BadRequest(503, f"the queue is full ({cfg.max_queue} images waiting)", {"Retry-After": RETRY_AFTER_S})


def _picture(img: np.ndarray, dets: list[Any]) -> str:
    from ..visualize import draw

    ok, buf = cv2.imencode(".png", draw(img, dets)[:, :, ::-1])
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode() if ok else ""


def _version() -> str:
    from .. import __version__

    return __version__
