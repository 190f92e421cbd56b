"""DB loss against a direct NumPy computation."""

import numpy as np
import pytest
import torch

from dbdetect.losses import DBLoss, balanced_bce, dice_loss, masked_l1


def np_balanced_bce(p, g, m, ratio=3.0, eps=1e-6):
    p = np.clip(p.astype(np.float64), eps, 1 - eps)
    loss = -(g * np.log(p) + (1 - g) * np.log(1 - p))
    pos, neg = g * m, (1 - g) * m
    npos = int(round(pos.sum()))
    nneg = min(int(round(neg.sum())), int(npos * ratio))
    neg_sorted = np.sort((loss * neg).ravel())[::-1]
    return ((loss * pos).sum() + neg_sorted[:nneg].sum()) / (npos + nneg + eps)


def np_dice(p, g, m, eps=1e-6):
    return 1 - 2 * (p * g * m).sum() / ((p * m).sum() + (g * m).sum() + eps)


def np_l1(p, g, m, eps=1e-6):
    return (np.abs(p - g) * m).sum() / (m.sum() + eps)


def make_batch(rng, n=2, h=16, w=20, pos_frac=0.1):
    gt = (rng.random((n, h, w)) < pos_frac).astype(np.float32)
    mask = (rng.random((n, h, w)) < 0.9).astype(np.float32)
    tmap = rng.uniform(0.3, 0.7, (n, h, w)).astype(np.float32)
    tmask = (rng.random((n, h, w)) < 0.4).astype(np.float32)
    preds = {k: rng.uniform(0.01, 0.99, (n, 1, h, w)).astype(np.float32) for k in ("prob", "thresh", "binary")}
    return gt, mask, tmap, tmask, preds


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("pos_frac", [0.0, 0.05, 0.5, 0.9])
def test_db_loss_matches_numpy(seed, pos_frac):
    rng = np.random.default_rng(seed)
    gt, mask, tmap, tmask, preds = make_batch(rng, pos_frac=pos_frac)
    batch = {"shrink_map": gt, "shrink_mask": mask, "thresh_map": tmap, "thresh_mask": tmask}
    alpha, beta = 1.0 + seed, 10.0 - seed
    total, parts = DBLoss(alpha=alpha, beta=beta)(
        {k: torch.from_numpy(v) for k, v in preds.items()}, {k: torch.from_numpy(v) for k, v in batch.items()}
    )
    ls = np_balanced_bce(preds["prob"][:, 0], gt, mask)
    lb = np_dice(preds["binary"][:, 0], gt, mask)
    lt = np_l1(preds["thresh"][:, 0], tmap, tmask)
    assert parts["prob"].item() == pytest.approx(ls, rel=1e-4, abs=1e-6)
    assert parts["binary"].item() == pytest.approx(lb, rel=1e-4, abs=1e-6)
    assert parts["thresh"].item() == pytest.approx(lt, rel=1e-4, abs=1e-6)
    assert total.item() == pytest.approx(ls + alpha * lb + beta * lt, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_dice_probability_loss_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    gt, mask, tmap, tmask, preds = make_batch(rng, pos_frac=0.2)
    batch = {"shrink_map": gt, "shrink_mask": mask, "thresh_map": tmap, "thresh_mask": tmask}
    total, parts = DBLoss(alpha=1.0, beta=10.0, prob_loss="dice", prob_weight=5.0)(
        {k: torch.from_numpy(v) for k, v in preds.items()}, {k: torch.from_numpy(v) for k, v in batch.items()}
    )
    ls = np_dice(preds["prob"][:, 0], gt, mask)
    lb = np_dice(preds["binary"][:, 0], gt, mask)
    lt = np_l1(preds["thresh"][:, 0], tmap, tmask)
    assert parts["prob"].item() == pytest.approx(ls, rel=1e-4, abs=1e-6)
    assert total.item() == pytest.approx(5.0 * ls + lb + 10.0 * lt, rel=1e-4, abs=1e-6)
    with pytest.raises(ValueError, match="prob_loss"):
        DBLoss(prob_loss="focal")


def test_hard_negative_mining_keeps_only_hardest():
    # 1 positive, 10 negatives: only the 3 hardest negatives count
    p = torch.tensor([0.5] + [0.9, 0.8, 0.7] + [0.01] * 7)
    g = torch.tensor([1.0] + [0.0] * 10)
    m = torch.ones(11)
    expected = -(np.log(0.5) + np.log(0.1) + np.log(0.2) + np.log(0.3)) / 4
    assert balanced_bce(p, g, m).item() == pytest.approx(expected, rel=1e-5)
    # masked-out pixels are never mined
    m2 = m.clone()
    m2[1] = 0
    expected2 = -(np.log(0.5) + np.log(0.2) + np.log(0.3) + np.log(0.99)) / 4
    assert balanced_bce(p, g, m2).item() == pytest.approx(expected2, rel=1e-4)


def test_empty_masks_give_zero_and_finite_grads():
    p = torch.full((1, 1, 4, 4), 0.3, requires_grad=True)
    z = torch.zeros(1, 4, 4)
    total, parts = DBLoss()(
        {"prob": p, "thresh": p, "binary": p}, {"shrink_map": z, "shrink_mask": z, "thresh_map": z, "thresh_mask": z}
    )
    total.backward()
    assert torch.isfinite(p.grad).all()
    assert parts["prob"].item() == 0 and parts["thresh"].item() == 0
    assert masked_l1(p, z, z).item() == 0 and dice_loss(p, z, z).item() == pytest.approx(1.0)


def test_loss_gradient_points_the_right_way():
    rng = np.random.default_rng(0)
    gt, mask, tmap, tmask, preds = make_batch(rng, pos_frac=0.3)
    batch = {
        k: torch.from_numpy(v)
        for k, v in {"shrink_map": gt, "shrink_mask": mask, "thresh_map": tmap, "thresh_mask": tmask}.items()
    }
    logits = {k: torch.logit(torch.from_numpy(v)).requires_grad_() for k, v in preds.items()}
    loss_fn = DBLoss()
    opt = torch.optim.Adam(list(logits.values()), lr=0.3)
    first = None
    for _ in range(20):
        total, _ = loss_fn({k: torch.sigmoid(v) for k, v in logits.items()}, batch)
        first = first if first is not None else total.item()
        opt.zero_grad()
        total.backward()
        opt.step()
    assert total.item() < 0.5 * first
