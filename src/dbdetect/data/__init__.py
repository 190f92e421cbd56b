"""Training data: label readers, augmentations and the PyTorch dataset.

>>> from dbdetect.data import load_samples, normalize   # doctest: +SKIP
"""

from .readers import FORMATS, LabelError, Sample, load_samples, read_folder, read_funsd, read_paddle
from .transforms import augment, normalize

__all__ = [
    "FORMATS",
    "LabelError",
    "Sample",
    "load_samples",
    "read_folder",
    "read_funsd",
    "read_paddle",
    "augment",
    "normalize",
]
