"""Pieces of the trainer that need no model: schedule, sampler, plot, run-folder safety."""

import cv2
import pytest

from dbdetect.cli import main
from dbdetect.data.dataset import EpochBatchSampler, steps_per_epoch
from dbdetect.train import _pick_device, lr_lambda_factory, plot_metrics


def test_lr_schedule_warmup_then_cosine():
    f = lr_lambda_factory(total_steps=110, warmup_steps=10, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(4) == pytest.approx(0.5) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    vals = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


@pytest.mark.parametrize(
    "requested, world, local_rank, want",
    [
        ("cuda", 1, 0, "cuda:3"),  # plain "cuda" and the default: the current device, with its index
        (None, 1, 0, "cuda:3"),
        ("cuda:1", 1, 0, "cuda:1"),
        ("cuda", 2, 1, "cuda:1"),  # torchrun: one device per local rank
        ("cpu", 1, 0, "cpu"),
    ],
)
def test_pick_device_gives_set_device_an_index(monkeypatch, requested, world, local_rank, want):
    import torch

    chosen = []

    def set_device(dev):
        # what torch.cuda.set_device checks first (seen on a CUDA machine: "Expected a
        # torch.device with a specified index or an integer, but got:cuda")
        if dev.index is None:
            raise ValueError(f"Expected a torch.device with a specified index or an integer, but got:{dev}")
        chosen.append(dev)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    dev = _pick_device(requested, local_rank, world)
    assert str(dev) == want
    assert chosen == ([dev] if dev.type == "cuda" else [])


def test_sampler_is_deterministic_sharded_and_resumable():
    s = EpochBatchSampler(10, 3, seed=5)
    s.set_epoch(2)
    full = list(s)
    assert len(full) == len(s) == steps_per_epoch(10, 3) == 3
    assert all(len(b) == 3 and all(k[1] == 2 for k in b) for b in full)
    assert len({k[0] for b in full for k in b}) == 9
    s.set_epoch(2, start_batch=1)
    assert list(s) == full[1:]
    s.set_epoch(3)
    assert list(s) != full  # a new epoch reshuffles
    # two ranks: disjoint shards of equal length
    r0, r1 = EpochBatchSampler(10, 2, seed=5, rank=0, world=2), EpochBatchSampler(10, 2, seed=5, rank=1, world=2)
    a = {k[0] for b in r0 for k in b}
    b = {k[0] for b in r1 for k in b}
    assert len(r0) == len(r1) == 2 and not (a & b)
    # fewer images than a batch still gives one (smaller) batch
    tiny = EpochBatchSampler(3, 8)
    assert [len(b) for b in tiny] == [3]


def test_plot_metrics_writes_png(tmp_path):
    recs = [{"type": "train", "step": s, "loss": 3.0 / (s + 1)} for s in range(1, 30, 3)]
    recs += [{"type": "epoch", "step": 10 * e, "hmean": 0.2 * e} for e in range(1, 4)]
    plot_metrics(recs, tmp_path / "m.png")
    img = cv2.imread(str(tmp_path / "m.png"))
    assert img is not None and img.shape[0] > 100 and (img < 250).any()
    plot_metrics([], tmp_path / "empty.png")  # no data yet: still a valid image
    assert cv2.imread(str(tmp_path / "empty.png")) is not None


def test_refuses_non_empty_run_dir(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("keep me")
    rc = main(["train", "--train", str(tmp_path), "--out", str(tmp_path / "run")])
    assert rc == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "run" / "notes.txt").read_text() == "keep me"


def test_resume_needs_a_checkpoint(tmp_path, capsys):
    rc = main(["train", "--resume", str(tmp_path / "nope" / "last.pt")])
    assert rc == 2 and "no checkpoint" in capsys.readouterr().err


def test_param_groups_scale_only_the_backbone():
    import torch

    from dbdetect import models
    from dbdetect.train import lr_lambda_factory, param_groups

    net = models.create("dbnet_mobilenetv3", pretrained=False)
    groups = param_groups(net, 1e-3, 0.1)
    backbone = {id(p) for p in net.backbone.parameters()}
    assert {id(p) for p in groups[0]["params"]} == backbone
    assert not backbone & {id(p) for p in groups[1]["params"]}
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(net.parameters()))
    opt = torch.optim.AdamW(groups, lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda_factory(10, 1))
    assert sched.get_last_lr() == pytest.approx([1e-4, 1e-3])  # the schedule keeps the ratio
    with pytest.raises(ValueError, match="backbone-lr-scale"):
        param_groups(net, 1e-3, 0.0)
