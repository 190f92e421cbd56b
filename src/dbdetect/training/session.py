"""One training session: set-up, epochs, validation, best-model choice and checkpoints."""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ..deploy import qat
from . import qat_start, recipe
from .checkpoints import atomic_save, rng_state, set_rng_state
from .config import VAL_SETTINGS
from .loader import make_loader, multiscale_sizes
from .losses import make_loss
from .optim import apply_bn_mode, lr_lambda_factory, param_groups, set_backbone_frozen
from .plots import plot_metrics


class Session:
    """One training session, in the order it runs.

    Set-up: ``__init__`` (data, model, optimiser, resume state, loader, run
    folder). Training: :meth:`train` runs epochs; :meth:`_run_epoch` iterates
    the batches of one, :meth:`_step` is one optimiser step. End of an epoch:
    :meth:`_end_epoch` (validation in :meth:`_validate`, best-model choice,
    logging). Checkpoints: :meth:`_checkpoint`.
    """

    def __init__(self, args, hp, ckpt, out: Path, data: dict, device, rank: int, world: int):
        import torch

        self.args, self.hp, self.out, self.data, self.device = args, hp, out, data, device
        self.rank, self.world, self.is_main = rank, world, rank == 0
        torch.manual_seed(hp["seed"])
        random.seed(hp["seed"])
        np.random.seed(hp["seed"])
        self._load_data()
        self._build_model(ckpt)
        self._build_optimizer()
        self._restore(ckpt)
        self._build_loader()
        self._open_run_folder(ckpt)

    # ---- set-up
    def _load_data(self):
        from ..data import load_samples
        from ..data.mixing import load_train_sets

        self.train_samples, self.set_lengths = load_train_sets(self.data["train_sets"], self.hp["lenient"])
        self.val_samples = None
        if self.data["val"] and self.is_main:
            self.val_samples = load_samples(
                self.data["val"], fmt=self.data["val_format"], root=self.data["val_root"], lenient=self.hp["lenient"]
            )
            if self.args.val_limit is not None:
                self.val_samples = self.val_samples[: self.args.val_limit]

    def _build_model(self, ckpt):
        from .. import models

        hp = self.hp
        # A resumed checkpoint carries its own architecture, weights and cfg: the run
        # must go on where the starting model's file no longer exists.
        if ckpt and qat.CHECKPOINT_KEY in ckpt:
            model = qat.from_checkpoint(ckpt)
        elif ckpt:
            model = models.from_checkpoint(ckpt)
        else:
            model = models.create(hp["model"], pretrained=hp["pretrained"])
            if hp["qat"]:
                model = self._prepare_qat(model)
        if hp["bn"] == "auto":
            # Batch statistics of small, padded training crops are far from the
            # pretrained running statistics (PP-OCRv4 on ICDAR 2015: balanced BCE
            # 10.6 with batch statistics vs 1.5 with running ones on the same
            # batch), so fine-tuning keeps the pretrained ones.
            from_weights = hp["pretrained"] or Path(str(hp["model"])).suffix in (".pt", ".pth", ".ckpt")
            hp["bn"] = "frozen" if from_weights else "train"
        self.cfg = dict(model.cfg)
        self.arch = ckpt["arch"] if ckpt else self.cfg["arch"]  # registry name; a checkpoint start keeps its own
        self.model = model.to(self.device)
        if self.device.type == "cpu":
            from ..memory import keep_freed_memory

            keep_freed_memory()

    def _prepare_qat(self, model):
        """``--qat``: the fake-quantised model, its activation ranges calibrated on training images."""
        return qat_start.prepare(model, self.train_samples, self.hp, self.is_main and not self.args.no_progress)

    def _build_optimizer(self):
        import torch

        from ..data.dataset import steps_per_epoch
        from ..data.mixing import epoch_size
        from .ema import EMA

        hp = self.hp
        n = epoch_size(self.set_lengths, [s.weight for s in self.data["train_sets"]])
        self.spe = steps_per_epoch(n, hp["batch_size"], self.world)
        self.total = hp["epochs"] * self.spe
        if hp["max_steps"]:
            self.total = min(self.total, hp["max_steps"])
        self.warmup = hp["warmup_steps"] if hp["warmup_steps"] is not None else min(200, max(1, self.total // 20))
        self.opt = torch.optim.AdamW(
            param_groups(self.model, hp["lr"], hp["backbone_lr_scale"]), lr=hp["lr"], weight_decay=hp["weight_decay"]
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lr_lambda_factory(self.total, self.warmup, hp["min_lr_ratio"])
        )
        self.use_amp = bool(hp["amp"]) and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.loss_fn = make_loss(hp)
        # only the main process validates and saves, so only it keeps the average
        self.ema = EMA(self.model, hp["ema"]) if hp["ema"] and self.is_main else None

    def _restore(self, ckpt):
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best = {"hmean": None, "loss": None, "epoch": None}
        self.epoch_sums = {}
        if not ckpt:
            return
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and "ema" in ckpt:
            self.ema.load_state_dict(ckpt["ema"])
        ts = ckpt["train_state"]
        self.step, self.epoch, self.batch_in_epoch = ckpt["step"], ckpt["epoch"], ts["batch_in_epoch"]
        self.best = ckpt["best"]
        self.epoch_sums = ts.get("epoch_sums", {})
        set_rng_state(ts["rng"])  # data randomness is per-sample seeded; this covers the rest

    def _build_loader(self):
        from ..data.dataset import DetDataset, EpochBatchSampler

        hp = self.hp
        dataset = DetDataset(
            self.train_samples,
            self.cfg,
            size=hp["size"],
            augment=True,
            shrink_ratio=hp["shrink_ratio"],
            seed=hp["seed"],
            max_angle=hp["max_angle"],
            scan_prob=hp.get("scan_prob", 0.0),
        )
        self.sampler = EpochBatchSampler(
            self.set_lengths,
            hp["batch_size"],
            seed=hp["seed"],
            rank=self.rank,
            world=self.world,
            weights=[s.weight for s in self.data["train_sets"]],
            sizes=multiscale_sizes(hp["size"], hp["size_max"]),
        )
        self.loader = make_loader(dataset, self.sampler, self.args.workers, self.device, hp["seed"])

    def _open_run_folder(self, ckpt):
        self.metrics_path = self.out / "metrics.jsonl"
        self.records = []
        if not self.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if ckpt and self.metrics_path.is_file():
            # keep only what the checkpoint had seen, so a crash after it leaves no duplicates
            records = [json.loads(ln) for ln in self.metrics_path.read_text().splitlines() if ln.strip()]
            self.records = [r for r in records if r.get("step", 0) <= self.step]
            self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in self.records))
        elif not ckpt:
            self.metrics_path.write_text("")
        (self.out / "args.json").write_text(
            json.dumps(
                {
                    "hparams": self.hp,
                    **self._data_state(),
                    "world_size": self.world,
                    "steps_per_epoch": self.spe,
                    "total_steps": self.total,
                    "warmup_steps": self.warmup,
                    "argv": sys.argv[1:],
                },
                indent=1,
            )
        )
        recipe.dump(self._resolved_settings(), self.out / "config.yaml")

    def _resolved_settings(self) -> dict:
        """Every setting of this run, as a recipe file that reproduces it (``RUN/config.yaml``)."""
        sets = self.data["train_sets"]
        roots = [s.root for s in sets]
        run = {k: getattr(self.args, k, v) for k, v in recipe.RUN_SETTINGS.items() if k not in ("resume", "overwrite")}
        run.update(
            train=[s.path for s in sets],
            train_weight=[s.weight for s in sets],
            format=[s.format for s in sets],
            root=roots if any(r is not None for r in roots) else None,
            **{k: self.data[k] for k in ("val", "val_format", "val_root", *VAL_SETTINGS)},
            out=str(self.out),
            data_root=None,  # the paths above are absolute
        )
        sections = {k: getattr(self.args, k, None) for k in recipe.SECTIONS}
        return {**self.hp, **run, **{k: v for k, v in sections.items() if v}}

    def _data_state(self) -> dict:
        sets = self.data["train_sets"]
        return {
            "train": sets[0].path,
            "train_sets": [s.to_dict() for s in sets],
            "val": self.data["val"],
            "val_format": self.data["val_format"],
            "val_root": self.data["val_root"],
            **{k: self.data[k] for k in VAL_SETTINGS},
        }

    # ---- small shared pieces
    def base_model(self):
        from torch.nn.parallel import DistributedDataParallel as DDP

        return self.model.module if isinstance(self.model, DDP) else self.model

    def _log(self, rec: dict):
        if self.is_main:
            self.records.append(rec)
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(rec) + "\n")

    # ---- training
    def train(self) -> int:
        """Run epochs until the schedule ends or a stop condition; returns the exit code."""
        self.t_start = time.perf_counter()
        self.session_steps = 0
        self.stop_reason = None
        self.ddp_frozen_state = None
        try:
            while self.step < self.total and self.stop_reason is None:
                self._start_epoch()
                self._run_epoch()
                epoch_done = self.batch_in_epoch >= self.spe or self.step >= self.total
                if self.stop_reason and not epoch_done:
                    break
                self._end_epoch()
        except KeyboardInterrupt:
            if self.is_main:
                self._checkpoint(self.out / "last.pt")
                print(f"interrupted: resume with --resume {self.out / 'last.pt'}", file=sys.stderr)
            raise
        self._finish()
        return 0

    def _start_epoch(self):
        from torch.nn.parallel import DistributedDataParallel as DDP

        frozen = self.epoch < self.hp["freeze_backbone_epochs"]
        set_backbone_frozen(self.base_model(), frozen)
        if self.world > 1 and self.ddp_frozen_state != frozen:
            # DDP fixes its parameter set at wrap time: re-wrap when freezing changes it
            dev = self.device
            self.model = DDP(self.base_model(), device_ids=[dev.index] if dev.type == "cuda" else None)
            self.ddp_frozen_state = frozen
        self.model.train()
        apply_bn_mode(self.base_model(), frozen, self.hp["bn"])
        self.sampler.set_epoch(self.epoch, self.batch_in_epoch)

    def _run_epoch(self):
        """The batches of one epoch (from ``batch_in_epoch`` on), with logging and stop checks."""
        from tqdm import tqdm

        args = self.args
        n_batches = min(self.spe - self.batch_in_epoch, self.total - self.step)
        bar = tqdm(
            total=n_batches,
            desc=f"epoch {self.epoch + 1}/{self.hp['epochs']}",
            leave=False,
            disable=not self.is_main or args.no_progress,
            dynamic_ncols=True,
        )
        t_log = time.perf_counter()
        steps_since_log, waited = 0, 0.0
        batches = iter(self.loader)
        while True:
            t_wait = time.perf_counter()
            batch = next(batches, None)
            if batch is None or self.step >= self.total:
                break
            waited += time.perf_counter() - t_wait
            vals = self._step(batch)
            self.session_steps += 1
            steps_since_log += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in vals.items()}, refresh=False)
            if self.step % args.log_every == 0 or self.step == self.total:
                now = time.perf_counter()
                self._log(
                    {
                        "type": "train",
                        "epoch": self.epoch,
                        "step": self.step,
                        "lr": self.sched.get_last_lr()[-1],
                        **vals,
                        "sec_per_step": (now - t_log) / steps_since_log,
                        "data_wait": round(waited / max(now - t_log, 1e-9), 4),
                    }
                )
                t_log, steps_since_log, waited = now, 0, 0.0
            if args.save_every and self.step % args.save_every == 0:
                self._checkpoint(self.out / "last.pt")
                if args.keep_snapshots:
                    self._checkpoint(self.out / f"step_{self.step}.pt", resumable=False)
            if args.stop_after is not None and self.session_steps >= args.stop_after:
                self.stop_reason = f"--stop-after {args.stop_after}"
            elif args.time_limit is not None and time.perf_counter() - self.t_start > args.time_limit * 60:
                self.stop_reason = f"--time-limit {args.time_limit} min"
            if self.stop_reason:
                break
        bar.close()

    def _step(self, batch: dict) -> dict:
        """One optimiser step; returns the loss and its parts as floats."""
        import torch

        hp = self.hp
        self._maybe_freeze_qat()
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            preds = self.model(batch["image"])
        loss, parts = self.loss_fn(preds, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.step}: lower --lr or check the labels")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if hp["clip_grad"]:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], hp["clip_grad"])
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        if self.ema is not None:
            self.ema.update(self.base_model())
        self.step += 1
        self.batch_in_epoch += 1
        vals = {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}}
        for k, v in vals.items():
            self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v
        self.epoch_sums["n"] = self.epoch_sums.get("n", 0) + 1
        return vals

    def _maybe_freeze_qat(self):
        """``--qat``: the last ``qat_freeze`` of the steps run on fixed int8 ranges."""
        qat_start.maybe_freeze(self.base_model(), self.ema, self.step >= self.total * (1.0 - self.hp["qat_freeze"]))

    # ---- end of an epoch
    def _validate(self):
        """Validation H-mean of the deployed weights (the EMA's with ``--ema``), or None without --val."""
        from ..evaluation.protocol import evaluate_model

        if self.val_samples is None:
            return None
        m = self.ema.module if self.ema is not None else self.base_model()
        was_training = m.training
        m.eval()
        args = self.args
        try:
            d = self.data
            res = evaluate_model(
                m,
                self.val_samples,
                d["val_limit_side_len"],
                d["val_limit_type"],
                d["val_box_thresh"],
                device=self.device,
                progress=not args.no_progress,
            )
        finally:
            m.train(was_training)
        return {k: res[k] for k in ("precision", "recall", "hmean")}

    def _end_epoch(self):
        """Epoch record, validation, best-model choice, checkpoints; then the next epoch."""
        import torch.distributed as dist

        n = max(self.epoch_sums.get("n", 0), 1)
        rec = {
            "type": "epoch",
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.sched.get_last_lr()[-1],
            **{k: v / n for k, v in self.epoch_sums.items() if k != "n"},
            "seconds": round(time.perf_counter() - self.t_start, 1),
        }
        last_epoch = self.step >= self.total
        metrics = None
        if self.is_main and ((self.epoch + 1) % self.args.val_every == 0 or last_epoch):
            metrics = self._validate()
        if self.world > 1:
            dist.barrier()
        if metrics is not None:
            rec.update(metrics)
        improved = False
        if self.is_main:
            improved = self._update_best(rec, metrics)
            self._log(rec)
            msg = f"epoch {self.epoch + 1}: loss {rec.get('loss', float('nan')):.4f}"
            if metrics is not None:
                msg += f"  val P {metrics['precision']:.4f} R {metrics['recall']:.4f} H {metrics['hmean']:.4f}"
            print(msg, file=sys.stderr, flush=True)
        self.epoch += 1
        self.batch_in_epoch = 0
        self.epoch_sums = {}
        if self.is_main:
            self._checkpoint(self.out / "last.pt")
            if improved:
                self._checkpoint(self.out / "best.pt", resumable=False)
            plot_metrics(self.records, self.out / "metrics.png")

    def _update_best(self, rec: dict, metrics) -> bool:
        """Best validation H-mean, or lowest epoch loss without --val; True when this epoch is the new best."""
        if metrics is not None:
            if self.best["hmean"] is None or metrics["hmean"] > self.best["hmean"]:
                self.best = {"hmean": metrics["hmean"], "loss": rec.get("loss"), "epoch": self.epoch}
                return True
        elif self.val_samples is None:
            if self.best["loss"] is None or rec.get("loss", math.inf) < self.best["loss"]:
                self.best = {"hmean": None, "loss": rec.get("loss"), "epoch": self.epoch}
                return True
        return False

    def _finish(self):
        if not self.is_main:
            return
        last = self.out / "last.pt"
        if self.stop_reason:
            self._checkpoint(last)
            plot_metrics(self.records, self.out / "metrics.png")
            print(
                f"stopped by {self.stop_reason} at step {self.step}/{self.total}: resume with --resume {last}",
                file=sys.stderr,
            )
            return
        if not (self.out / "best.pt").exists():
            if self.ema is not None:
                self._checkpoint(self.out / "best.pt", resumable=False)
            else:
                shutil.copyfile(last, self.out / "best.pt")
        if isinstance(self.base_model(), qat.QATNet):
            print(f"int8 model: {qat_start.convert_best(self.out)}", file=sys.stderr)
        print(f"done: {self.step} steps; best {self.best}; checkpoints in {self.out}", file=sys.stderr)

    # ---- checkpoints
    def _checkpoint(self, path: Path, resumable: bool = True):
        """Write ``path`` atomically (main process only).

        A resumable checkpoint (last.pt) holds the trained weights and all
        training state, the EMA's included; a non-resumable one (best.pt)
        holds the deployed weights: the EMA's with ``--ema``.
        """
        if not self.is_main:
            return
        m = self.ema.module if self.ema is not None and not resumable else self.base_model()
        ck = {
            "arch": self.arch,
            "model": {k: v.detach().cpu() for k, v in m.state_dict().items()},
            "cfg": self.cfg,
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
        }
        if isinstance(m, qat.QATNet):
            ck[qat.CHECKPOINT_KEY] = dict(m.qat)
        if resumable:
            ck.update(
                optimizer=self.opt.state_dict(),
                scheduler=self.sched.state_dict(),
                scaler=self.scaler.state_dict(),
                train_state={
                    "hparams": self.hp,
                    **self._data_state(),
                    "batch_in_epoch": self.batch_in_epoch,
                    "epoch_sums": self.epoch_sums,
                    "rng": rng_state(),
                },
            )
            if self.ema is not None:
                ck["ema"] = self.ema.state_dict()
        atomic_save(ck, path)
