"""dbdetect's backends side by side on ICDAR 2015 test: speed per stage, accuracy, file sizes.

Pipelines, all from the image file to boxes, at the model's registry settings:

* torch fp32: today's ``Detector`` (fused eager torch + native post-processing);
* onnxruntime fp32: the same model exported by ``dbdetect export``;
* onnxruntime int8: that file quantised (``dbdetect export --int8``), calibrated
  on ICDAR 2015 *training* images, never on the scored ones;
* torch int8: torch's own x86 int8, the ``.torchscript`` file of
  ``dbdetect export --int8 --out FILE.torchscript`` (made in the bench cache,
  calibrated on ``--torch-calib-n`` ICDAR 2015 training images, or ``--torch-int8 FILE``);
* reference (ppocrv4/ppocrv3 only): what RapidOCR does with the same weights,
  the original PP-OCR ONNX on onnxruntime, NumPy pre-processing and PaddleOCR's
  Python DBPostProcess (tests/reference_postprocess.py).

Images are timed interleaved, the order of the pipelines rotating from image
to image, so machine noise hits all alike; onnxruntime's idle threads block
instead of spinning, so that they do not take a core from the pipeline that runs
next (see ``blocking_options``). dbdetect's time is split into decode, resize +
normalise, network and post-processing.

    python bench/detect.py [--model ppocrv4] [--limit N] [--threads 2] [--calib-n 100]
    python bench/detect.py --fp32-onnx v4.onnx --int8-onnx v4_int8.onnx   # files made by dbdetect export
    python bench/detect.py --torch-int8 v4_int8.torchscript                 # this torch int8 file
    python bench/detect.py --bundled-int8 [--limit N]     # the bundled int8 models beside their fp32 twins

``--bundled-int8`` runs ``ppocrv4``, ``ppocrv4_ic15`` and ``ppocrv4_td500`` in fp32 and their bundled
int8 files (``ppocrv4_int8`` ...), each at its registry settings, with the RapidOCR reference
(``ppocrv4``'s weights), interleaved image by image, and prints each int8 model's time over its twin's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import CACHE, DEFAULT_DATA, ONNX_WHEELS, onnx_path  # noqa: E402
from reference_postprocess import boxes_from_prob as ref_boxes_from_prob  # noqa: E402

STAGES = ("decode", "prepare", "network", "post")


class ReferencePipeline:
    """ONNX Runtime + NumPy pre-processing + Python post-processing, RapidOCR style."""

    def __init__(self, onnx_file, cfg, limit_side_len, limit_type, threads):
        import onnxruntime as ort

        self.sess = ort.InferenceSession(str(onnx_file), blocking_options(threads), providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name
        self.cfg, self.limit_side_len, self.limit_type = cfg, limit_side_len, limit_type

    def _resize(self, img):
        h, w = img.shape[:2]
        if self.limit_type == "max":
            ratio = self.limit_side_len / max(h, w) if max(h, w) > self.limit_side_len else 1.0
        else:
            ratio = self.limit_side_len / min(h, w) if min(h, w) < self.limit_side_len else 1.0
        rh = int(round(int(h * ratio) / 32) * 32)
        rw = int(round(int(w * ratio) / 32) * 32)
        return cv2.resize(img, (rw, rh))

    def __call__(self, path):
        img = cv2.imread(str(path))  # BGR, as PP-OCR expects
        x = self._resize(img).astype(np.float32) / 255.0
        x = (x - np.array(self.cfg["mean"])) / np.array(self.cfg["std"])
        x = x.transpose(2, 0, 1)[None].astype(np.float32)
        prob = self.sess.run(None, {self.input: x})[0][0, 0]
        polys, _ = ref_boxes_from_prob(
            prob,
            img.shape[:2],
            thresh=self.cfg["thresh"],
            box_thresh=self.cfg["box_thresh"],
            unclip_ratio=self.cfg["unclip_ratio"],
            max_candidates=self.cfg["max_candidates"],
            use_dilation=self.cfg["use_dilation"],
            score_mode=self.cfg["score_mode"],
        )
        return polys


def blocking_options(threads: int):
    """onnxruntime session options whose idle intra-op threads block instead of spinning.

    onnxruntime's threads spin for a while after each run by default; in one process
    with the interleaved torch pipelines that spinning took a core from whichever
    pipeline ran next (a probe on 30 images: torch int8 at 0.613x of torch fp32 beside a
    spinning onnxruntime session, 0.546x beside a blocking one; torch fp32 unchanged).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def no_spinning(det, path: Path, threads: int) -> None:
    """Rebuild the session of ``det`` (an onnxruntime Detector of ``path``) with :func:`blocking_options`."""
    import onnxruntime as ort

    providers = det.runtime.session.session.get_providers()
    det.runtime.session.session = ort.InferenceSession(str(path), blocking_options(threads), providers=providers)


