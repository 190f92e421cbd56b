"""``import dbdetect`` time and detection speed of this tree against an earlier revision, side by side.

The earlier revision's ``src/`` is unpacked into a temporary folder and given this
build's native module (the script refuses when ``csrc/`` differs, so both run the
same C++). Each round runs one subprocess per tree, the trees taking turns, so a
drift of the machine's speed hits both alike.

    python bench/layout_speed.py --base e1b9016 --images 40 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, ROOT

IMPORT = "import time; t = time.perf_counter(); import dbdetect; print(json.dumps(time.perf_counter() - t))"
DETECT = """
import json, sys, time, torch
import dbdetect
torch.set_num_threads({threads})
paths = json.loads(sys.argv[1])
det = dbdetect.Detector("ppocrv4")
imgs = [dbdetect.load_image(p) for p in paths]
det(imgs[0])
t = time.perf_counter()
n = sum(len(det(im)) for im in imgs)
print(json.dumps([(time.perf_counter() - t) / len(imgs), n]))
"""


def unpack(rev: str, into: Path) -> Path:
    """``src/`` of ``rev`` in ``into``, with this build's native module and the bundled weights."""
    if subprocess.run(["git", "diff", "--quiet", rev, "HEAD", "--", "csrc"], cwd=ROOT).returncode:
        raise SystemExit(f"csrc/ differs between {rev} and HEAD: both trees must run the same native code")
    blob = subprocess.run(["git", "archive", rev, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    import dbdetect._native as native

    native_file = Path(native.__file__)
    (into / "src" / "dbdetect" / native_file.name).write_bytes(native_file.read_bytes())
    (into / "weights").symlink_to(ROOT / "weights")
    return into / "src"


def run(src: Path, code: str, *args: str) -> object:
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + code, *args], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise SystemExit(f"{src}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="e1b9016", help="the earlier revision (default: before the package layout)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA / "icdar2015" / "test" / "images")
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--imports", type=int, default=15, help="import timings per tree")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    paths = json.dumps([str(p) for p in sorted(a.data.glob("*.jpg"))[: a.images]])
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"base": unpack(a.base, Path(tmp)), "this": ROOT / "src"}
        imports: dict[str, list[float]] = {k: [] for k in trees}
        for _ in range(a.imports):
            for name, src in trees.items():
                imports[name].append(float(run(src, IMPORT)))  # type: ignore[arg-type]
        speed: dict[str, list[float]] = {k: [] for k in trees}
        boxes: dict[str, int] = {}
        for _ in range(a.rounds):
            for name, src in trees.items():
                sec, n = run(src, DETECT.format(threads=a.threads), paths)  # type: ignore[misc]
                speed[name].append(sec)
                boxes[name] = n
    print(f"base {a.base} vs this tree; {a.images} ICDAR 2015 test images, ppocrv4, {a.threads} threads")
    print("| measure | base | this | this / base |")
    print("|---|---|---|---|")
    bi, ti = (statistics.median(imports[k]) * 1e3 for k in ("base", "this"))
    print(f"| import dbdetect (median of {a.imports}) | {bi:.1f} ms | {ti:.1f} ms | {ti / bi:.3f} |")
    bd, td = (statistics.median(speed[k]) * 1e3 for k in ("base", "this"))
    print(f"| detection per image (median of {a.rounds} rounds) | {bd:.1f} ms | {td:.1f} ms | {td / bd:.3f} |")
    same = "same" if boxes["base"] == boxes["this"] else "DIFFER"
    print(f"| boxes found | {boxes['base']} | {boxes['this']} | {same} |")


if __name__ == "__main__":
    main()
