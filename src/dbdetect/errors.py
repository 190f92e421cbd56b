"""Errors every floor may raise; the command line turns them into one line and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input: printed as one line, no traceback."""
