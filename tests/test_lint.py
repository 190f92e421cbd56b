"""ruff's lint and format checks over the code, configured in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREES = ["src", "tests", "bench", "tools", "examples"]

pytestmark = pytest.mark.skipif(
    shutil.which("ruff") is None
    and subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True).returncode != 0,
    reason="ruff is not installed (pip install '.[test]')",
)


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args, *TREES], cwd=ROOT, capture_output=True, text=True)


def test_ruff_lint():
    r = _ruff("check", "--output-format", "concise")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_ruff_format():
    r = _ruff("format", "--check")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
