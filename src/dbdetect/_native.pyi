"""Type stubs for the compiled module dbdetect._native (see csrc/_native.pyx)."""
import numpy as np

COMPILED: bool

def polygon_area_perimeter(points: np.ndarray) -> tuple[float, float]: ...

# --- labels (csrc/labels.pxi); public wrapper: dbdetect.labels ---
def labels_make_targets(xy: np.ndarray, offsets: np.ndarray, ignore: np.ndarray,
                        shrink_map: np.ndarray, shrink_mask: np.ndarray, thresh_map: np.ndarray,
                        thresh_mask: np.ndarray, shrink_ratio: float, thresh_min: float,
                        thresh_max: float, min_text_size: float) -> None: ...
def labels_make_targets_batch(jobs: list, shrink_ratio: float, thresh_min: float, thresh_max: float,
                              min_text_size: float, threads: int) -> None: ...
