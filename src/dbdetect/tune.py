"""The old import path of :mod:`dbdetect.evaluation.tune`; the same module object, so its settings are shared."""

import sys

from .evaluation import tune as _module

sys.modules[__name__] = _module
