"""The DBNet training loss.

``L = Ls + alpha * Lb + beta * Lt`` (Liao et al. 2020, eq. 6):

* ``Ls``: binary cross-entropy on the probability map over ``shrink_mask``,
  balanced by hard-negative mining -- all positives plus the hardest
  ``ratio * #positives`` negatives of the whole batch;
* ``Lb``: dice loss on the approximate binary map over ``shrink_mask``;
* ``Lt``: L1 on the threshold map over ``thresh_mask`` (the dilated text band).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def balanced_bce(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, negative_ratio: float = 3.0, eps: float = 1e-6
) -> torch.Tensor:
    """BCE over positives and the ``negative_ratio * #pos`` hardest negatives.

    Args:
        pred: probabilities in [0, 1], any shape.
        gt: 0/1 targets, same shape.
        mask: 0/1 validity mask, same shape.

    Returns:
        scalar tensor ``(sum pos loss + sum top-k neg loss) / (#pos + k + eps)``.
    """
    positive = gt * mask
    negative = (1.0 - gt) * mask
    pos_count = int(positive.sum().round().item())
    neg_count = min(int(negative.sum().round().item()), int(pos_count * negative_ratio))
    loss = F.binary_cross_entropy(pred.clamp(eps, 1.0 - eps), gt, reduction="none")
    pos_loss = (loss * positive).sum()
    if neg_count > 0:
        neg_loss = torch.topk((loss * negative).reshape(-1), neg_count, sorted=False).values.sum()
    else:
        neg_loss = loss.new_zeros(())
    return (pos_loss + neg_loss) / (pos_count + neg_count + eps)


def dice_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``1 - 2 |P*G| / (|P| + |G|)`` over the masked pixels."""
    inter = (pred * gt * mask).sum()
    union = (pred * mask).sum() + (gt * mask).sum() + eps
    return 1.0 - 2.0 * inter / union


def masked_l1(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean absolute error over the masked pixels (0 when the mask is empty)."""
    return ((pred - gt).abs() * mask).sum() / (mask.sum() + eps)


class DBLoss(nn.Module):
    """DBNet loss with configurable weights.

    Args:
        alpha: weight of the dice loss on the approximate binary map.
        beta: weight of the L1 loss on the threshold map.
        negative_ratio: negatives kept per positive in the balanced BCE.
        prob_loss: ``"bce"`` (balanced BCE, the DBNet paper) or ``"dice"``
            (dice on the probability map, as PaddleOCR trains PP-OCR).
        prob_weight: weight of the probability-map loss.

    ``forward(preds, batch)`` takes the train-mode model output dict
    (``prob``, ``thresh``, ``binary``, each ``(N, 1, H, W)``) and a batch dict
    with ``shrink_map``, ``shrink_mask``, ``thresh_map``, ``thresh_mask``
    ``(N, H, W)``; returns ``(total, {"prob": Ls, "binary": Lb, "thresh": Lt})``.
    Computed in float32 even under autocast.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 10.0,
        negative_ratio: float = 3.0,
        eps: float = 1e-6,
        prob_loss: str = "bce",
        prob_weight: float = 1.0,
    ):
        super().__init__()
        if prob_loss not in ("bce", "dice"):
            raise ValueError(f"prob_loss must be 'bce' or 'dice', got {prob_loss!r}")
        self.alpha, self.beta, self.negative_ratio, self.eps = alpha, beta, negative_ratio, eps
        self.prob_loss, self.prob_weight = prob_loss, prob_weight

    def forward(self, preds: dict, batch: dict):
        # binary_cross_entropy is refused under CUDA autocast; the loss is cheap, run it in fp32.
        with torch.autocast(device_type=preds["prob"].device.type, enabled=False):
            return self._forward(preds, batch)

    def _forward(self, preds: dict, batch: dict):
        prob = preds["prob"][:, 0].float()
        gt, mask = batch["shrink_map"].float(), batch["shrink_mask"].float()
        if self.prob_loss == "bce":
            ls = balanced_bce(prob, gt, mask, self.negative_ratio, self.eps)
        else:
            # PaddleOCR trains PP-OCR this way. BCE with hard-negative mining
            # punishes those weights' confident answers on the many texts
            # ICDAR 2015 leaves unlabelled (up to -log(eps) a pixel); in our
            # BCE fine-tuning of PP-OCRv4 the map grew timid and held-out
            # recall fell from 55% to 24% in four epochs while the BCE kept falling.
            ls = dice_loss(prob, gt, mask, self.eps)
        parts = {"prob": ls}
        total = self.prob_weight * ls
        if "binary" in preds:
            lb = dice_loss(preds["binary"][:, 0].float(), gt, mask, self.eps)
            parts["binary"] = lb
            total = total + self.alpha * lb
        if "thresh" in preds:
            lt = masked_l1(
                preds["thresh"][:, 0].float(), batch["thresh_map"].float(), batch["thresh_mask"].float(), self.eps
            )
            parts["thresh"] = lt
            total = total + self.beta * lt
        return total, parts


def make_loss(hp: dict) -> DBLoss:
    """The :class:`DBLoss` of a run's hyper-parameters."""
    return DBLoss(
        alpha=hp["alpha"],
        beta=hp["beta"],
        negative_ratio=hp["ohem_ratio"],
        prob_loss=hp["prob_loss"],
        prob_weight=hp["prob_weight"],
    )
