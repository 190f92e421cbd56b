"""DBNet assembly, default configurations and the registered entry points.

Pre/post-processing of the PP-OCR models, from the rapidocr-onnxruntime wheels the weights come
from (``ch_ppocr_v3_det/config.yaml`` + ``utils.py`` in 1.2.13, ``config.yaml`` +
``ch_ppocr_det/utils.py`` in 1.4.4): the image in BGR order (cv2 decoding), resized so that the
*shorter* side is at least 736 (``limit_type: min``), each side rounded to a multiple of 32,
``(img / 255 - mean) / std`` per channel in that BGR order, CHW. Post-processing: thresh 0.3,
box_thresh 0.5, unclip_ratio 1.6, 2x2 dilation of the bitmap, "fast" box scores.

Normalisation: 1.2.13 (PP-OCRv3) uses ImageNet mean/std (0.485, 0.456, 0.406) /
(0.229, 0.224, 0.225). 1.4.4 (PP-OCRv4) uses 0.5/0.5 instead; PaddleOCR trains and serves the
v4 detector with the ImageNet values (ch_PP-OCRv4_det_student.yml, tools/infer/predict_det.py),
so that is what we record for both models.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..defaults import DBNET, PPOCR
from .backbones import MobileNetV3, PPLCNetV3, resnet18, resnet50
from .heads import DBHead
from .necks import FPN
from .registry import register_model

_PPOCR_CFG = PPOCR
# Tuned for ppocrv4_ic15 with `dbdetect tune` on 100 held-out ICDAR 2015 training images
# (img_901..img_1000): word-level boxes on small, blurred text want a larger input and a
# stricter box score.
_PPOCR_IC15_CFG = dict(
    _PPOCR_CFG, limit_side_len=1440, thresh=0.25, box_thresh=0.7, unclip_ratio=1.4, use_dilation=True
)
# Tuned for ppocrv4_td500 with `dbdetect tune` on 30 held-out MSRA-TD500 training images
# (every 10th by name): the same as PP-OCR's but a lower binarisation threshold.
_PPOCR_TD500_CFG = dict(_PPOCR_CFG, thresh=0.2, box_thresh=0.5, unclip_ratio=1.6, use_dilation=True)
# Tuned for ppocrv4_doc with `dbdetect tune --protocol doctr` on 21 held-out FUNSD forms
# (every 7th by name): scans of about 770x1000 want their short side enlarged.
_PPOCR_DOC_CFG = dict(
    _PPOCR_CFG, limit_side_len=1152, limit_type="min", thresh=0.2, box_thresh=0.6, unclip_ratio=1.3, use_dilation=True
)
_DBNET_CFG = DBNET

# Bundled weight files of the pretrained entries.
_WEIGHT_FILES = {
    "ppocrv4": "ppocrv4_det.pt",
    "ppocrv3": "ppocrv3_det.pt",
    "ppocrv4_ic15": "ppocrv4_ic15_det.pt",
    "ppocrv4_td500": "ppocrv4_td500_det.pt",
    "ppocrv4_doc": "ppocrv4_doc_det.pt",
}
# Bundled int8 models: torch x86 int8 TorchScript files (dbdetect.deploy), each of the
# fp32 entry named without "_int8", with that entry's settings inside. Not networks: they
# are not in the registry of architectures; Detector runs them by name.
INT8_FILES = {
    "ppocrv4_int8": "ppocrv4_int8.torchscript",
    "ppocrv4_ic15_int8": "ppocrv4_ic15_int8.torchscript",
    "ppocrv4_td500_int8": "ppocrv4_td500_int8.torchscript",
}
# Entries whose file stores the threshold branch as a copy of the probability branch.
_COPIED_THRESHOLD = {"ppocrv4", "ppocrv3"}


class DBNet(nn.Module):
    """backbone -> neck -> DB head.

    Args:
        backbone: module returning 4 maps (strides 4..32) with ``out_channels``.
        neck: module fusing them into one stride-4 map with ``out_channels`` channels.
        head: :class:`DBHead`.
        cfg: pre/post-processing configuration (see the package contract).

    Eval-mode forward returns the probability map (N, 1, H, W); train mode returns
    dict(prob, thresh, binary). H and W must be multiples of 32.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: nn.Module, cfg: dict):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.cfg = dict(cfg)

    def forward(self, x: torch.Tensor):
        return self.head(self.neck(self.backbone(x)))


def weights_dir() -> Path:
    """Directory of the bundled weights.

    The wheel installs ``weights/*.pt`` as ``dbdetect/weights``; from a source tree
    (PYTHONPATH=src) they live in ``<repo>/weights``.

    Returns:
        The first existing candidate (the installed location if neither exists).
    """
    pkg = Path(__file__).resolve().parents[1] / "weights"
    repo = Path(__file__).resolve().parents[3] / "weights"
    for d in (pkg, repo):
        if d.is_dir():
            return d
    return pkg


