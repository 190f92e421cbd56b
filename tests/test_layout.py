"""The package's import graph: arrows only point down the floors below, and no circle.

Each floor lists module-name prefixes; a module may import from its own floor (if that
makes no circle) or from any floor below, never from one above. Imports inside
functions count: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dbdetect"

# top to bottom; written once, here
FLOORS = [
    ("commands", ["dbdetect.__main__", "dbdetect.cli", "dbdetect.train"]),
    (
        "old import paths",
        ["dbdetect.export", "dbdetect.int8_torch", "dbdetect.int8_gates", "dbdetect.onnx_backend"]
        + ["dbdetect.distributed", "dbdetect.evaluate", "dbdetect.tune", "dbdetect.losses", "dbdetect.ema"],
    ),
    ("training", ["dbdetect.training"]),
    ("serve", ["dbdetect.serve"]),
    ("evaluation", ["dbdetect.evaluation"]),
    ("scale", ["dbdetect.scale"]),
    ("deploy", ["dbdetect.deploy"]),
    (
        "detector",
        [
            "dbdetect.detector",
            "dbdetect.pipeline",
            "dbdetect.plan_cache",
            "dbdetect.batching",
            "dbdetect.visualize",
            "dbdetect.crops",
        ],
    ),
    ("runtime", ["dbdetect.runtime"]),
    (
        "core",
        [
            "dbdetect.models",
            "dbdetect.data",
            "dbdetect.postprocess",
            "dbdetect.labels",
            "dbdetect.preprocess",
            "dbdetect.imageio",
            "dbdetect.memory",
            "dbdetect.jsonl",
            "dbdetect.files",
            "dbdetect.defaults",
            "dbdetect.errors",
            "dbdetect._native",
        ],
    ),
]
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports(path: Path, name: str) -> set[str]:
    """The dbdetect modules ``path`` imports (``from .x import y``: ``x.y`` when that is a module)."""
    known = modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dbdetect"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("dbdetect"):
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            found.update(subs or [target])
    found.discard("dbdetect")  # the package root (__version__): everyone may read it
    return found


def floor_of(name: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(FLOORS):
        for p in prefixes:
            if name == p or name.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    if best is None:
        raise AssertionError(f"{name} is on no floor: add it to FLOORS in {Path(__file__).name}")
    return best[0]


def graph() -> dict[str, set[str]]:
    return {name: imports(path, name) for name, path in modules().items() if name != "dbdetect"}


def test_every_module_has_a_floor():
    for name in graph():
        floor_of(name)


def test_arrows_point_down():
    up = [
        f"{a} ({FLOORS[floor_of(a)][0]}) imports {b} ({FLOORS[floor_of(b)][0]})"
        for a, deps in graph().items()
        for b in deps
        if floor_of(b) < floor_of(a)
    ]
    assert not up, "imports that point up:\n" + "\n".join(up)


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_circle():
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_checks_see_a_circle_and_an_upward_arrow():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert floor_of("dbdetect.runtime.onnx") > floor_of("dbdetect.deploy.onnx_int8")


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_over_500_lines(name):
    n = len(modules()[name].read_text().splitlines())
    assert n <= MAX_LINES, f"{name} has {n} lines (at most {MAX_LINES}): split it into named steps"


def test_old_import_paths_still_work():
    import importlib

    for old, new in [
        ("dbdetect.int8_torch", "dbdetect.deploy.torch_int8"),
        ("dbdetect.int8_gates", "dbdetect.deploy.int8_gates"),
        ("dbdetect.onnx_backend", "dbdetect.runtime.onnx"),
        ("dbdetect.distributed", "dbdetect.scale.ray_data"),
        ("dbdetect.evaluate", "dbdetect.evaluation.protocol"),
        ("dbdetect.tune", "dbdetect.evaluation.tune"),
        ("dbdetect.losses", "dbdetect.training.losses"),
        ("dbdetect.ema", "dbdetect.training.ema"),
    ]:
        assert importlib.import_module(old) is importlib.import_module(new)
    from dbdetect.export import DEFAULT_OPSET, calibration_paths, quantize, to_onnx  # noqa: F401
    from dbdetect.int8_torch import quantize_torch  # noqa: F401
    from dbdetect.train import HPARAMS, add_parser, lr_lambda_factory, make_loss, plot_metrics, run  # noqa: F401


# every name the README and the docs tell users to import
DOCUMENTED = {
    "dbdetect": ["detect", "Detector", "Detection", "draw", "crop", "to_json", "load_image", "models", "__version__"],
    "dbdetect.models": ["create", "list_models", "register_model", "DBNet", "fuse", "cfg_of"],
    "dbdetect.export": ["to_onnx", "quantize", "calibration_paths", "DEFAULT_OPSET"],
    "dbdetect.tune": ["tune", "save_tuned", "Grid", "format_table"],
    "dbdetect.evaluate": ["evaluate_model"],
    "dbdetect.training": ["fit", "FitResult", "read_recipe", "HPARAMS"],
    "dbdetect.pipeline": ["detect_stream"],
    "dbdetect.distributed": ["detect_dataset"],
    "dbdetect.cli": ["main", "build_parser", "UserError"],
    "dbdetect.data": ["load_samples", "Sample", "FORMATS"],
}


@pytest.mark.parametrize("module", sorted(DOCUMENTED))
def test_every_documented_name_imports(module):
    import importlib

    mod = importlib.import_module(module)
    missing = [n for n in DOCUMENTED[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lacks {missing}"
