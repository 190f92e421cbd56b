"""``dbdetect detect PATH...``: detect text in files and folders.

Writes one JSON line per image (path, size, polygons, scores) to ``--out`` or
stdout, and optionally pictures with the polygons drawn to ``--vis DIR``.
A bad image is reported by name and skipped; the exit code is then 1.
Inputs are never written over.

Large runs: ``--workers N`` threads decode and resize the next images while
the model runs, and ``--streams`` forward passes run at once, each taking its
share of the threads; by default the first images measure which of 1 or 2
streams and 0 or 1 workers is fastest on this CPU
(:func:`dbdetect.pipeline.detect_stream`). Each line is
flushed as it is written, and ``--resume`` continues an interrupted ``--out
results.jsonl`` (images already there are skipped). ``--ray [ADDRESS]`` runs
on a Ray cluster instead and writes Parquet shards into the ``--out`` folder
(needs ``pip install "dbdetect[ray]"``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from ..defaults import PRECISIONS
from ..imageio import IMAGE_EXTENSIONS


def add_parser(sub) -> None:
    p = sub.add_parser(
        "detect",
        help="detect text in images and folders",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--model", default="ppocrv4", help="registry name or checkpoint path (default: ppocrv4)")
    p.add_argument("--out", type=Path, help="write JSON lines here instead of stdout")
    p.add_argument("--overwrite", action="store_true", help="allow replacing an existing --out file")
    p.add_argument("--vis", type=Path, metavar="DIR", help="write pictures with the detections drawn into DIR")
    p.add_argument(
        "--crops",
        type=Path,
        metavar="DIR",
        help="write each detection as an upright, rectified crop into DIR (IMAGE_0.png, IMAGE_1.png, ...; "
        "each JSON line lists its crops)",
    )
    p.add_argument("--box-type", choices=("quad", "poly"), default="quad")
    p.add_argument("--limit-side-len", type=int, help="resize limit (default: the model's)")
    p.add_argument("--limit-type", choices=("max", "min"), help="'max' caps the long side, 'min' raises the short side")
    p.add_argument("--thresh", type=float, help="binarisation threshold (default: the model's)")
    p.add_argument("--box-thresh", type=float, help="minimum box score (default: the model's)")
    p.add_argument("--unclip-ratio", type=float, help="box expansion ratio (default: the model's)")
    p.add_argument(
        "--score-mode",
        choices=("fast", "slow"),
        help="box score: mean over the bounding rectangle (fast) or the contour (slow) (default: the model's)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="number format of the torch network: auto (fp16 on CUDA, fp32 on a CPU), fp32, fp16, bf16",
    )
    p.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default=None,
        help="inference backend (default: onnxruntime for a .onnx model, else torch)",
    )
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument(
        "--workers",
        type=int,
        help="threads that decode and resize upcoming images while the model runs (0: none; default on a CPU: "
        "0 or 1, whichever the first images show faster; 1 on a GPU); "
        "with --ray: detector actors (default: one per CPU of the cluster)",
    )
    p.add_argument("--threads", type=int, help="CPU threads for the network in all (default: torch's default)")
    p.add_argument(
        "--streams",
        type=int,
        help="forward passes run at once, sharing --threads (default on a CPU with 2 or more threads: 1 or 2, "
        "whichever the first images show faster; else 1)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: skip images already in --out and append the rest",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run on Ray Data (a local instance, or the cluster at ADDRESS, e.g. 127.0.0.1:6379) "
        "and write Parquet shards into the --out folder",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def _collect(paths: list[str]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, path relative to the folder it came from) pairs, and errors for missing paths."""
    found: list[tuple[Path, Path]] = []
    errors: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            imgs = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not imgs:
                errors.append(f"{p}: folder contains no images ({', '.join(IMAGE_EXTENSIONS[:5])}, ...)")
            found.extend((q, q.relative_to(p)) for q in imgs)
        elif p.is_file():
            found.append((p, Path(p.name)))
        else:
            errors.append(f"{p}: no such file or directory")
    return found, errors


def _unique(base: Path, taken: set) -> Path:
    """``base``, or ``base`` with a number added to its stem when another input already took it."""
    out, n = base, 1
    while out in taken:
        out = base.with_name(f"{base.stem}{n}{base.suffix}")
        n += 1
    taken.add(out)
    return out


def _vis_path(vis_dir: Path, rel: Path, taken: set) -> Path:
    return _unique(vis_dir / rel.parent / f"{rel.stem}_det.jpg", taken)


def _looks_like_address(text: str) -> bool:
    return (
        text in ("local", "auto") or text.startswith("ray://") or re.fullmatch(r"[\w.\-\[\]:]+:\d+", text) is not None
    )


def _fix_ray_address(args) -> None:
    """``--ray imgs/ --out d``: argparse read the first PATH as the address; give it back."""
    if args.ray is not None and (Path(args.ray).exists() or not _looks_like_address(args.ray)):
        args.paths.insert(0, args.ray)
        args.ray = "local"


