"""Type stubs for the compiled module dbdetect._native (see csrc/_native.pyx)."""

import numpy as np

COMPILED: bool

def polygon_area_perimeter(points: np.ndarray) -> tuple[float, float]: ...

# --- labels (csrc/labels.pxi); public wrapper: dbdetect.labels ---
def labels_make_targets(
    xy: np.ndarray,
    offsets: np.ndarray,
    ignore: np.ndarray,
    shrink_map: np.ndarray,
    shrink_mask: np.ndarray,
    thresh_map: np.ndarray,
    thresh_mask: np.ndarray,
    shrink_ratio: float,
    thresh_min: float,
    thresh_max: float,
    min_text_size: float,
) -> None: ...
def labels_make_targets_batch(
    jobs: list, shrink_ratio: float, thresh_min: float, thresh_max: float, min_text_size: float, threads: int
) -> None: ...

# --- normalize (csrc/normalize.pxi); public wrapper: dbdetect.preprocess ---
def preprocess_normalize_u8(img: np.ndarray, lut: np.ndarray, src_channel: tuple[int, int, int]) -> np.ndarray: ...

# --- postprocess (csrc/postprocess.pxi); public API: dbdetect.postprocess ---
def postprocess_boxes(
    prob: np.ndarray,
    dest_h: int,
    dest_w: int,
    thresh: float,
    box_thresh: float,
    unclip_ratio: float,
    max_candidates: int,
    min_size: int,
    poly: bool,
    slow: bool,
    dilate: bool,
) -> tuple[list[np.ndarray], np.ndarray]: ...
def postprocess_boxes_batch(
    probs: np.ndarray,
    dest_shapes: np.ndarray,
    thresh: float,
    box_thresh: float,
    unclip_ratio: float,
    max_candidates: int,
    min_size: int,
    poly: bool,
    slow: bool,
    dilate: bool,
) -> list[tuple[list[np.ndarray], np.ndarray]]: ...
def postprocess_find_contours(prob: np.ndarray, thresh: float, dilate: bool = ...) -> list[np.ndarray]: ...
def postprocess_min_area_box(points: np.ndarray) -> tuple[np.ndarray, float]: ...
def postprocess_fill_poly(points: np.ndarray, mh: int, mw: int) -> np.ndarray: ...
def postprocess_unclip(points: np.ndarray, delta: float) -> list[np.ndarray]: ...
def postprocess_approx(points: np.ndarray, eps: float) -> np.ndarray: ...
