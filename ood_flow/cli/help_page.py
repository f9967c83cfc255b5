"""Help pages that fit the terminal: option names, metavars and choices are never cut, the description
takes the width that is left, and options are grouped in the panels their declarations name.

Typer's own layout gives every column an equal share once space runs short, so at 80 columns names were
cut with an ellipsis and descriptions squeezed into 18 characters, and it prints type names (``<bool>``,
``<int range> [x>=1]``) beside each option. Here each option is one row, ``-n, --count N`` beside its help;
the value's name is the option's ``metavar`` (flags have none) and its bounds are checked as before, not
printed. Every command and group of the application uses :class:`Command` and :class:`Group`.
"""

from __future__ import annotations

import inspect
import os

import typer.core
from rich.console import Console
from rich.highlighter import RegexHighlighter
from rich.measure import Measurement
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.theme import Theme

CONTEXT = {"help_option_names": ["-h", "--help"]}
GENERAL = "Options"  # the panel of options declared without one (--json, --quiet, -h), printed last
NAME, VALUE = "bold cyan", "bold yellow"


class _Options(RegexHighlighter):
    """Option names inside help texts, styled as in the name column."""

    highlights = [r"(^|[^\w-])(?P<name>--?[a-z][\w-]*)"]
    base_style = "help."


def render(command, ctx) -> None:
    """Print ``command``'s help page on stdout, as wide as the terminal (``$COLUMNS``; typer's ``$TERMINAL_WIDTH``)."""
    width = os.environ.get("TERMINAL_WIDTH")
    console = Console(width=int(width) if width and width.isdigit() else None, highlight=False,
                      theme=Theme({"help.name": NAME}))
    console.print(Padding(Text.assemble("Usage: ", (_usage(command, ctx), "bold")), (0, 1, 1, 1)))
    paragraphs = inspect.cleandoc(command.help or "").partition("\f")[0].split("\n\n")
    if paragraphs != [""]:
        text = Text("\n\n").join(Text.from_markup(p, style="" if i == 0 else "dim") for i, p in enumerate(paragraphs))
        console.print(Padding(_Options()(text), (0, 1, 1, 1)))
    for title, rows in _panels(command, ctx):
        console.print(Panel(_table(rows), title=title, title_align="left", border_style="dim"))
    if hasattr(command, "list_commands"):
        commands = [(name, command.get_command(ctx, name)) for name in command.list_commands(ctx)]
        rows = [(Text(name, style=NAME), _first_paragraph(c)) for name, c in commands if c and not c.hidden]
        console.print(Panel(_table(rows), title="Commands", title_align="left", border_style="dim"))
    if command.epilog:
        console.print(Padding(_Options()(Text.from_markup(inspect.cleandoc(command.epilog))), (1, 1, 0, 1)))


def _usage(command, ctx) -> str:
    words = [ctx.command_path, "[OPTIONS]"]
    for param in command.params:
        if param.param_type_name == "argument":
            words.append(_argument(param) if param.required else f"[{_argument(param)}]")
    if hasattr(command, "list_commands"):
        words.append("COMMAND [ARGS]...")
    return " ".join(words)


def _argument(param) -> str:
    """``SOURCE``, ``SOURCES...`` for several; a metavar as given (``SOURCE...``)."""
    return param.metavar or param.name.upper() + ("..." if param.nargs == -1 else "")


def _panels(command, ctx) -> list[tuple[str, list[tuple[Text, Text]]]]:
    """(title, rows) in the order the panels first appear; arguments first, the general options last."""
    panels: dict[str, list] = {}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        argument = param.param_type_name == "argument"
        title = getattr(param, "rich_help_panel", None) or ("Arguments" if argument else GENERAL)
        panels.setdefault(title, []).append((_name(param), _help(param, ctx)))
    order = sorted(panels, key=lambda t: (t != "Arguments", t == GENERAL))  # stable: otherwise as they appear
    return [(title, panels[title]) for title in order]


def _table(rows) -> Table:
    """Names as wide as the longest, never wrapped; the help wraps (a word too long for it folds)."""
    table = Table.grid(padding=(0, 2), expand=True)
    table.add_column(no_wrap=True)
    table.add_column(ratio=1, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _name(param) -> Text:
    """``-n, --count N``, ``--whiten/--no-whiten``, ``--overwrite``; an argument's name, ``SOURCE...``."""
    if param.param_type_name == "argument":
        return Text(_argument(param), style=VALUE)
    text = Text(", ".join(sorted(param.opts, key=lambda o: o.startswith("--"))), style=NAME)
    if param.secondary_opts:
        text.append("/" + "/".join(param.secondary_opts), style=NAME)
    if not (param.is_flag or getattr(param, "count", False)):
        text.append(" " + (param.metavar or param.name.upper()), style=VALUE)
    return text


def _help(param, ctx) -> "_Help":
    """The help text, then ``[default: X]``, ``[env var: X]`` and ``[required]`` as typer shows them."""
    text = _Options()(Text.from_markup(" ".join((getattr(param, "help", None) or "").split())))
    extras = [f"default: {d}" for d in [_default(param, ctx)] if d]
    if getattr(param, "show_envvar", False) and param.envvar:
        extras.append(f"env var: {param.envvar}")
    if param.required:
        extras.append("required")
    return _Help(text, [Text(f"[{extra}]", style="dim") for extra in extras])


def _default(param, ctx) -> str:
    """The default as typer prints it: none for a flag that is off, ``no-whiten`` for a pair that is."""
    if param.param_type_name == "argument" or not param.show_default:
        return ""
    if isinstance(param.show_default, str):
        return param.show_default
    value = param.get_default(ctx, call=False)
    if value is None or callable(value):
        return ""
    if param.is_flag:
        if param.secondary_opts:
            return (param.opts if value else param.secondary_opts)[0].lstrip("-")
        return "" if not value else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


class _Help:
    """A help text wrapped to its column, each ``[...]`` note after it kept whole: on the last line where
    it fits, else on a line of its own (rich would break ``[default: 0]`` at its space)."""

    def __init__(self, text: Text, notes: list[Text]):
        self.text, self.notes = text, notes

    def __rich_measure__(self, console, options) -> Measurement:
        return Measurement.get(console, options, Text(" ").join([self.text, *self.notes]))

    def __rich_console__(self, console, options):
        width = options.max_width
        lines = list(self.text.wrap(console, width, overflow="fold")) if self.text.plain else []
        for note in self.notes:
            if lines and lines[-1].cell_len + 1 + note.cell_len <= width:
                lines[-1].append(" ").append_text(note)
            else:
                lines.append(note.copy())
        yield from lines


def _first_paragraph(command) -> Text:
    text = command.short_help or inspect.cleandoc(command.help or "").split("\n\n")[0]
    return _Options()(Text.from_markup(" ".join(text.split())))


class Command(typer.core.TyperCommand):
    """A subcommand whose ``--help`` (and ``-h``) page is :func:`render`'s."""

    def format_help(self, ctx, formatter) -> None:
        render(self, ctx)


class Group(typer.core.TyperGroup):
    """A group (``oodflow``, ``oodflow visualize``) whose help page is :func:`render`'s."""

    def format_help(self, ctx, formatter) -> None:
        render(self, ctx)
