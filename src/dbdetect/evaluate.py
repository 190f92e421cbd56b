"""The old import path of :mod:`dbdetect.evaluation.protocol`; the same module object, so its settings are shared."""

import sys

from .evaluation import protocol as _module

sys.modules[__name__] = _module