def int8_file(name: str) -> Path:
    """The bundled int8 file of ``name`` (one of :data:`INT8_FILES`).

    Raises:
        ValueError: ``name`` is no bundled int8 model.
        FileNotFoundError: the file is missing from the installation.
    """
    fname = INT8_FILES.get(name)
    if fname is None:
        raise ValueError(f"{name!r} is no bundled int8 model (those are {', '.join(sorted(INT8_FILES))})")
    path = weights_dir() / fname
    if not path.is_file():
        raise FileNotFoundError(
            f"the int8 model {name!r} is not at {path}; the dbdetect installation is incomplete "
            f"(expected dbdetect/weights/{fname}, or weights/{fname} in a source tree)"
        )
    return path


def load_pretrained(model: nn.Module, name: str) -> nn.Module:
    """Load the bundled weights of entry ``name`` into ``model`` (strict).

    Raises:
        ValueError: ``name`` has no pretrained weights.
        FileNotFoundError: the weight file is missing from the installation.
    """
    fname = _WEIGHT_FILES.get(name)
    if fname is None:
        raise ValueError(
            f"model {name!r} has no pretrained weights (only {', '.join(sorted(_WEIGHT_FILES))} do); "
            f"use create({name!r}, pretrained=False) and train it"
        )
    path = weights_dir() / fname
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights for {name!r} not found at {path}; the dbdetect installation is "
            f"incomplete (expected dbdetect/weights/{fname}, or weights/{fname} in a source tree)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    if name in _COPIED_THRESHOLD:
        # The file's threshold branch is a copy of the probability branch (see NOTICE);
        # its last layer is reset so fine-tuning starts from T = 0.3, not a saturated T = P.
        model.head.reset_threshold_output(0.3)
    return model


def _cfg(base: dict, name: str, arch_kwargs: dict) -> dict:
    cfg = dict(base, name=name, arch=name)
    cfg["arch_kwargs"] = dict(arch_kwargs)
    return cfg


def _build(
    name: str,
    backbone: nn.Module,
    neck_channels: int,
    rse: bool,
    base_cfg: dict,
    pretrained: bool,
    arch_kwargs: dict,
    k: float = 50.0,
) -> DBNet:
    neck = FPN(backbone.out_channels, neck_channels, rse=rse)
    model = DBNet(backbone, neck, DBHead(neck.out_channels, k=k), _cfg(base_cfg, name, arch_kwargs))
    if pretrained:
        load_pretrained(model, name)
    return model


@register_model
def ppocrv4(pretrained: bool = True, **kw) -> DBNet:
    """PP-OCRv4 mobile detector: PP-LCNetV3 x0.75 + RSE-FPN(96) + DB head. Pretrained (PaddleOCR)."""
    return _build("ppocrv4", PPLCNetV3(scale=0.75, **kw), 96, True, _PPOCR_CFG, pretrained, kw)


@register_model
def ppocrv4_ic15(pretrained: bool = True, **kw) -> DBNet:
    """PP-OCRv4 fine-tuned on ICDAR 2015 train with ``dbdetect train`` (word-level boxes; see README)."""
    return _build("ppocrv4_ic15", PPLCNetV3(scale=0.75, **kw), 96, True, _PPOCR_IC15_CFG, pretrained, kw)


@register_model
def ppocrv4_td500(pretrained: bool = True, **kw) -> DBNet:
    """PP-OCRv4 fine-tuned on 270 MSRA-TD500 training images (line-level, multi-oriented; see README)."""
    return _build("ppocrv4_td500", PPLCNetV3(scale=0.75, **kw), 96, True, _PPOCR_TD500_CFG, pretrained, kw)


@register_model
def ppocrv4_doc(pretrained: bool = True, **kw) -> DBNet:
    """PP-OCRv4 fine-tuned for word boxes on scanned forms (128 FUNSD training forms; see the recipe)."""
    return _build("ppocrv4_doc", PPLCNetV3(scale=0.75, **kw), 96, True, _PPOCR_DOC_CFG, pretrained, kw)


@register_model
def ppocrv3(pretrained: bool = True, **kw) -> DBNet:
    """PP-OCRv3 mobile detector: MobileNetV3-large x0.5 (no SE) + RSE-FPN(96) + DB head. Pretrained."""
    return _build("ppocrv3", MobileNetV3(scale=0.5, disable_se=True, **kw), 96, True, _PPOCR_CFG, pretrained, kw)


@register_model
def dbnet_resnet18(pretrained: bool = True, **kw) -> DBNet:
    """DBNet with ResNet-18 + FPN(256). No pretrained weights: pass pretrained=False."""
    return _build("dbnet_resnet18", resnet18(**kw), 256, False, _DBNET_CFG, pretrained, kw)


@register_model
def dbnet_resnet50(pretrained: bool = True, **kw) -> DBNet:
    """DBNet with ResNet-50 + FPN(256). No pretrained weights: pass pretrained=False."""
    return _build("dbnet_resnet50", resnet50(**kw), 256, False, _DBNET_CFG, pretrained, kw)


@register_model
def dbnet_mobilenetv3(pretrained: bool = True, scale: float = 0.5, **kw) -> DBNet:
    """DBNet with MobileNetV3-large (width ``scale``, with SE) + FPN(256), as PaddleOCR's det_mv3_db.

    No pretrained weights: pass pretrained=False.
    """
    return _build(
        "dbnet_mobilenetv3", MobileNetV3(scale=scale, **kw), 256, False, _DBNET_CFG, pretrained, dict(kw, scale=scale)
    )
