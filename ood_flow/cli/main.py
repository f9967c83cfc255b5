"""The ``oodflow`` application: subcommands are registered from their own modules."""

from __future__ import annotations

import typer

from ood_flow.version import __version__
from ood_flow.cli import common

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
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"oodflow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    common.state["debug"] = debug


def _register() -> None:
    """Import each subcommand module; each adds itself to ``app``."""
    import importlib

    for name in ("train", "score", "evaluate", "report", "embed", "visualize", "info", "demo"):
        try:
            module = importlib.import_module(f"ood_flow.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ood_flow.cli.{name}":
                raise
            continue
        module.register(app)


_register()


def main() -> None:
    common.catch_sigterm()
    app()
