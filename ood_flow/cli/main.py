"""The ``oodflow`` application: subcommands are registered from their own modules."""

from __future__ import annotations

import os
import sys

import typer

from ood_flow.allocator import keep_freed_memory
from ood_flow.version import __version__
from ood_flow.cli import common, help_page

app = typer.Typer(
    name="oodflow",
    help=(
        "Out-of-distribution detection with normalizing flows.\n\n"
        "Scores are log-likelihoods in nats (higher = more in-distribution); "
        "AUROC treats in-distribution as the positive class."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=help_page.Group,
    context_settings=help_page.CONTEXT,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"oodflow {__version__}")
        raise typer.Exit()


DISTRIBUTED = ("train", "score", "calibrate", "embed")
"""The commands that share their work among torchrun's processes (docs/distributed.md)."""


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    common.state["debug"] = debug
    world = os.environ.get("WORLD_SIZE", "1")
    command = ctx.invoked_subcommand
    if command is not None and command not in DISTRIBUTED and "RANK" in os.environ and world.isdigit() \
            and int(world) > 1:
        common.fail(f"oodflow {command} runs in one process, not under torchrun ({world} processes); "
                    f"torchrun runs {', '.join(DISTRIBUTED)}", 2)  # every process would do the whole job


def _register() -> None:
    """Import each subcommand module; each adds itself to ``app``."""
    import importlib

    for name in ("train", "score", "calibrate", "evaluate", "report", "embed", "visualize", "info", "convert", "demo"):
        try:
            module = importlib.import_module(f"ood_flow.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ood_flow.cli.{name}":
                raise
            continue
        module.register(app)


_register()


def main() -> None:
    """The ``oodflow`` command: usage errors as one line (exit 2), like every other error."""
    keep_freed_memory()  # freed activations are reused, not faulted in again every batch (ood_flow.allocator)
    common.check_environment()
    common.quiet_compiler_warnings()
    common.catch_sigterm()
    try:
        code = app(prog_name="oodflow", standalone_mode=False)
    except typer.Abort:  # end of input where a prompt read it
        sys.stderr.write("error: aborted\n")
        code = 1
    except Exception as exc:  # usage errors (click's, which typer may vendor), raised in non-standalone mode
        if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
            raise
        code = common.usage_error(exc)
    finally:
        common.ignore_stop_signals()
    sys.exit(code if isinstance(code, int) else 0)