def staged(det, path, clock: dict) -> list:
    """Run ``det`` on one file through its stages, adding each stage's seconds to ``clock``."""
    t0 = time.perf_counter()
    img = det._load(str(path), None)
    t1 = time.perf_counter()
    x = det._prepare(img)[None]
    t2 = time.perf_counter()
    prob = det._forward(x)[0]
    t3 = time.perf_counter()
    dets = det._boxes(prob, img.shape[:2])
    t4 = time.perf_counter()
    for k, a, b in zip(STAGES, (t0, t1, t2, t3), (t1, t2, t3, t4)):
        clock[k] = clock.get(k, 0.0) + (b - a)
    return [d.polygon for d in dets]


def onnx_files(model: str, data: Path, calib_n: int, opset: int) -> tuple[Path, Path]:
    """fp32 and int8 exports of ``model`` in the bench cache (made once; int8 calibrated on ICDAR train)."""
    from dbdetect.export import quantize, to_onnx

    CACHE.mkdir(parents=True, exist_ok=True)
    fp32 = CACHE / f"{model}_fp32_opset{opset}.onnx"
    int8 = CACHE / f"{model}_int8_calib{calib_n}_opset{opset}.onnx"
    if not fp32.exists():
        to_onnx(model, fp32, opset=opset)
    if not int8.exists():
        quantize(fp32, int8, data / "icdar2015" / "train" / "images", n=calib_n)
    return fp32, int8


def torch_int8_file(model: str, data: Path, calib_n: int) -> Path:
    """torch's own int8 of ``model`` in the bench cache (made once; calibrated on ICDAR train)."""
    from dbdetect.deploy.torch_int8 import DEFAULT_OBSERVER, LOGIT_RANGE, SUFFIX, quantize_torch

    CACHE.mkdir(parents=True, exist_ok=True)
    # named by every setting that changes the file, so that an older one is not reused
    path = CACHE / f"{model}_torch_int8_calib{calib_n}_{DEFAULT_OBSERVER}_logits{LOGIT_RANGE:g}{SUFFIX}"
    if not path.exists():
        quantize_torch(model, path, data / "icdar2015" / "train" / "images", n=calib_n)
    return path


