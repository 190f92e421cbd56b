"""Detection on a Ray cluster with Ray Data: the only dbdetect module that imports ray.

:func:`detect_dataset` maps a Ray Dataset through :class:`dbdetect.Detector`
actors (``map_batches`` with a callable class, so each actor loads the model
once) and returns a Dataset with the input columns plus:

- ``polygons``: ``list<list<list<float32>>>``, one ``[[x, y], ...]`` polygon per
  detection, in original-image pixels (as :attr:`Detection.polygon`);
- ``scores``: ``list<float64>``, one score per polygon;
- ``error``: ``string``, null for a processed image, else why it could not
  be read (its ``polygons``/``scores`` are then empty). A bad image does not
  stop the run.

The image is taken from the first of these columns present (or ``column=``):

- ``image``: an array column (``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``,
  uint8/uint16/float, RGB), as ``ray.data.read_images`` makes;
- ``bytes``: encoded image bytes, as ``ray.data.read_binary_files`` makes;
- ``path``: a string path that every node can read (shared storage).

Ray clusters must stay on localhost or a private network: anyone who reaches
the ports of a cluster can run code on it. Older Ray versions have no
authentication at all; recent ones (2.60 here) add token authentication
(``RAY_AUTH_MODE=token``, token in ``~/.ray/auth_token`` on every node).

>>> import ray, dbdetect.distributed as dd                        # doctest: +SKIP
>>> ds = ray.data.read_binary_files("s3://bucket/scans/", include_paths=True)  # doctest: +SKIP
>>> dd.detect_dataset(ds, model="ppocrv4", concurrency=8).write_parquet("out/")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["detect_dataset", "keep_on_loopback", "IMAGE_COLUMNS"]

IMAGE_COLUMNS = ("image", "bytes", "path")
INSTALL_HINT = 'Ray is not installed: pip install "dbdetect[ray]"'


# Ray on Linux swaps 127.0.0.1 for the machine's network address, so that other
# machines can reach the node; the first switch (read when ray is imported) keeps
# a one-machine Ray on loopback. The second stops Ray's usage statistics.
# Multi-machine clusters are started by `ray start`.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
# Ray's dashboard process asks the cloud metadata services (169.254.169.254,
# metadata.google.internal) which cloud it runs on, at start-up and even with usage
# statistics off (Ray 2.60: usage_lib.get_cluster_config_to_report). Those requests
# honour http_proxy, so a proxy on a closed loopback port (9, discard) makes them
# fail at once without leaving the machine; loopback itself stays direct (no_proxy),
# which keeps Ray's own gRPC traffic untouched. A proxy the user set is left alone.
CLOSED_PROXY = "http://127.0.0.1:9"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def keep_on_loopback() -> None:
    """Make a Ray started from this process use 127.0.0.1 only (call before importing ray).

    Sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` and ``RAY_USAGE_STATS_ENABLED=0``, and,
    unless a proxy is already configured, sends plain-HTTP requests (Ray's cloud-metadata
    probe) to a closed port on 127.0.0.1 while loopback addresses bypass it. Ray's
    worker processes inherit the settings.

    >>> keep_on_loopback()
    >>> import os; os.environ["RAY_USAGE_STATS_ENABLED"]
    '0'
    """
    for key, value in LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)
    if any(os.environ.get(k) for k in ("http_proxy", "HTTP_PROXY")):
        return
    os.environ["http_proxy"] = os.environ["HTTP_PROXY"] = CLOSED_PROXY
    bypass = [h for h in os.environ.get("no_proxy", os.environ.get("NO_PROXY", "")).split(",") if h]
    bypass += [h for h in LOOPBACK_HOSTS if h not in bypass]
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = ",".join(bypass)


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0] if ":" in address else ""
    return address == "local" or host in ("127.0.0.1", "localhost")


def _import_ray():
    try:
        import pyarrow  # noqa: F401  (ray[data] brings it)
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from None
    return ray


def _pick_column(names, column: str | None) -> str:
    if column is not None:
        if column not in names:
            raise ValueError(f"column {column!r} is not in the dataset (columns: {list(names)})")
        return column
    for name in IMAGE_COLUMNS:
        if name in names:
            return name
    raise ValueError(
        f"the dataset needs an 'image' (array), 'bytes' (encoded image) or 'path' (str) column "
        f"(or pass column=); it has {list(names)}"
    )


def _images(table, column: str) -> list:
    """The images of one Arrow batch as objects ``Detector`` accepts."""
    col = table.column(column)
    kind = str(col.type)
    if kind in ("string", "large_string", "binary", "large_binary"):
        return col.to_pylist()
    # Ray's tensor extension arrays (fixed or variable shape) convert per chunk.
    return [img for chunk in col.chunks for img in chunk.to_numpy()]


class _DetectActor:
    """One model per actor; called with an Arrow batch, returns it with the result columns."""

    def __init__(self, model, column: str | None, detector_kwargs: dict):
        from ..detector import Detector

        self.det = Detector(model, **detector_kwargs)
        self.column = column

    def __call__(self, table):
        import pyarrow as pa

        from ..pipeline import detect_stream

        column = _pick_column(table.column_names, self.column)
        polys, scores, errors = [], [], []
        # workers=0, streams=1: an actor's CPUs belong to its torch threads, and a
        # batch is too short to measure another plan on
        rows = max(1, table.num_rows)
        for res in detect_stream(self.det, _images(table, column), batch_size=rows, workers=0, streams=1):
            dets = res.detections or []
            polys.append([d.polygon.tolist() for d in dets])
            scores.append([float(d.score) for d in dets])
            errors.append(None if res.error is None else f"{type(res.error).__name__}: {res.error}")
        return (
            table.append_column("polygons", pa.array(polys, pa.list_(pa.list_(pa.list_(pa.float32())))))
            .append_column("scores", pa.array(scores, pa.list_(pa.float64())))
            .append_column("error", pa.array(errors, pa.string()))
        )


def detect_dataset(
    dataset,
    model="ppocrv4",
    batch_size: int = 8,
    concurrency: int = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    column: str | None = None,
    **detector_kwargs,
):
    """Detect text in every row of a Ray Dataset with a pool of Detector actors.

    Args:
        dataset: a ``ray.data.Dataset`` with an ``image``, ``bytes`` or
            ``path`` column (see the module doc for their types).
        model: registry name, checkpoint path or model file, passed to
            :class:`dbdetect.Detector` unchanged; every node must reach it.
        batch_size: rows per actor call, also the forward-pass batch. Batched
            forward passes can differ from single images in the last float
            bits; ``batch_size=1`` reproduces ``Detector(image)`` exactly
            (with the same torch thread count).
        concurrency: number of actors (an int), or a ``(min, max)`` range.
        num_cpus: CPUs reserved per actor; its torch threads default to this.
        num_gpus: GPUs reserved per actor (pass ``device="cuda"`` too).
        column: the image column, if not the first of ``image``, ``bytes``, ``path``.
        **detector_kwargs: other :class:`dbdetect.Detector` arguments
            (``limit_side_len``, ``box_thresh``, ``device``, ...).

    Returns:
        A lazy ``ray.data.Dataset``: the input columns plus ``polygons``,
        ``scores`` and ``error``. A killed actor is restarted and its batch
        retried, so each row comes out once.

    >>> ds = ray.data.from_items([{"path": "a.jpg"}, {"path": "b.jpg"}])  # doctest: +SKIP
    >>> detect_dataset(ds, limit_side_len=960).take(1)[0]["scores"]        # doctest: +SKIP
    [0.91, 0.88]
    """
    ray = _import_ray()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    schema = dataset.schema(fetch_if_missing=False)
    if schema is not None:
        _pick_column(schema.names, column)  # fail here, not inside a remote actor
    lo, hi = (concurrency, concurrency) if isinstance(concurrency, int) else concurrency
    detector_kwargs.setdefault("num_threads", max(1, int(num_cpus)))
    # Ray Data's actor pools default to max_restarts=-1 and max_task_retries=-1:
    # a dead actor (lost node, OOM kill) is replaced and its batch re-run.
    return dataset.map_batches(
        _DetectActor,
        batch_size=batch_size,
        batch_format="pyarrow",
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi),
        fn_constructor_args=(model, column, detector_kwargs),
    )


# ---------------------------------------------------------------- dbdetect detect --ray


def _connect(ray, address: str):
    """Start a local Ray (127.0.0.1 only) or join the cluster at ``address``."""
    kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False)
    if _is_loopback(address):
        kw["_node_ip_address"] = "127.0.0.1"
    ray.init(address=None if address == "local" else address, **kw)


def _done_paths(out: Path) -> set[str]:
    """Paths recorded in the Parquet shards under ``out``; unreadable shards are set aside, not deleted."""
    import pyarrow.parquet as pq

    done: set[str] = set()
    for shard in sorted(out.rglob("*.parquet")):
        try:
            done.update(pq.read_table(shard, columns=["path"]).column("path").to_pylist())
        except Exception as exc:  # a shard cut short by a killed run: its images are redone
            aside = shard.with_name(shard.name + ".unreadable")
            shard.rename(aside)
            print(
                f"dbdetect detect: warning: {shard} is unreadable ({exc}); moved to {aside.name}, "
                "its images will be done again",
                file=sys.stderr,
            )
    return done


def run_cli(args, paths: list, detector_kwargs: dict) -> int:
    """``dbdetect detect --ray [ADDRESS] PATHS --out DIR``: Parquet shards into DIR."""
    from ..errors import UserError
    from ..jsonl import path_key

    if _is_loopback(args.ray):
        keep_on_loopback()
    ray = _import_ray()
    out = args.out
    if out is None:
        raise UserError("--ray needs --out DIR (a folder for the Parquet shards; shared storage on a cluster)")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; with --ray it must be a folder")
    if out.is_dir() and any(out.iterdir()) and not args.resume:
        raise UserError(f"--out {out} is not empty: use --resume to continue the run there, or another folder")
    done = _done_paths(out) if out.is_dir() else set()
    todo = [path_key(p) for p in paths if path_key(p) not in done]
    if done:
        print(f"dbdetect detect: resuming {out}: {len(done)} image(s) already there", file=sys.stderr)
    if not todo:
        return 0
    _connect(ray, args.ray)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = not args.no_progress
        workers = args.workers if args.workers is not None else max(1, int(ray.cluster_resources().get("CPU", 1)))
        # Blocks of ~64 images: each becomes a shard on disk, the unit a resumed run can skip.
        blocks = min(len(todo), max(workers, math.ceil(len(todo) / 64)))
        ds = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=blocks)
        res = detect_dataset(ds, model=args.model, batch_size=args.batch_size, concurrency=workers, **detector_kwargs)
        # Writers take no CPU slot: with every CPU held by an actor they would
        # otherwise wait for the end, and results would pile up in memory.
        res.write_parquet(str(out.resolve()), ray_remote_args={"num_cpus": 0})
        failed = _failures(out)
    finally:
        ray.shutdown()
    if failed:
        print(f"dbdetect detect: {len(failed)} image(s) could not be read, e.g. {failed[0]}", file=sys.stderr)
    return 1 if failed else 0


def _failures(out: Path) -> list[str]:
    """``path: error`` for every failed image recorded under ``out``."""
    import pyarrow.parquet as pq

    failed = []
    for shard in sorted(out.rglob("*.parquet")):
        t = pq.read_table(shard, columns=["path", "error"])
        failed += [f"{p}: {e}" for p, e in zip(t.column("path").to_pylist(), t.column("error").to_pylist()) if e]
    return failed
