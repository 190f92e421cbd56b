"""Type stubs for the compiled module dbdetect._native (see csrc/_native.pyx)."""
import numpy as np

COMPILED: bool

def polygon_area_perimeter(points: np.ndarray) -> tuple[float, float]: ...
