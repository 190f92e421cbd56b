"""The old import path of :mod:`dbdetect.deploy.torch_int8`; the same module object, so its settings are shared."""

import sys

from .deploy import torch_int8 as _module

sys.modules[__name__] = _module
