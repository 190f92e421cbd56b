"""``dbdetect serve``: the detector as an HTTP service (see :mod:`dbdetect.serve`)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from ..serve import ServeSettings

INSTALL_HINT = 'pip install "dbdetect[serve]"'


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``dbdetect serve``."""
    p = subparsers.add_parser(
        "serve",
        help="serve the detector over HTTP (batching, limits, metrics, a demo page)",
        description="Run the detection API: POST /v1/detect, GET /healthz, /readyz, /metrics, and a demo "
        "page at /. Binds 127.0.0.1 unless --host says otherwise. " + INSTALL_HINT,
    )
    p.add_argument("--model", default="ppocrv4", help="registry name, checkpoint, .onnx or int8 .torchscript")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the network in all (default: torch's)")
    p.add_argument(
        "--streams",
        type=int,
        default=None,
        help="forward passes at once, sharing --threads (default 1: the lowest latency; 2: more throughput "
        "under load on a CPU)",
    )
    p.add_argument("--max-batch", type=int, default=4, help="images per forward pass at most (default 4)")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=0.0,
        help="how long a batch waits for more images (default 0: takes what is queued)",
    )
    p.add_argument(
        "--max-queue", type=int, default=32, help="images waiting at most; beyond, 503 with Retry-After (default 32)"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before a request gets 504 (default 30)")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body in MB (default 20)")
    p.add_argument(
        "--max-pixels", type=int, default=40_000_000, help="largest image, width x height (default 40,000,000)"
    )
    p.add_argument("--max-files", type=int, default=8, help="images per request at most (default 8)")
    p.add_argument("--api-key-file", default=None, help="file of bearer tokens, one per line: turns on auth")
    p.add_argument(
        "--cors-origin", action="append", default=None, help="allow this browser origin (repeat; default: CORS off)"
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run on Ray Serve (a local Ray on 127.0.0.1, or the cluster at ADDRESS)",
    )
    p.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas (with --ray; default 1)")
    p.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    p.set_defaults(func=run)
    return p


def settings_of(args: argparse.Namespace) -> ServeSettings:
    from ..serve import ServeSettings, read_api_keys

    return ServeSettings(
        model=args.model,
        device=args.device,
        threads=args.threads,
        streams=args.streams,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        timeout_s=args.timeout,
        max_body_mb=args.max_body_mb,
        max_pixels=args.max_pixels,
        max_files=args.max_files,
        api_keys=read_api_keys(args.api_key_file) if args.api_key_file else (),
        cors_origins=tuple(args.cors_origin or ()),
    )


def run(args: argparse.Namespace) -> int:
    """``dbdetect serve``: build the app and run it until interrupted."""
    try:
        import uvicorn

        from ..serve import create_app
    except ImportError as exc:
        raise UserError(f"dbdetect serve needs the serve extra ({exc.name} is missing): {INSTALL_HINT}") from None
    settings = settings_of(args)
    if args.ray is not None:
        from ..serve.ray_serve import run_ray

        return run_ray(settings, args.ray, args.replicas, args.host, args.port)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"dbdetect serve: listening on {args.host}: reachable from other machines", file=sys.stderr)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0
