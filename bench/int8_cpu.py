"""torch int8 recipes against fp32 on this CPU, and on the kernels of a CPU without VNNI.

For each recipe this exports a ``.torchscript`` file (calibrated on ICDAR 2015 training
images ``img_1..img_900``), then scores it and fp32 side by side, image by image (the
two timed interleaved, so a slow spell hits both), on two sets of 100 images:

* ``ic15``: ICDAR 2015 (words); ``--ic15-split val`` is the held-out ``img_901..img_1000``
  of the training set (choices are made there), ``test`` the first 100 test images;
* ``lines``: MSRA-TD500 training images (text lines; none is used for calibration).

``--kernels avx2`` runs the scoring in a child process on the int8 kernels an x86 CPU
without VNNI runs (torch's fbgemm engine, ``FBGEMM_ENABLE_INSTRUCTIONS=AVX2``, oneDNN and
ATen capped at AVX2), whatever this CPU is: H there is what such a CPU gets. Its time
ratio is only indicative: this CPU's cache and clock are not an AVX2 CPU's.

``--recipe ort-int8`` adds onnxruntime's static int8 (``dbdetect export --int8``) to the table.

    python bench/int8_cpu.py --model ppocrv4 --recipe w7 --recipe ort-int8 [--kernels native --kernels avx2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA  # noqa: E402

_EARLY = ("backbone.stem", "backbone.stages.0")
_DECONVS = ("head.binarize.up1", "head.binarize.up2")
# recipe -> (activation bits, weight bits, fp32 modules)
RECIPES = {
    "w7": (8, 7, _EARLY + _DECONVS),
    "a7": (7, 8, _EARLY + _DECONVS),
    "a7-int8-deconv": (7, 8, _EARLY),
    "vnni-only": (8, 8, _EARLY),
    "8bit-deconv-fp32": (8, 8, _EARLY + _DECONVS),
}
ORT = "ort-int8"  # onnxruntime static int8 as `dbdetect export --int8` writes it (s8 7-bit weights)
AVX2_ENV = {
    "DBDETECT_INT8_ENGINE": "fbgemm",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
}
SETTINGS = dict(limit_side_len=736, thresh=0.3, box_thresh=0.5, unclip_ratio=1.6)


def export(model: str, recipe: str, out: Path, data: Path, n: int) -> Path:
    from dbdetect.deploy import torch_int8 as int8_torch
    from dbdetect.export import quantize, to_onnx

    calib = [data / "icdar2015" / "train" / "images" / f"img_{i}.jpg" for i in range(1, 901)]
    if recipe == ORT:
        fp32_file = to_onnx(model, out.with_suffix(".fp32.onnx"), overwrite=True)
        return quantize(fp32_file, out.with_suffix(".onnx"), calib, n=n, overwrite=True, progress=False)
    int8_torch.ACTIVATION_BITS, int8_torch.WEIGHT_BITS, fp32 = RECIPES[recipe]
    return int8_torch.quantize_torch(model, out, calib, n=n, fp32_modules=fp32, overwrite=True, progress=False)


def sets(data: Path, split: str, limit: int):
    from dbdetect.data import read_folder

    if split == "val":
        ic15 = [s for s in read_folder(data / "icdar2015" / "train") if int(s.image_path.stem[4:]) > 900]
    else:
        ic15 = sorted(read_folder(data / "icdar2015" / "test"), key=lambda s: int(s.image_path.stem[4:]))
    lines = read_folder(data / "msra_td500" / "train")
    return {"ic15": ic15[:limit], "lines": lines[-limit:]}


def score(model: str, files: dict, data: Path, split: str, limit: int, threads: int) -> dict:
    """H of fp32 and each file on each set, and each file's time over fp32's (interleaved)."""
    import torch

    from dbdetect import Detector
    from dbdetect.evaluate import evaluate_detections

    torch.set_num_threads(threads)
    dets = {"fp32": Detector(model, **SETTINGS)}
    out: dict = {}
    for name, path in files.items():
        try:
            dets[name] = Detector(path, **SETTINGS)
        except ValueError as exc:  # a file this CPU's kernels would get wrong
            out[name] = {"refused": str(exc)}
    out.update({name: {} for name in dets})
    for set_name, samples in sets(data, split, limit).items():
        found = {name: [] for name in dets}
        spent = {name: 0.0 for name in dets}
        for s in samples:
            for name, det in dets.items():
                t0 = time.perf_counter()
                found[name].append(det(s.image_path))
                spent[name] += time.perf_counter() - t0
        for name in dets:
            out[name][set_name] = round(100 * evaluate_detections(samples, found[name])["hmean"], 2)
            out[name][set_name + "_time_ratio"] = round(spent[name] / spent["fp32"], 3)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="ppocrv4")
    p.add_argument("--recipe", action="append", choices=sorted(RECIPES) + [ORT])
    p.add_argument("--kernels", action="append", choices=("native", "avx2"))
    p.add_argument("--ic15-split", choices=("val", "test"), default="val")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--calib-n", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--score-files", help=argparse.SUPPRESS)  # the child process's job
    a = p.parse_args(argv)
    if a.score_files:
        print(json.dumps(score(a.model, json.loads(a.score_files), a.data, a.ic15_split, a.limit, a.threads)))
        return
    recipes, kernels = a.recipe or ["w7"], a.kernels or ["native", "avx2"]
    with tempfile.TemporaryDirectory() as tmp:
        files = {r: str(export(a.model, r, Path(tmp) / f"{r}.torchscript", a.data, a.calib_n)) for r in recipes}
        for k in kernels:
            env = dict(os.environ, **(AVX2_ENV if k == "avx2" else {}))
            cmd = [
                sys.executable,
                __file__,
                "--model",
                a.model,
                "--score-files",
                json.dumps(files),
                "--ic15-split",
                a.ic15_split,
                "--limit",
                str(a.limit),
                "--threads",
                str(a.threads),
                "--data",
                str(a.data),
            ]
            run = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if run.returncode:
                sys.exit(f"scoring on {k} kernels failed:\n{run.stderr[-3000:]}")
            res = json.loads(run.stdout)
            print(
                f"\n{a.model}, {k} kernels, ICDAR 2015 {a.ic15_split}[:{a.limit}] and MSRA-TD500 train[-{a.limit}:]"
                f" at side 736 ({a.threads} threads)"
            )
            print(f"{'path':<20} {'ic15 H':>7} {'lines H':>8} {'time / fp32':>12}")
            for name, r in res.items():
                if "refused" in r:
                    print(f"{name:<20} refused by Detector: {r['refused'][:90]}...")
                    continue
                ratio = (r["ic15_time_ratio"] + r["lines_time_ratio"]) / 2
                note = "  (onnxruntime: this CPU's own kernels)" if name == ORT and k == "avx2" else ""
                print(f"{name:<20} {r['ic15']:>7.2f} {r['lines']:>8.2f} {ratio:>11.3f}x{note}")


if __name__ == "__main__":
    main()
