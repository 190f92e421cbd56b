"""Default settings of the two model families, written once: PP-OCR's and classic DBNet's.

Both the registry (:mod:`dbdetect.models.dbnet`) and foreign ONNX files without
dbdetect metadata (:mod:`dbdetect.runtime.metadata`) take them from here.
"""

from __future__ import annotations

from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# RapidOCR's settings for the PP-OCR detection weights (BGR input, short side raised to 736)
PPOCR: dict[str, Any] = dict(
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    channel_order="bgr",
    stride=32,
    limit_side_len=736,
    limit_type="min",
    thresh=0.3,
    box_thresh=0.5,
    unclip_ratio=1.6,
    use_dilation=True,
    score_mode="fast",
    max_candidates=1000,
)
# Classic DBNet settings (Liao et al.; MhLiao/DB's ICDAR 2015 config) for models trained here.
DBNET: dict[str, Any] = dict(PPOCR, channel_order="rgb", box_thresh=0.6, unclip_ratio=1.5, use_dilation=False)

# number formats a torch network can run in (``Detector(precision=...)``); auto: fp16 on CUDA, fp32 elsewhere
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
