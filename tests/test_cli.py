"""The command-line wiring: a subcommand whose module cannot be imported names the cause."""

import importlib

from dbdetect import cli


def test_unimportable_subcommand_names_its_cause(monkeypatch, capsys):
    real = importlib.import_module

    def fake(name, *a, **kw):
        if name == "dbdetect.cli.eval":
            raise ImportError("No module named 'torch'")
        return real(name, *a, **kw)

    monkeypatch.setattr(importlib, "import_module", fake)
    assert cli.main(["eval", "--data", "somewhere", "--model", "ppocrv4"]) == 2
    err = capsys.readouterr().err
    assert "dbdetect eval: error: cannot import dbdetect.cli.eval" in err and "No module named 'torch'" in err
    assert "invalid choice" not in err
    # the others still work, and the help lists the broken one with its reason
    assert cli.main(["tune", "--data", "nowhere-at-all", "--model", "ppocrv4"]) == 2
    assert "nowhere-at-all" in capsys.readouterr().err
    help_text = cli.build_parser().format_help()
    assert "unavailable: cannot import dbdetect.cli.eval" in help_text