def _detector_kwargs(args) -> dict:
    return dict(
        device=args.device,
        limit_side_len=args.limit_side_len,
        limit_type=args.limit_type,
        thresh=args.thresh,
        box_thresh=args.box_thresh,
        unclip_ratio=args.unclip_ratio,
        score_mode=args.score_mode,
        box_type=args.box_type,
        backend=args.backend,
        precision=args.precision,
    )


def _checked_out(dst: Path, inputs: set, what: str) -> Path:
    from ..errors import UserError

    if dst.resolve() in inputs:
        raise UserError(f"{what} {dst} would overwrite an input image")
    dst.parent.mkdir(parents=True, exist_ok=True)
    return dst


def _write_png(dst: Path, rgb) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])
    if ok:
        buf.tofile(str(dst))


def _write_pictures(args, path: Path, rel: Path, dets, inputs: set, taken: set) -> list[str]:
    """``--vis`` and ``--crops`` of one image; returns the crops' paths."""
    import cv2

    from ..crops import crop
    from ..imageio import load_image
    from ..visualize import draw

    # Decoded again here rather than kept from the pipeline: only --vis and --crops pay for it.
    image = load_image(path)
    if args.vis is not None:
        dst = _checked_out(_vis_path(args.vis, rel, taken), inputs, "visualisation")
        ok, buf = cv2.imencode(".jpg", draw(image, dets)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        if ok:
            buf.tofile(str(dst))
    if args.crops is None:
        return []
    # one stem per image, so two inputs named alike never share crop names
    stem = _unique(args.crops / rel.parent / rel.stem, taken)
    written = []
    for k, piece in enumerate(crop(image, dets)):
        dst = _checked_out(stem.with_name(f"{stem.name}_{k}.png"), inputs, "crop")
        _write_png(dst, piece)
        written.append(str(dst))
    return written


def run(args) -> int:
    from ..errors import UserError

    _fix_ray_address(args)
    if not args.paths:
        raise UserError("no PATH given: name image files or folders")
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    for flag, value in (("--threads", args.threads), ("--streams", args.streams), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if args.resume and args.out is None:
        raise UserError("--resume needs --out (the results file or folder of the interrupted run)")
    if args.ray is not None and (args.crops is not None or args.vis is not None):
        raise UserError("--crops and --vis write files on this machine: run them without --ray")
    items, errors = _collect(args.paths)
    for e in errors:
        print(f"dbdetect detect: error: {e}", file=sys.stderr)
    if not items:
        raise UserError("no images to process")
    inputs = {p.resolve() for p, _ in items}
    if args.out is not None and args.out.resolve() in inputs:
        raise UserError(f"--out {args.out} is one of the input images; refusing to overwrite it")
    if args.ray is not None:
        from ..scale.ray_data import run_cli

        try:
            return run_cli(args, [p for p, _ in items], _detector_kwargs(args)) or (1 if errors else 0)
        except ImportError as exc:  # ray missing: say which extra to install, no traceback
            raise UserError(str(exc)) from None
    return _run_local(args, items, errors, inputs)


def _run_local(args, items, errors, inputs) -> int:
    from tqdm import tqdm

    from ..detector import Detector
    from ..jsonl import open_results, path_key
    from ..pipeline import detect_stream, single_malloc_arena

    if args.streams != 1:
        single_malloc_arena()  # before any stream thread starts
    det = Detector(args.model, num_threads=args.threads, **_detector_kwargs(args))
    done: set[str] = set()
    out = None
    if args.out is not None:
        done, out = open_results(args.out, resume=args.resume, overwrite=args.overwrite)
        if done:
            print(f"dbdetect detect: resuming {args.out}: {len(done)} image(s) already there", file=sys.stderr)
    todo = [(p, rel) for p, rel in items if path_key(p) not in done]
    failed = len(errors)
    taken: set = set()
    stream = detect_stream(det, (p for p, _ in todo), args.batch_size, args.workers, streams=args.streams or "auto")
    try:
        for res in tqdm(stream, total=len(todo), desc="detect", unit="img", disable=args.no_progress, file=sys.stderr):
            path, rel = todo[res.index]
            if res.error is not None:
                print(f"\ndbdetect detect: error: {path}: {res.error}", file=sys.stderr)
                failed += 1
                continue
            rec = {
                "path": str(path),
                "width": int(res.shape[1]),
                "height": int(res.shape[0]),
                "polygons": [d.to_dict()["polygon"] for d in res.detections],
                "scores": [d.to_dict()["score"] for d in res.detections],
            }
            if args.vis is not None or args.crops is not None:
                crops = _write_pictures(args, path, rel, res.detections, inputs, taken)
                if args.crops is not None:
                    rec["crops"] = crops
            if out is not None:
                out.write_record(rec)
            else:
                print(json.dumps(rec, ensure_ascii=False), flush=True)
    finally:
        if out is not None:
            out.close()
    if failed:
        print(
            f"dbdetect detect: {failed} input(s) failed, {len(todo) - (failed - len(errors))} image(s) processed",
            file=sys.stderr,
        )
    return 1 if failed else 0
