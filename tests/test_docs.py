"""The documentation site: its CLI reference comes from the parsers, and every page is reachable."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if not (ROOT / "mkdocs.yml").is_file():
    pytest.skip("no docs in this tree", allow_module_level=True)


def _hook():
    spec = importlib.util.spec_from_file_location("docs_cli_reference", ROOT / "tools" / "docs_cli_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_reference_lists_every_command_and_flag():
    from dbdetect.cli import build_parser

    hook = _hook()
    text = hook.render()
    parser = build_parser()
    subs = hook._subparsers(parser)
    assert set(subs) >= {"detect", "train", "eval", "tune", "export"}
    for name, sub in subs.items():
        assert f"## `dbdetect {name}`" in text
        for action in sub._actions:
            for flag in action.option_strings:
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (name, flag)
    assert isinstance(parser, argparse.ArgumentParser)


def test_cli_page_has_the_reference_marker():
    page = (ROOT / "docs" / "cli.md").read_text()
    assert _hook().MARKER in page
    assert _hook().on_page_markdown(page, None, None, None).count("```text") == 1 + len(
        _hook()._subparsers(__import__("dbdetect.cli", fromlist=["build_parser"]).build_parser())
    )


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    listed = set(re.findall(r":\s*([\w/.-]+\.md)\s*$", nav, re.M))
    assert pages == listed, (pages - listed, listed - pages)


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 250, f"README.md has {n} lines; move material into docs/"
