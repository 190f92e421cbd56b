"""MkDocs hook: the CLI reference page is the argparse parsers' own help, so it cannot drift."""

from __future__ import annotations

import argparse

MARKER = "<!-- dbdetect-cli-reference -->"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def render() -> str:
    """Markdown: one section per ``dbdetect`` command with its ``--help`` text."""
    from dbdetect.cli import build_parser

    parser = build_parser()
    parts = ["## `dbdetect`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in _subparsers(parser).items():
        parts += [f"## `dbdetect {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown
