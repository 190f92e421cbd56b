"""The old import path of :mod:`dbdetect.training.ema`; the same module object."""

import sys

from .training import ema as _module

sys.modules[__name__] = _module
