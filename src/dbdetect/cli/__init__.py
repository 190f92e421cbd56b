"""The ``dbdetect`` command line: one module per command; argparse and printing only.

Each command's ``run(args)`` calls one function of the floors below.
"""

from ..errors import UserError
from .main import build_parser, main

__all__ = ["UserError", "build_parser", "main"]
