"""torch's own x86 int8 path (FX graph mode, oneDNN/fbgemm) against torch fp32, side by side.

Issue 11 asks whether torch's int8 beats onnxruntime's. This benchmark quantises the
fused eval network with ``torch.ao.quantization.quantize_fx`` (static, per-channel
symmetric int8 weights, uint8 activations over the full range with histogram
calibration), calibrated on ICDAR 2015 *training* images ``img_1..img_900``, and
scores it on the held-out ``img_901..img_1000`` at the model's registry settings,
so no choice here looks at the test set. Images are timed interleaved.

Policies (which parts stay fp32):

* ``all``: everything int8 except ConvTranspose weights, which torch can only
  quantise per tensor;
* ``mixed``: the stem and the first two backbone stages (high resolution, where
  int8 moved the probability map most), PP-LCNetV3's learnable affine blocks and
  the last ConvTranspose + sigmoid stay fp32.

    python bench/torch_int8.py --model ppocrv4_ic15 [--policy all --policy mixed] [--calib-n 32] [--limit N]

The shipped form of this path is ``dbdetect export --int8 --out M.torchscript``
(:mod:`dbdetect.deploy.torch_int8`, stem and first stage fp32); this benchmark keeps the
policies it was studied with. ``torch.ao.quantization`` is deprecated upstream
(torch says it moves to torchao).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA  # noqa: E402

from dbdetect.deploy.torch_int8 import _ScalarAffine, traceable  # noqa: E402

EARLY = ("backbone.stem", "backbone.stages.0", "backbone.stages.1")


def qconfig_mapping(net: nn.Module, policy: str):
    from torch.ao.quantization import HistogramObserver, PerChannelMinMaxObserver, QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.qconfig import default_weight_observer

    act = HistogramObserver.with_args(dtype=torch.quint8, reduce_range=False)  # VNNI: no 7-bit workaround
    qc = QConfig(
        activation=act,
        weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
    )
    mapping = get_default_qconfig_mapping("x86").set_global(qc)
    mapping.set_object_type(nn.ConvTranspose2d, QConfig(activation=act, weight=default_weight_observer))
    if policy == "mixed":
        for name in EARLY:
            mapping.set_module_name(name, None)
        for name, mod in net.named_modules():
            if isinstance(mod, _ScalarAffine):
                mapping.set_module_name(name, None)
        # The map's logits span about -160..80: one uint8 step there is a whole logit.
        mapping.set_module_name("head.binarize.up2", None)
        mapping.set_object_type(torch.sigmoid, None)
    return mapping


def quantize(net: nn.Module, policy: str, calib: list) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    net = traceable(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice, once per call
        prepared = prepare_fx(net, qconfig_mapping(net, policy), example_inputs=(calib[0],))
        with torch.no_grad():
            for x in calib:
                prepared(x)
        return convert_fx(prepared)


def split(data: Path):
    """ICDAR 2015 training images: (calibration pool img_1..900, held-out img_901..1000)."""
    from dbdetect.data import read_folder

    samples = read_folder(data / "icdar2015" / "train")
    num = lambda s: int(Path(s.image_path).stem.split("_")[-1])  # noqa: E731
    return [s for s in samples if num(s) <= 900], sorted((s for s in samples if num(s) > 900), key=num)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--model", default="ppocrv4_ic15")
    ap.add_argument("--policy", action="append", choices=("all", "mixed"), help="repeat; default both")
    ap.add_argument("--calib-n", type=int, default=32, help="calibration images, spread over img_1..900")
    ap.add_argument("--limit", type=int, default=0, help="score the first N held-out images (0: all 100)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    from tqdm import tqdm

    from dbdetect import Detector
    from dbdetect.evaluate import evaluate_detections

    torch.set_num_threads(args.threads)
    pool, held_out = split(args.data)
    if args.limit:
        held_out = held_out[: args.limit]
    det = Detector(args.model, num_threads=args.threads)
    prep = lambda s: torch.from_numpy(det._prepare(det._load(str(s.image_path), None)))[None]  # noqa: E731
    calib = [prep(s) for s in pool[:: max(1, len(pool) // args.calib_n)][: args.calib_n]]
    nets = {"torch fp32": det.model}
    for policy in args.policy or ["all", "mixed"]:
        nets[f"torch int8 ({policy})"] = quantize(det.model, policy, calib)
    names = list(nets)
    times, dets = {n: [] for n in names}, {n: [] for n in names}
    for i, s in enumerate(tqdm(held_out, desc="detect", unit="img")):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            det.model = nets[name]
            t0 = time.perf_counter()
            dets[name].append(det(str(s.image_path)))
            times[name].append(time.perf_counter() - t0)
    print(
        f"\n{len(held_out)} held-out ICDAR 2015 training images, {args.model}, {det.limit_type} side "
        f"{det.limit_side_len}, {args.threads} threads, {len(calib)} calibration images"
    )
    scores = {name: evaluate_detections(held_out, dets[name]) for name in names}
    base_t, base_h = np.mean(times["torch fp32"]), scores["torch fp32"]["hmean"]
    for name, r in scores.items():
        print(
            f"{name:<24}{1000 * np.mean(times[name]):>8.1f} ms {np.mean(times[name]) / base_t:>6.3f}x  "
            f"P {100 * r['precision']:.2f} R {100 * r['recall']:.2f} H {100 * r['hmean']:.2f}  "
            f"dH {100 * (r['hmean'] - base_h):+.2f}"
        )


if __name__ == "__main__":
    main()
