"""Tests of the keymodels command line: `models`, `--version`, `--help` everywhere, and error exits."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

import keymodels
from keymodels.cli import build_parser, main
from keymodels.cli import models as models_cmd
from keymodels.errors import InvalidInputError
from keymodels.registry import list_models


def _subcommands() -> list[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return sorted(actions[0].choices)


def test_models_lists_every_registered_name(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in list_models():
        assert name in out
    # the published sizes are shown with the parameter count and GFLOPs per image
    tiny = next(line for line in out.splitlines() if line.startswith("vit_tiny_patch16_224 "))
    assert "5.72M" in tiny and "2.5" in tiny and "3×224×224" in tiny


def test_models_json_and_pattern(capsys):
    assert main(["models", "vit_*_patch16_224", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["models"]
    assert [r["name"] for r in rows] == list_models("vit_*_patch16_224")
    by_name = {r["name"]: r for r in rows}
    assert by_name["vit_base_patch16_224"]["params"] == 86_567_656
    assert by_name["vit_base_patch16_224"]["gflops"] == pytest.approx(35.1, rel=0.01)
    assert main(["models", "nothing_*"]) == 2
    assert "no registered model matches 'nothing_*'" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"keymodels {keymodels.__version__}"


def test_python_dash_m_version():
    result = subprocess.run(
        [sys.executable, "-m", "keymodels", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.strip() == f"keymodels {keymodels.__version__}"


def test_help_on_the_program(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in _subcommands():
        assert name in out


@pytest.mark.parametrize("command", _subcommands())
def test_help_on_every_command(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: keymodels {command}")


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: keymodels" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no-such-command"], "invalid choice: 'no-such-command'"),
        (["models", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def _failing_summary(name: str) -> dict:
    raise InvalidInputError("something was wrong,\n   expected something else")


def test_library_error_exits_2_with_one_line_and_no_traceback(capsys, monkeypatch):
    monkeypatch.setattr(models_cmd, "model_summary", _failing_summary)
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err == "keymodels models: error: something was wrong, expected something else\n"


def test_debug_shows_the_traceback(capsys, monkeypatch):
    monkeypatch.setattr(models_cmd, "model_summary", _failing_summary)
    assert main(["--debug", "models"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "_failing_summary" in err
    assert err.rstrip().splitlines()[-1].startswith("keymodels models: error: something was wrong")


def test_a_closed_pipe_is_not_an_error(capsys, monkeypatch):
    def closed_pipe(name: str) -> dict:  # `keymodels eval RUN | head -2`: head has exited
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(models_cmd, "model_summary", closed_pipe)
    assert main(["models"]) == 0
    assert capsys.readouterr().err == ""