def report(names, samples, times, stage_clock, dets, sizes):
    """Per pipeline: mean ms, its ratio to torch fp32, the median per-image ratio, stages, accuracy, size.

    The median of per-image ratios pairs each image's runs, made in one round of the
    pipelines, so a slow spell of this shared machine moves both sides of a ratio; the
    ratio of means is what a long run costs, slow spells included. Both are printed.
    """
    from dbdetect.evaluate import evaluate_detections

    n = len(samples)
    base = np.asarray(times["torch fp32"])
    print(
        f"{'pipeline':<22}{'ms/img':>8}{'ratio':>7}{'median':>8}  {'decode':>7}{'prep':>7}{'network':>8}"
        f"{'post':>6}{'P':>7}{'R':>7}{'H':>7}{'MiB':>6}"
    )
    ratios = {}
    for name in names:
        r = evaluate_detections(samples, dets[name])
        t = np.asarray(times[name])
        ratios[name] = (t.mean() / base.mean(), float(np.median(t / base)))
        split = (
            "".join(f"{1000 * stage_clock[name][k] / n:>{w}.1f}" for k, w in zip(STAGES, (7, 7, 8, 6)))
            if name in stage_clock
            else f"{'(not split)':>28}"
        )
        size = f"{sizes[name]:>6.1f}" if name in sizes else f"{'':>6}"
        print(
            f"{name:<22}{1000 * t.mean():>8.1f}{ratios[name][0]:>6.3f}x{ratios[name][1]:>7.3f}x  {split}"
            f"{100 * r['precision']:>7.2f}{100 * r['recall']:>7.2f}{100 * r['hmean']:>7.2f}{size}"
        )
    measured = ", ".join(
        f"{name} {a:.3f}x (median per image {m:.3f}x)" for name, (a, m) in ratios.items() if "int8" in name
    )
    print(f"goal: int8 <= 0.6x torch fp32 end to end; measured {measured}")


BUNDLED = ("ppocrv4", "ppocrv4_ic15", "ppocrv4_td500")


def run_interleaved(runners: dict, samples, warmup: int, after_warmup=None) -> tuple[dict, dict]:
    """Each image through every pipeline, the order rotating per image; (seconds, detections) per name."""
    from tqdm import tqdm

    names = list(runners)
    for s in samples[:warmup]:
        for run in runners.values():
            run(s.image_path)
    if after_warmup is not None:
        after_warmup()
    times = {name: [] for name in names}
    dets = {name: [] for name in names}
    for i, s in enumerate(tqdm(samples, desc="detect", unit="img")):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter()
            dets[name].append(runners[name](s.image_path))
            times[name].append(time.perf_counter() - t0)
    return times, dets


