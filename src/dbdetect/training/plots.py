"""``metrics.png``: the training-loss and validation H-mean curves of a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_metrics(records: list, path: Path) -> None:
    """Draw train loss (per log step) and validation H-mean (per epoch) into a PNG.

    Uses matplotlib when installed, else OpenCV (no extra dependency).
    """
    steps = [(r["step"], r["loss"]) for r in records if r.get("type") == "train"]
    vals = [(r["step"], r["hmean"]) for r in records if r.get("type") == "epoch" and r.get("hmean") is not None]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        if steps:
            ax[0].plot(*zip(*steps))
        ax[0].set(title="train loss", xlabel="step")
        if vals:
            ax[1].plot(*zip(*vals), marker="o")
        ax[1].set(title="val H-mean", xlabel="step", ylim=(0, 1))
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return
    except ImportError:
        pass
    import cv2

    W, H, pad = 480, 320, 40
    canvas = np.full((H, 2 * W, 3), 255, np.uint8)

    def panel(x0, pts, title, ylim=None):
        cv2.rectangle(canvas, (x0 + pad, pad), (x0 + W - 10, H - pad), (0, 0, 0), 1)
        cv2.putText(canvas, title, (x0 + pad, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        if not pts:
            return
        xs = np.array([p[0] for p in pts], float)
        ys = np.array([p[1] for p in pts], float)
        lo, hi = ylim if ylim else (float(ys.min()), float(ys.max()))
        hi = hi if hi > lo else lo + 1e-6
        xr = max(xs.max() - xs.min(), 1.0)
        px = x0 + pad + (xs - xs.min()) / xr * (W - 10 - pad - x0 + x0)
        py = (H - pad) - (ys - lo) / (hi - lo) * (H - 2 * pad)
        pts_i = np.stack([px, py], 1).round().astype(np.int32)
        cv2.polylines(canvas, [pts_i.reshape(-1, 1, 2)], False, (200, 80, 0), 2, cv2.LINE_AA)
        for q in pts_i:
            cv2.circle(canvas, tuple(int(v) for v in q), 2, (200, 80, 0), -1)
        for v, yy in ((hi, pad), (lo, H - pad)):
            cv2.putText(canvas, f"{v:.3g}", (x0 + 2, int(yy) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
        cv2.putText(
            canvas,
            f"steps {int(xs.min())} - {int(xs.max())}",
            (x0 + pad, H - 12),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (0, 0, 0),
            1,
        )

    panel(0, steps, "train loss")
    panel(W, vals, "val H-mean", (0.0, 1.0))
    cv2.imwrite(str(path), canvas)
