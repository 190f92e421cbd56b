"""Multi-set sampling, multi-scale batches, EMA and the recipe flags, without training a model."""

from collections import Counter

import cv2
import numpy as np
import pytest
import torch

from dbdetect.cli import main
from dbdetect.data import Sample
from dbdetect.data.dataset import DetDataset, EpochBatchSampler, collate
from dbdetect.data.mixing import epoch_draws, epoch_size, parse_train_sets
from dbdetect.ema import EMA
from dbdetect.train import HPARAMS, make_loss, multiscale_sizes


def _set_of(index, lengths):
    return int(np.searchsorted(np.cumsum(lengths), index, side="right"))


def test_epoch_draws_follow_the_weights():
    lengths, weights = [40, 30, 10], [1.0, 0.5, 2.5]
    assert epoch_size(lengths, weights) == 40 + 15 + 25
    seen_b = set()
    for epoch in range(3):
        idx, rep = epoch_draws(lengths, weights, seed=3, epoch=epoch)
        per_set = Counter(_set_of(i, lengths) for i in idx)
        assert per_set == {0: 40, 1: 15, 2: 25}
        # set 0 once each; set 1 a half without repeats; set 2 twice each plus half again
        assert sorted(idx[idx < 40].tolist()) == list(range(40)) and not rep[idx < 40].any()
        b = idx[(idx >= 40) & (idx < 70)]
        assert len(set(b.tolist())) == 15
        seen_b |= set(b.tolist())
        c = Counter(idx[idx >= 70].tolist())
        assert sorted(c.values()) == [2] * 5 + [3] * 5
        # each (image, repeat) pair is drawn once, so repeated images get their own augmentation
        assert len(set(zip(idx.tolist(), rep.tolist()))) == len(idx)
        again = epoch_draws(lengths, weights, seed=3, epoch=epoch)
        assert np.array_equal(again[0], idx) and np.array_equal(again[1], rep)
    assert len(seen_b) > 15  # a different half each epoch
    # one set at weight 1: the order the single-set sampler always had (old runs resume the same)
    idx, rep = epoch_draws([10], [1.0], seed=5, epoch=2)
    assert np.array_equal(idx, np.random.default_rng([5, 2, 7919]).permutation(10)) and not rep.any()


