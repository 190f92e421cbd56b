"""``dbdetect tune``: search input sizes and post-processing on a validation set."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from ..evaluation.protocol import PROTOCOLS
from ..evaluation.tune import (
    SETTING_KEYS,
    Grid,
    _as_module,
    _check_out,
    _check_writable_source,
    format_table,
    save_tuned,
    tune,
)


def _list_of(convert, what):
    def parse(text: str) -> tuple:
        try:
            values = tuple(convert(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one value, got {text!r}")
        return values

    return parse


def _on_off(v: str) -> bool:
    table = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False, "0": False}
    if v.lower() not in table:
        raise ValueError(v)
    return table[v.lower()]


def _score_mode(v: str) -> str:
    if v.lower() not in ("fast", "slow"):
        raise ValueError(v)
    return v.lower()


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``dbdetect tune``."""
    g = Grid()

    def csv(values):
        return ",".join(
            ("on" if v else "off") if isinstance(v, bool) else v if isinstance(v, str) else f"{v:g}" for v in values
        )

    p = subparsers.add_parser(
        "tune",
        help="choose input size and post-processing on a validation set",
        description="Score a grid of input sizes and post-processing settings on a labelled validation set "
        "(ICDAR 2015 protocol, one forward pass per image and size), print the table, and with "
        "--out write the best settings into a copy of the checkpoint (Detector and dbdetect eval "
        "use them by default). Lists are comma-separated.",
    )
    p.add_argument(
        "--data", required=True, help="validation set: dataset folder (images/ + gts/) or PaddleOCR label file"
    )
    p.add_argument(
        "--model",
        default="ppocrv4",
        help="checkpoint path or model name (default: ppocrv4); an exported .onnx or .torchscript "
        "file is scored too, without --out",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="take the grid from the 'tune' section of a recipe file (or a bundled recipe's name); "
        "grid flags given here override it",
    )
    p.add_argument(
        "--sizes",
        type=_list_of(int, "integers"),
        help=f"input sizes, limit_side_len (default {csv(g.limit_side_len)})",
    )
    p.add_argument("--limit-type", choices=("min", "max"), default=None, help="resize rule (default: the model's)")
    p.add_argument(
        "--thresh",
        type=_list_of(float, "numbers"),
        help=f"binarisation thresholds (default {csv(g.thresh)})",
    )
    p.add_argument(
        "--box-thresh",
        type=_list_of(float, "numbers"),
        help=f"box score thresholds (default {csv(g.box_thresh)})",
    )
    p.add_argument(
        "--unclip-ratio",
        type=_list_of(float, "numbers"),
        help=f"box expansion ratios (default {csv(g.unclip_ratio)})",
    )
    p.add_argument(
        "--dilation",
        type=_list_of(_on_off, "on/off values"),
        help=f"2x2 dilation of the bitmap: on, off or on,off (default {csv(g.use_dilation)})",
    )
    p.add_argument(
        "--score-mode",
        type=_list_of(_score_mode, "score modes"),
        help=f"box scoring: fast (bounding rectangle) and/or slow (the contour) (default {csv(g.score_mode)})",
    )
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=None,
        help="the score to rank by: icdar2015 (default) or doctr (docTR's straight-box protocol, for documents)",
    )
    p.add_argument("--out", default=None, help="write the best settings into this new checkpoint file")
    p.add_argument("--json", default=None, help="write every row (and the grid) as JSON here")
    p.add_argument("--overwrite", action="store_true", help="allow replacing an existing --out / --json")
    p.add_argument("--show", type=int, default=20, help="rows to print (default 20; 0 = all)")
    p.add_argument("--format", default="auto", help="label format: auto, icdar2015, polygon, totaltext, paddle, funsd")
    p.add_argument("--root", default=None, help="image root for PaddleOCR label files")
    p.add_argument("--lenient", action="store_true", help="skip malformed label lines with a warning")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=run)
    return p


