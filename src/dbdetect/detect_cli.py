"""``dbdetect detect PATH...``: detect text in files and folders.

Writes one JSON line per image (path, size, polygons, scores) to ``--out`` or
stdout, and optionally pictures with the polygons drawn to ``--vis DIR``.
A bad image is reported by name and skipped; the exit code is then 1.
Inputs are never written over.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .imageio import IMAGE_EXTENSIONS


def add_parser(sub) -> None:
    p = sub.add_parser("detect", help="detect text in images and folders",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--model", default="ppocrv4", help="registry name or checkpoint path (default: ppocrv4)")
    p.add_argument("--out", type=Path, help="write JSON lines here instead of stdout")
    p.add_argument("--overwrite", action="store_true", help="allow replacing an existing --out file")
    p.add_argument("--vis", type=Path, metavar="DIR", help="write pictures with the detections drawn into DIR")
    p.add_argument("--box-type", choices=("quad", "poly"), default="quad")
    p.add_argument("--limit-side-len", type=int, help="resize limit (default: the model's)")
    p.add_argument("--limit-type", choices=("max", "min"), help="'max' caps the long side, 'min' raises the short side")
    p.add_argument("--thresh", type=float, help="binarisation threshold (default: the model's)")
    p.add_argument("--box-thresh", type=float, help="minimum box score (default: the model's)")
    p.add_argument("--unclip-ratio", type=float, help="box expansion ratio (default: the model's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default=None,
                   help="inference backend (default: onnxruntime for a .onnx model, else torch)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def _collect(paths: list[str]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, path relative to the folder it came from) pairs, and errors for missing paths."""
    found, errors = [], []
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


def _vis_path(vis_dir: Path, rel: Path, taken: set) -> Path:
    base = vis_dir / rel.parent / f"{rel.stem}_det.jpg"
    out, n = base, 1
    while out in taken:
        out = base.with_name(f"{rel.stem}_det{n}.jpg")
        n += 1
    taken.add(out)
    return out


def run(args) -> int:
    import cv2
    from tqdm import tqdm

    from .cli import UserError
    from .detector import Detector
    from .imageio import load_image
    from .visualize import draw

    items, errors = _collect(args.paths)
    for e in errors:
        print(f"dbdetect detect: error: {e}", file=sys.stderr)
    if not items:
        raise UserError("no images to process")
    inputs = {p.resolve() for p, _ in items}
    if args.out is not None:
        if args.out.resolve() in inputs:
            raise UserError(f"--out {args.out} is one of the input images; refusing to overwrite it")
        if args.out.exists() and not args.overwrite:
            raise UserError(f"--out {args.out} already exists (use --overwrite to replace it)")
        args.out.parent.mkdir(parents=True, exist_ok=True)

    det = Detector(
        args.model, device=args.device, limit_side_len=args.limit_side_len, limit_type=args.limit_type,
        thresh=args.thresh, box_thresh=args.box_thresh, unclip_ratio=args.unclip_ratio, box_type=args.box_type,
        backend=args.backend,
    )
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    failed = len(errors)
    taken: set = set()
    try:
        for path, rel in tqdm(items, desc="detect", unit="img", disable=args.no_progress, file=sys.stderr):
            try:
                img = load_image(path)
                dets = det(img)
            except (ValueError, OSError) as exc:
                print(f"\ndbdetect detect: error: {path}: {exc}", file=sys.stderr)
                failed += 1
                continue
            rec = {
                "path": str(path), "width": int(img.shape[1]), "height": int(img.shape[0]),
                "polygons": [d.to_dict()["polygon"] for d in dets],
                "scores": [d.to_dict()["score"] for d in dets],
            }
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            out.flush()  # each finished image is on disk even if the run is interrupted
            if args.vis is not None:
                dst = _vis_path(args.vis, rel, taken)
                if dst.resolve() in inputs:
                    raise UserError(f"visualisation {dst} would overwrite an input image")
                dst.parent.mkdir(parents=True, exist_ok=True)
                ok, buf = cv2.imencode(".jpg", draw(img, dets)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
                if ok:
                    buf.tofile(str(dst))
    finally:
        if out is not sys.stdout:
            out.close()
    if failed:
        print(f"dbdetect detect: {failed} input(s) failed, {len(items) - (failed - len(errors))} image(s) processed",
              file=sys.stderr)
    return 1 if failed else 0
