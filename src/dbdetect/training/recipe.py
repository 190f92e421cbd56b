"""Recipe files: a run's settings as YAML, and the resolved settings written back into the run folder.

A recipe is a mapping of ``dbdetect train`` options, written with underscores
or dashes (``batch_size: 16`` or ``batch-size: 16``), plus two sections:

``split``
    the held-out split the recipe was chosen on: ``source`` (a dataset),
    ``held_out`` (a rule of :mod:`dbdetect.data.split`) and optionally
    ``format``. Without ``train``, the run trains on the rest and validates on
    the held-out images; both parts are written into ``RUN/split/``.
``tune``
    the ``dbdetect tune`` grid the post-processing was chosen with
    (``dbdetect tune --config`` reads it); training ignores it.

Precedence: built-in defaults < the file < command-line flags (or keyword
arguments of :func:`dbdetect.training.fit`). The resolved settings are written
to ``RUN/config.yaml``; ``--resume`` reads them back, so a resumed run keeps
its recipe. Relative data paths in a file are read from ``data_root`` (default:
the working directory).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .config import HPARAMS

# run-time settings: free to change on resume; None means "not set"
RUN_SETTINGS: dict[str, Any] = {
    "train": None,
    "train_weight": None,
    "val": None,
    "format": None,
    "root": None,
    "val_format": None,
    "val_root": None,
    "data_root": None,
    "out": None,
    "resume": None,
    "overwrite": False,
    "device": None,
    "workers": 2,
    "threads": None,
    "val_limit_side_len": None,
    "val_limit_type": None,
    "val_box_thresh": None,
    "val_limit": None,
    "val_every": 1,
    "save_every": 0,
    "keep_snapshots": False,
    "log_every": 10,
    "time_limit": None,
    "stop_after": None,
    "no_progress": False,
}
SECTIONS = ("split", "tune")
# settings of one session or one machine: a resumed run takes them afresh, never from config.yaml
SESSION_ONLY = ("out", "resume", "overwrite", "device", "workers", "threads", "time_limit", "stop_after", "no_progress")
_LISTS = ("train", "train_weight", "format", "root")
_PATHS = ("train", "val", "root", "val_root", "resume")

# the type of each setting whose default is None (the others take their default's type)
_TYPES: dict[str, type | tuple[type, ...]] = {
    "warmup_steps": int,
    "size_max": int,
    "max_steps": int,
    "ema": (int, float),
    "val_limit_side_len": int,
    "val_box_thresh": (int, float),
    "val_limit": int,
    "threads": int,
    "time_limit": (int, float),
    "stop_after": int,
    "train_weight": (int, float),
}


def _type_of(key: str) -> type | tuple[type, ...]:
    if key in _TYPES:
        return _TYPES[key]
    default = {**HPARAMS, **RUN_SETTINGS}[key]
    if isinstance(default, bool):
        return bool
    if isinstance(default, float):
        return (int, float)
    return type(default) if default is not None else str


def _number(v: Any, want: type | tuple[type, ...]) -> Any:
    """YAML 1.1 reads ``3e-4`` (no dot) as a string: take it as the number it spells."""
    if isinstance(v, str) and float in _as_tuple(want):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _check_value(key: str, value: Any, where: str) -> Any:
    want = _type_of(key)
    items = value if key in _LISTS and isinstance(value, list) else [value]
    items = [_number(v, want) for v in items]
    value = items if key in _LISTS and isinstance(value, list) else items[0]
    for v in items:
        ok = isinstance(v, want) and not (isinstance(v, bool) and want is not bool and bool not in _as_tuple(want))
        if not ok:
            names = " or ".join(t.__name__ for t in _as_tuple(want))
            raise ValueError(f"{where}: {key} must be {names}, got {v!r}")
    if key in _LISTS and not isinstance(value, list):
        return [value]
    return value


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def normalize(options: dict[str, Any], where: str) -> dict[str, Any]:
    """``options`` with underscore keys, each checked to be a setting of the right type."""
    known = set(HPARAMS) | set(RUN_SETTINGS)
    out: dict[str, Any] = {}
    for raw, value in options.items():
        key = str(raw).replace("-", "_")
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ValueError(f"{where}: '{raw}' must be a mapping")
            out[key] = value
            continue
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known | set(SECTIONS)), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ValueError(f"{where}: unknown setting '{raw}'{hint}")
        out[key] = value if value is None else _check_value(key, value, where)
    return out


def bundled_recipes() -> dict[str, Path]:
    """The recipes shipped with the package (``dbdetect/recipes``, or ``<repo>/recipes`` in a source tree)."""
    here = Path(__file__).resolve()
    for folder in (here.parents[1] / "recipes", here.parents[3] / "recipes"):
        if folder.is_dir():
            return {p.stem: p for p in sorted(folder.glob("*.yaml"))}
    return {}


def recipe_path(name: str | Path) -> Path:
    """A recipe file: ``name`` itself when it is a file, else the bundled recipe of that name."""
    path = Path(name)
    if path.is_file():
        return path
    bundled = bundled_recipes()
    if str(name) in bundled:
        return bundled[str(name)]
    known = ", ".join(bundled) or "none"
    raise FileNotFoundError(f"recipe file not found: {path} (bundled recipes: {known})")


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The settings of a YAML recipe file (or a bundled recipe's name), checked (see the module doc)."""
    import yaml

    path = recipe_path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a mapping of settings, got {type(data).__name__}")
    return normalize(data, str(path))


def _with_data_root(options: dict[str, Any], root: Path) -> dict[str, Any]:
    """Relative data paths of a file, read from ``root``."""
    out = dict(options)

    def under(p: str) -> str:
        return str((root / p).absolute()) if not Path(p).is_absolute() else p

    for key in _PATHS:
        if out.get(key) is not None:
            out[key] = [under(p) for p in out[key]] if isinstance(out[key], list) else under(out[key])
    if isinstance(out.get("split"), dict) and out["split"].get("source"):
        out["split"] = {**out["split"], "source": under(str(out["split"]["source"]))}
    return out


def resolve(config: str | Path | dict[str, Any] | None, overrides: dict[str, Any]) -> SimpleNamespace:
    """The settings of a run: defaults, then ``config`` (a file or a mapping), then ``overrides``.

    Hyper-parameters not set anywhere stay None, so that a resumed run takes them
    from its checkpoint (see :func:`dbdetect.training.config.resolve_hparams`).
    """
    given = normalize({k: v for k, v in overrides.items() if v is not None}, "keyword arguments")
    if config is None and given.get("resume"):
        saved = Path(given["resume"])
        saved = (saved if saved.is_dir() else saved.parent) / "config.yaml"
        if saved.is_file():
            config = saved
    from_file: dict[str, Any] = {}
    if isinstance(config, dict):
        from_file = normalize(config, "config")
    elif config is not None:
        from_file = read_recipe(config)
        if Path(config).name == "config.yaml" and given.get("resume"):
            from_file = {k: v for k, v in from_file.items() if k not in SESSION_ONLY}
    root = Path(given.get("data_root") or from_file.get("data_root") or ".")
    from_file = _with_data_root(from_file, root)
    merged = {**{k: None for k in HPARAMS}, **RUN_SETTINGS, "split": None, "tune": None, **from_file, **given}
    return SimpleNamespace(**merged)


def dump(settings: dict[str, Any], path: Path) -> None:
    """Write resolved settings as YAML (atomically; keys in the order given)."""
    import yaml

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(settings, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(path)
