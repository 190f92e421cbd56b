"""The old import path of :mod:`dbdetect.training.losses`; the same module object."""

import sys

from .training import losses as _module

sys.modules[__name__] = _module
