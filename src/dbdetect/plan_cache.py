"""Stream plans measured on this machine, so that the next run of the same model skips the probe.

:func:`dbdetect.pipeline.detect_stream` measures its candidate plans on the
first images of a stream (the probe). On a CPU where the plans tie, the images
run under the losing plans are what the choice costs, and a run of a few dozen
images pays it each time. So the probe's choice is kept, as FFTW keeps its
wisdom and cuDNN its benchmark results: one JSON file of entries keyed by the
CPU, the thread count, torch's version and the model's architecture, input size
and runtime. An entry older than :data:`MAX_AGE_S` is measured again.

The file is ``$DBDETECT_PLAN_CACHE`` if set (``off`` turns the cache off),
else ``plans.json`` under ``$DBDETECT_CACHE`` or ``~/.cache/dbdetect``. A file
that cannot be read or written is not an error: the stream probes as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

from .files import atomic_file, cache_root

__all__ = ["MAX_AGE_S", "cache_path", "plan_key", "recall", "remember"]

log = logging.getLogger("dbdetect.pipeline")
MAX_AGE_S = 7 * 24 * 3600  # a machine's load and software change; a week-old choice is measured again
_VERSION = 1


def cache_path() -> Path | None:
    """The plan file, or None when ``DBDETECT_PLAN_CACHE=off``."""
    explicit = os.environ.get("DBDETECT_PLAN_CACHE")
    if explicit is not None:
        return None if explicit.strip().lower() in ("", "0", "off", "false", "no") else Path(explicit)
    return cache_root() / "plans.json"


def _cpu() -> str:
    """The CPU's model name and instruction-set flags (int8 and fp32 kernels differ by them)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    flags = hashlib.sha256(fields.get("flags", "").encode()).hexdigest()[:12]
    return f"{fields.get('model name', platform.machine())} / flags {flags}"


def plan_key(det: Any, batch_size: int, threads: int, plans: list) -> str:
    """What a measured plan depends on: machine, threads, torch, model, input size, runtime, candidates."""
    import torch

    cfg = getattr(det, "cfg", {}) or {}
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    parts = {
        "cpu": _cpu(),
        "cores": cores,
        "threads": threads,
        "torch": torch.__version__,
        "arch": cfg.get("arch"),
        "arch_kwargs": cfg.get("arch_kwargs"),
        "runtime": type(getattr(det, "runtime", det)).__name__,
        "precision": getattr(det, "precision", None),
        "input": [getattr(det, "limit_side_len", None), getattr(det, "limit_type", None)],
        "batch_size": batch_size,
        "plans": [[p.streams, p.workers, p.threads] for p in plans],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _VERSION or not isinstance(data.get("plans"), dict):
        return {}
    return data["plans"]


def recall(key: str, plans: list) -> Any | None:
    """The plan remembered under ``key`` if it is one of ``plans`` and younger than :data:`MAX_AGE_S`."""
    path = cache_path()
    if path is None:
        return None
    entry = _read(path).get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("measured"), (int, float)):
        return None
    if time.time() - entry["measured"] > MAX_AGE_S:
        return None
    chosen = entry.get("plan")
    for plan in plans:
        if [plan.streams, plan.workers, plan.threads] == chosen:
            log.info(
                "stream plan: %d stream(s) x %s torch thread(s), %d decoding worker(s), measured on this machine "
                "%.1f h ago (%s)",
                plan.streams,
                plan.threads,
                plan.workers,
                (time.time() - entry["measured"]) / 3600,
                path,
            )
            return plan
    return None


def remember(key: str, plan: Any, rates: dict) -> None:
    """Keep ``plan`` under ``key``, with the probe's rates (Mpx/s by plan) for whoever reads the file."""
    path = cache_path()
    if path is None:
        return
    plans = _read(path)
    plans[key] = {
        "plan": [plan.streams, plan.workers, plan.threads],
        "measured": time.time(),
        "rates_mpx_s": rates,
    }
    try:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps({"version": _VERSION, "plans": plans}, indent=1, sort_keys=True))
    except OSError as exc:  # a read-only home: the next run probes again
        log.debug("could not keep the stream plan in %s: %s", path, exc)
