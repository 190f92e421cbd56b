"""The old import path of :mod:`dbdetect.scale.ray_data`; the same module object, so its settings are shared."""

import sys

from .scale import ray_data as _module

sys.modules[__name__] = _module