# flag (argparse dest) -> (Grid field, parser of a comma-separated list)
_GRID_FLAGS = {
    "sizes": ("limit_side_len", _list_of(int, "integers")),
    "thresh": ("thresh", _list_of(float, "numbers")),
    "box_thresh": ("box_thresh", _list_of(float, "numbers")),
    "unclip_ratio": ("unclip_ratio", _list_of(float, "numbers")),
    "dilation": ("use_dilation", _list_of(_on_off, "on/off values")),
    "score_mode": ("score_mode", _list_of(_score_mode, "score modes")),
}


# settings of the tune section that take one value
_SCALARS = {"limit_type": ("min", "max"), "protocol": PROTOCOLS}


def _grid_of_recipe(path: str) -> dict:
    """The ``tune`` section of a recipe, as flag values (the file's lists read as the flags read theirs)."""
    from ..training.recipe import read_recipe

    section = read_recipe(path).get("tune") or {}
    values = {}
    for raw, value in section.items():
        key = str(raw).replace("-", "_")
        if key in _SCALARS:
            if value not in _SCALARS[key]:
                raise ValueError(f"{path}: tune: {raw} must be one of {', '.join(_SCALARS[key])}, got {value!r}")
            values[key] = value
            continue
        if key not in _GRID_FLAGS:
            known = ", ".join([*_SCALARS, *_GRID_FLAGS])
            raise ValueError(f"{path}: tune: unknown setting '{raw}' (known: {known})")
        items = value if isinstance(value, list) else [value]
        text = ",".join(("on" if v else "off") if isinstance(v, bool) else str(v) for v in items)
        try:
            values[key] = _GRID_FLAGS[key][1](text)
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"{path}: tune: {raw}: {exc}") from None
    return values


def _grid(args) -> Grid:
    """The grid: flags, over the --config file's 'tune' section, over the defaults."""
    from_file = _grid_of_recipe(args.config) if args.config else {}
    for key in _SCALARS:
        if getattr(args, key) is None and key in from_file:
            setattr(args, key, from_file[key])
    chosen = {}
    for flag, (field, _) in _GRID_FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            value = from_file.get(flag)
        if value is not None:
            chosen[field] = value
    return Grid(**chosen)


def run(args) -> int:
    """``dbdetect tune``: search, print, and optionally write the tuned checkpoint."""
    import time

    import torch

    from ..data import load_samples

    grid = _grid(args)
    # fail before the long search, not after it
    if args.out:
        _check_writable_source(args.model)
    out = _check_out(args.out, args.overwrite) if args.out else None
    json_out = _check_out(args.json, args.overwrite) if args.json else None
    samples = load_samples(args.data, fmt=args.format, root=args.root, lenient=args.lenient)
    if args.limit is not None:
        samples = samples[: args.limit]
    if args.threads:
        torch.set_num_threads(args.threads)
    net = _as_module(args.model)
    t0 = time.perf_counter()
    protocol = args.protocol or "icdar2015"
    rows = tune(net, samples, grid, limit_type=args.limit_type, device=args.device, protocol=protocol)
    seconds = round(time.perf_counter() - t0, 1)
    print(format_table(rows, args.show or None))
    best = rows[0]
    print(
        f"best of {len(rows)} settings on {len(samples)} images ({seconds} s): "
        + " ".join(f"{k}={best[k]}" for k in SETTING_KEYS)
        + f"  hmean {best['hmean']:.4f}"
    )
    info = {
        "data": str(args.data),
        "images": len(samples),
        "protocol": protocol,
        "grid": asdict(grid),
        **{k: best[k] for k in ("precision", "recall", "hmean")},
    }
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"model": str(args.model), **info, "rows": rows}, indent=1))
        print(f"rows written to {json_out}")
    if out:
        save_tuned(
            args.model if isinstance(args.model, str) and Path(args.model).is_file() else net,
            best,
            out,
            overwrite=args.overwrite,
            info=info,
        )
        print(f"tuned checkpoint written to {out}")
    else:
        print("pass --out FILE to write these settings into a checkpoint")
    return 0
