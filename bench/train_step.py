"""How much of a training step waits for data, at --workers 1 and 2, side by side.

Workloads:
  1. ICDAR 2015 training images (1280x720, ~14 quads each);
  2. the dense page of bench/labels.py (300 word quads + 30 curved 16-point
     polygons on 1280x720), drawn on noise and saved as JPEG, 8 variants.

Each step is what ``dbdetect train`` runs: the trainer's DataLoader
(DetDataset augmentation + DB targets, EpochBatchSampler, forkserver workers)
feeding forward, DB loss, backward and an AdamW step of the model on
``--threads`` torch threads. The wait is the time spent in ``next(loader)``;
its share is wait / (wait + the rest of the step).

The four loaders (2 workloads x 2 worker counts) stay alive and are visited
in turn, ``--rounds`` times, so load from other processes hits all alike.
On each visit the first ``2 * workers + 1`` steps are not measured: a
loader's workers fill their prefetch queue while the others run, which would
hide its cost.

Usage: python bench/train_step.py [--data ../shared/data] [--steps 4] [--rounds 2]
       [--batch-size 8] [--size 640] [--threads 2] [--model ppocrv4] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from _common import DEFAULT_DATA  # noqa: E402
from labels import H, W, dense_page  # noqa: E402  (bench/labels.py; puts src/ on the path)

from dbdetect import models  # noqa: E402
from dbdetect.data import load_samples  # noqa: E402
from dbdetect.data.dataset import DetDataset, EpochBatchSampler  # noqa: E402
from dbdetect.train import HPARAMS, apply_bn_mode, make_loader, make_loss, param_groups  # noqa: E402


def write_dense_pages(folder: Path, n: int = 8) -> Path:
    """``n`` dense pages as an ICDAR-style folder (polygon format labels)."""
    (folder / "images").mkdir(parents=True)
    (folder / "gts").mkdir()
    for k in range(n):
        rng = np.random.default_rng(k)
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        polys, tags = dense_page(seed=k)
        lines = []
        for p, tag in zip(polys, tags):
            cv2.fillPoly(img, [np.round(p).astype(np.int32)], (30, 30, 30))
            lines.append(",".join(f"{v:g}" for v in np.asarray(p, float).ravel()) + ("," + ("###" if tag else "w")))
        cv2.imwrite(str(folder / "images" / f"page_{k}.jpg"), img)
        (folder / "gts" / f"gt_page_{k}.txt").write_text("\n".join(lines) + "\n")
    return folder


def make_runner(model, loss_fn, opt, device):
    def step(batch):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        preds = model(batch["image"])
        loss, _ = loss_fn(preds, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 5.0)
        opt.step()
        return loss.item()  # waits for the device, so the step's time is all in

    return step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--steps", type=int, default=4, help="measured steps per visit")
    ap.add_argument("--rounds", type=int, default=2, help="visits to each configuration")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the training process")
    ap.add_argument("--model", default="ppocrv4")
    ap.add_argument("--device", default="cpu", help="device of the training step (cpu, cuda)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = models.create(args.model).to(args.device)
    model.train()
    apply_bn_mode(model, False, "frozen")
    opt = torch.optim.AdamW(param_groups(model, 1e-5, 0.1), lr=1e-5)
    step = make_runner(model, make_loss(HPARAMS), opt, args.device)

    with tempfile.TemporaryDirectory() as tmp:
        workloads = {
            "icdar2015": load_samples(args.data / "icdar2015" / "train"),
            "dense page": load_samples(write_dense_pages(Path(tmp) / "dense"), fmt="polygon"),
        }
        configs, iters = [], {}
        for name, samples in workloads.items():
            for workers in (1, 2):
                need = args.rounds * (args.steps + 2 * workers + 1) * args.batch_size
                samples_rep = (samples * (need // len(samples) + 1))[: max(need, len(samples))]
                ds = DetDataset(samples_rep, model.cfg, size=args.size, seed=0)
                sampler = EpochBatchSampler(len(ds), args.batch_size, seed=0)
                loader = make_loader(ds, sampler, workers, args.device, 0)
                configs.append((name, workers))
                iters[(name, workers)] = iter(loader)
        waited = {c: 0.0 for c in configs}
        total = {c: 0.0 for c in configs}
        n = {c: 0 for c in configs}
        print(
            f"{len(configs)} loaders, batch {args.batch_size} at {args.size} px, {args.threads} torch threads, "
            f"{args.rounds} rounds x {args.steps} measured steps each",
            flush=True,
        )
        for r in range(args.rounds):
            for c in configs:
                warm = 2 * c[1] + 1
                for k in range(warm + args.steps):
                    t0 = time.perf_counter()
                    batch = next(iters[c])
                    t1 = time.perf_counter()
                    step(batch)
                    t2 = time.perf_counter()
                    if k >= warm:
                        waited[c] += t1 - t0
                        total[c] += t2 - t0
                        n[c] += 1
                print(
                    f"  round {r + 1}: {c[0]}, {c[1]} worker(s): {1000 * total[c] / n[c]:.0f} ms/step so far",
                    flush=True,
                )
        del iters

    print(f"\n{'workload':<12} {'workers':>7} {'step ms':>8} {'wait ms':>8} {'wait share':>10}")
    for c in configs:
        share = waited[c] / total[c]
        print(
            f"{c[0]:<12} {c[1]:>7} {1000 * total[c] / n[c]:>8.0f} {1000 * waited[c] / n[c]:>8.1f} "
            f"{100 * share:>9.1f}%{'' if share < 0.05 else '  (goal < 5%)'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