def bundled_int8(args, samples) -> None:
    """``--bundled-int8``: each bundled int8 model against its fp32 twin (and RapidOCR), one interleaved run."""
    from dbdetect import Detector
    from dbdetect.evaluate import evaluate_detections

    runners = {}
    for model in BUNDLED:
        runners[f"{model} fp32"] = Detector(model, num_threads=args.threads)
        runners[f"{model}_int8"] = Detector(f"{model}_int8", num_threads=args.threads)
    if not args.no_reference:
        v4 = runners["ppocrv4 fp32"]
        ref = ReferencePipeline(onnx_path("ppocrv4"), v4.cfg, v4.limit_side_len, v4.limit_type, args.threads)
        runners["reference (RapidOCR)"] = ref
    times, dets = run_interleaved(runners, samples, args.warmup)
    print(f"\n{len(samples)} ICDAR 2015 test images, {args.threads} threads, each model at its registry settings")
    print(f"{'pipeline':<24}{'ms/img':>8}{'/twin':>8}{'median':>8}{'P':>7}{'R':>7}{'H':>7}")
    goals = []
    for name in runners:
        r = evaluate_detections(samples, dets[name])
        t = np.asarray(times[name])
        twin = name.replace("_int8", " fp32") if name.endswith("_int8") else None
        if twin:
            base = np.asarray(times[twin])
            mean, med = t.mean() / base.mean(), float(np.median(t / base))
            goals.append(f"{name} {mean:.3f}x (median per image {med:.3f}x)")
            ratio = f"{mean:>7.3f}x{med:>7.3f}x"
        else:
            ratio = f"{'':>16}"
        print(
            f"{name:<24}{1000 * t.mean():>8.1f}{ratio}"
            f"{100 * r['precision']:>7.2f}{100 * r['recall']:>7.2f}{100 * r['hmean']:>7.2f}"
        )
    print(f"goal: each int8 model <= 0.6x its fp32 twin end to end; measured {', '.join(goals)}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=0, help="use the first N test images (0: all 500)")
    ap.add_argument("--model", default="ppocrv4", choices=("ppocrv4", "ppocrv3", "ppocrv4_ic15"))
    ap.add_argument("--limit-side-len", type=int, default=None, help="default: the model's registry setting")
    ap.add_argument("--limit-type", default=None, choices=("min", "max"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--calib-n", type=int, default=100, help="ICDAR 2015 train images to calibrate int8 on")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--fp32-onnx", type=Path, help="use this fp32 export instead of making one in the cache")
    ap.add_argument("--int8-onnx", type=Path, help="use this int8 export instead of making one in the cache")
    ap.add_argument("--torch-int8", type=Path, help="use this torch int8 file (dbdetect export ... .torchscript)")
    ap.add_argument("--torch-calib-n", type=int, default=32, help="ICDAR 2015 train images for torch's int8")
    ap.add_argument("--no-torch-int8", action="store_true", help="skip torch's own int8")
    ap.add_argument("--no-reference", action="store_true", help="skip the RapidOCR-style reference pipeline")
    ap.add_argument("--json", type=Path, help="also write every image's seconds per pipeline here")
    ap.add_argument("--bundled-int8", action="store_true", help="the bundled int8 models beside their fp32 twins")
    args = ap.parse_args(argv)

    import torch

    from dbdetect import Detector
    from dbdetect.data import read_folder

    torch.set_num_threads(args.threads)
    samples = read_folder(args.data / "icdar2015" / "test")
    if args.limit:
        samples = samples[: args.limit]
    if args.bundled_int8:
        return bundled_int8(args, samples)
    kw = dict(limit_side_len=args.limit_side_len, limit_type=args.limit_type, num_threads=args.threads)
    if args.fp32_onnx and args.int8_onnx:
        fp32, int8 = args.fp32_onnx, args.int8_onnx
    else:
        fp32, int8 = onnx_files(args.model, args.data, args.calib_n, args.opset)
    dbd = {
        "torch fp32": Detector(args.model, **kw),
        "onnxruntime fp32": Detector(fp32, **kw),
        "onnxruntime int8": Detector(int8, **kw),
    }
    cfg = dbd["torch fp32"]
    for name, path in (("onnxruntime fp32", fp32), ("onnxruntime int8", int8)):
        no_spinning(dbd[name], path, args.threads)
    sizes = {"onnxruntime fp32": fp32.stat().st_size / 2**20, "onnxruntime int8": int8.stat().st_size / 2**20}
    if not args.no_torch_int8:
        tint8 = args.torch_int8 or torch_int8_file(args.model, args.data, args.torch_calib_n)
        dbd["torch int8"] = Detector(tint8, **kw)
        sizes["torch int8"] = tint8.stat().st_size / 2**20
    stage_clock = {name: {} for name in dbd}
    runners = {name: (lambda p, d=d, c=stage_clock[name]: staged(d, p, c)) for name, d in dbd.items()}
    if args.model in ONNX_WHEELS and not args.no_reference:
        ref_onnx = onnx_path(args.model)
        ref = ReferencePipeline(ref_onnx, cfg.cfg, cfg.limit_side_len, cfg.limit_type, args.threads)
        runners["reference (RapidOCR)"] = ref
        sizes["reference (RapidOCR)"] = ref_onnx.stat().st_size / 2**20
    names = list(runners)

    def forget_warmup():  # warm-up runs do not count
        for clock in stage_clock.values():
            clock.clear()

    times, dets = run_interleaved(runners, samples, args.warmup, forget_warmup)

    print(
        f"\n{len(samples)} ICDAR 2015 test images, {args.model}, {cfg.limit_type} side {cfg.limit_side_len}, "
        f"{args.threads} threads, int8 {int8.name}; "
        f"thresholds {dict((k, cfg.post_kwargs[k]) for k in ('thresh', 'box_thresh', 'unclip_ratio'))}"
    )
    report(names, samples, times, stage_clock, dets, sizes)
    if args.json:
        args.json.write_text(json.dumps({"images": [s.image_path.name for s in samples], "seconds": times}))


if __name__ == "__main__":
    main()
