"""The service's settings: what it runs, and the limits that keep it alive under bad input and load."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ServeSettings:
    """Settings of :func:`dbdetect.serve.create_app` (``dbdetect serve`` flags of the same names).

    Attributes:
        model: anything :class:`dbdetect.Detector` accepts (registry name, checkpoint,
            ``.onnx``, int8 ``.torchscript``).
        device: torch device.
        threads: CPU threads of the network in all (None: torch's choice).
        streams: forward passes run at once, sharing ``threads`` (None: 1, the lowest latency;
            2 gives more images per second under load on a 2-core CPU, see the serving docs).
        max_batch: images per forward pass at most.
        max_wait_ms: how long the first image of a batch waits for others (0: the batch takes
            what is queued; under load the queue fills while the previous batch runs, and an
            idle service answers a lone request at once, as Triton's default does).
        max_queue: images waiting for the network at most; beyond, 503 at once.
        timeout_s: a request still unanswered after this gets 504.
        max_body_mb: largest request body; larger gets 413 before it is read.
        max_pixels: largest image (width x height, from its header); larger gets 413 undecoded.
        max_files: images per request at most.
        api_keys: bearer tokens accepted; empty: no authentication.
        cors_origins: origins allowed by CORS; empty: CORS off.
        detector: further :class:`dbdetect.Detector` keyword arguments (defaults of every request).
    """

    model: Any = "ppocrv4"
    device: str = "cpu"
    threads: int | None = None
    streams: int | None = None
    max_batch: int = 4
    max_wait_ms: float = 0.0
    max_queue: int = 32
    timeout_s: float = 30.0
    max_body_mb: float = 20.0
    max_pixels: int = 40_000_000
    max_files: int = 8
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    detector: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_files", "max_pixels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.streams is not None and int(self.streams) < 1:
            raise ValueError(f"streams must be >= 1, got {self.streams}")
        for name in ("max_wait_ms",):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("timeout_s", "max_body_mb"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def streams_and_threads(self) -> tuple[int, int | None]:
        """(forward passes at once, torch threads of each; None leaves torch's setting)."""
        import torch

        total = self.threads or torch.get_num_threads()
        streams = self.streams or 1
        if streams == 1:
            return 1, self.threads
        return streams, max(1, total // streams)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries one of the keys (constant-time comparison)."""
        if not self.api_keys:
            return True
        if not header or not header.startswith("Bearer "):
            return False
        token = header[len("Bearer ") :].strip().encode()
        # compare against every key, so the time does not tell which one came close
        return any([hmac.compare_digest(token, k.encode()) for k in self.api_keys])


def read_api_keys(path: str | Path) -> tuple[str, ...]:
    """The tokens of an API key file: one per line; blank lines and ``#`` comments skipped."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"API key file not found: {p}")
    keys = tuple(ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip() and ln[0] != "#")
    if not keys:
        raise ValueError(f"API key file {p} holds no key")
    if any(len(k) < 16 for k in keys):
        raise ValueError(f"API key file {p}: every key must be at least 16 characters")
    return keys