def test_weighted_sampler_shards_resumes_and_mixes_in_batches():
    lengths, weights = [20, 8], [0.5, 2.0]
    ranks = [EpochBatchSampler(lengths, 3, seed=1, rank=r, world=2, weights=weights) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(4)
    batches = [list(s) for s in ranks]
    assert len(batches[0]) == len(ranks[0]) == (26 // 2) // 3
    keys = [{(k[0], k[2]) for b in bs for k in b} for bs in batches]
    assert not keys[0] & keys[1]
    ranks[0].set_epoch(4, start_batch=2)
    assert list(ranks[0]) == batches[0][2:]
    one = EpochBatchSampler(lengths, 26, seed=1, weights=weights)
    shares = Counter(_set_of(k[0], lengths) for k in next(iter(one)))
    assert shares == {0: 10, 1: 16}


def test_set_and_weight_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="3 --train-weight values for 2 --train sets"):
        parse_train_sets(["a", "b"], [1, 2, 3])
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="--train-weight must be a positive number"):
            parse_train_sets(["a"], [bad])
    with pytest.raises(ValueError, match="2 --format values for 3 --train sets"):
        parse_train_sets(["a", "b", "c"], formats=["paddle", "auto"])
    with pytest.raises(ValueError, match="unknown label format 'coco'"):
        parse_train_sets(["a"], formats=["coco"])
    sets = parse_train_sets(["a", "b"], [2, 0.25], formats=["icdar2015"], roots=[None, "imgs"])
    assert [(s.weight, s.format) for s in sets] == [(2.0, "icdar2015"), (0.25, "icdar2015")]
    assert sets[0].root is None and sets[1].root.endswith("imgs")
    rc = main(
        [
            "train",
            "--train",
            str(tmp_path),
            "--train",
            str(tmp_path),
            "--train-weight",
            "1",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert rc == 2 and "1 --train-weight values for 2 --train sets" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["train", "--train-weight", "2", "--out", str(tmp_path / "run")]) == 2
    assert "give the --train sets too" in capsys.readouterr().err


def test_recipe_values_are_checked(tmp_path, capsys):
    base = ["train", "--train", str(tmp_path), "--out", str(tmp_path / "run")]
    for extra, msg in (
        (["--ema", "1.5"], "--ema"),
        (["--size-max", "600"], "--size-max"),
        (["--size", "640", "--size-max", "608"], "--size-max"),
        (["--ohem-ratio", "0"], "--ohem-ratio"),
        (["--max-angle", "-3"], "--max-angle"),
        (["--keep-snapshots"], "--save-every"),
    ):
        assert main(base + extra) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _synthetic_samples(tmp_path, n=3):
    out = []
    for i in range(n):
        p = tmp_path / f"s{i}.png"
        cv2.imwrite(str(p), np.full((120, 200, 3), 60 + 40 * i, np.uint8))
        box = np.array([[20, 30], [150, 30], [150, 60], [20, 60]], np.float32)
        out.append(Sample(p, [box], [False], ["x"]))
    return out


def test_multiscale_batches_have_one_size_each(tmp_path):
    assert multiscale_sizes(640, None) is None and multiscale_sizes(256, 256) == [256]
    sizes = multiscale_sizes(128, 224)
    assert sizes == [128, 160, 192, 224]
    samples = _synthetic_samples(tmp_path)
    ds = DetDataset(samples, HPARAMS_CFG, size=640, seed=0)
    drawn = set()
    for world_rank in ((2, 0), (2, 1)):
        s = EpochBatchSampler(len(samples) * 4, 2, seed=0, world=world_rank[0], rank=world_rank[1], sizes=sizes)
        s.set_epoch(1)
        drawn.add(tuple(b[0][3] for b in s))  # the same sizes in every rank
    assert len(drawn) == 1
    per_batch = next(iter(drawn))
    assert set(per_batch) <= set(sizes) and len(set(per_batch)) > 1
    key_batch = [(0, 1, 0, 160), (2, 1, 1, 160)]
    batch = collate([ds[k] for k in key_batch])
    assert batch["image"].shape == (2, 3, 160, 160) and batch["shrink_map"].shape == (2, 160, 160)
    assert batch["shrink_map"].sum() > 0  # the box survived at this size
    assert ds[(0, 1)]["image"].shape == (3, 640, 640)  # no size in the key: the dataset's
    with pytest.raises(ValueError, match="multiples of 32"):
        EpochBatchSampler(4, 2, sizes=[100])


HPARAMS_CFG = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "channel_order": "rgb"}


def test_max_angle_and_ohem_ratio_reach_their_users(tmp_path, monkeypatch):
    import dbdetect.data.dataset as dataset_mod

    seen = {}
    real = dataset_mod.augment

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(dataset_mod, "augment", spy)
    DetDataset(_synthetic_samples(tmp_path, 1), HPARAMS_CFG, size=128, max_angle=4.0)[0]
    assert seen["max_angle"] == 4.0
    assert make_loss(dict(HPARAMS, ohem_ratio=5.0)).negative_ratio == 5.0
    assert make_loss(HPARAMS).negative_ratio == 3.0  # today's default


def test_ema_follows_the_formula_and_round_trips():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(net, 0.5)
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        net[0].weight.add_(1.0)
    d = ema.current_decay()
    assert d == pytest.approx(min(0.5, 2 / 11))
    ema.update(net)
    expect = d * start["0.weight"] + (1 - d) * net[0].weight
    assert torch.allclose(ema.module[0].weight, expect)
    assert ema.updates == 1 and not any(p.requires_grad for p in ema.module.parameters())
    for _ in range(20):
        ema.update(net)
    assert ema.current_decay() == 0.5
    other = EMA(net, 0.5)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 21 and torch.equal(other.module[0].weight, ema.module[0].weight)
    with pytest.raises(ValueError, match="--ema"):
        EMA(net, 1.0)
