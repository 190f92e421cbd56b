"""The old import path of :mod:`dbdetect.deploy.int8_gates`; the same module object, so its settings are shared."""

import sys

from .deploy import int8_gates as _module

sys.modules[__name__] = _module
