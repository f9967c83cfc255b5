"""Every help page at 60, 80 and 120 columns: as wide as the terminal, nothing cut with an ellipsis, no type
names beside the options, every option listed whole with its value's name, and ``-h`` as well as ``--help``."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from ood_flow.cli.main import app

WIDTHS = (60, 80, 120)
TYPE_NOISE = re.compile(r"<(bool|str|int|float|path|text|list)\b|<int range>|<float range>|\bx[<>]=")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _commands(command, path: tuple[str, ...] = ()):
    """The application and every (sub)command, as (argv path, command)."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))
IDS = [" ".join(path) or "oodflow" for path, _ in COMMANDS]


def help_page(path, width: int, flag: str = "--help") -> str:
    result = CliRunner().invoke(app, [*path, flag], env={"COLUMNS": str(width), "TERMINAL_WIDTH": None})
    assert result.exit_code == 0, f"oodflow {' '.join(path)} {flag}: exit {result.exit_code}\n{result.output}"
    return ANSI.sub("", result.stdout)


def _listed(name: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def test_every_command_is_checked():
    assert {"oodflow", "train", "score", "calibrate", "visualize latents", "convert flows-ood"} <= set(IDS)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("path, command", COMMANDS, ids=IDS)
def test_help_fills_the_width_and_cuts_nothing(path, command, width):
    text = help_page(path, width)
    lengths = [len(line) for line in text.splitlines()]
    assert max(lengths) == width, f"the page is {max(lengths)} wide at COLUMNS={width}: the width did not apply"
    cut = [line for line in text.splitlines() if "…" in line]
    assert not cut, f"cut with an ellipsis at {width} columns: {cut}"
    noise = [line for line in text.splitlines() if TYPE_NOISE.search(line)]
    assert not noise, f"type names at {width} columns: {noise}"
    for param in command.params:
        if param.param_type_name == "argument":
            assert _listed(param.metavar or param.name.upper(), text), f"argument {param.name} missing"
            continue
        for name in [*param.opts, *param.secondary_opts]:
            assert _listed(name, text), f"{name} missing at {width} columns"
        if not param.is_flag:  # the value's name whole, beside the option's longest name
            assert f"{max(param.opts, key=len)} {param.metavar}" in text, f"{param.opts} {param.metavar}"


@pytest.mark.parametrize("path, command", COMMANDS, ids=IDS)
def test_every_value_has_a_short_name_and_flags_none(path, command):
    """Typer would print the type (``<int range> [x>=1]``) where an option names no metavar."""
    for param in command.params:
        if param.param_type_name == "option" and not param.is_flag:
            assert param.metavar and len(param.metavar) <= 16 and " " not in param.metavar, (path, param.opts)


@pytest.mark.parametrize("path, command", COMMANDS, ids=IDS)
def test_h_is_help(path, command):
    assert help_page(path, 80, "-h") == help_page(path, 80)


def test_train_help_fits_about_two_screens_at_80_columns():
    text = help_page(["train"], 80)
    assert len(text.splitlines()) <= 130
    for panel in ("Data", "Model", "Training", "Detector", "Output", "Runtime", "Options"):
        assert f"╭─ {panel} ─" in text
