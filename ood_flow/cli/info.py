"""``oodflow info``: what a model, checkpoint, score file or features file holds."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from ood_flow.cli import common, options
from ood_flow.info import describe_file


def info(
    path: Path = typer.Argument(..., help="A file oodflow wrote: model (.pt/.h5), checkpoint, score or features file."),
    json_out: bool = options.Json,
) -> None:
    """Describe a file oodflow wrote: a model, checkpoint, score or features file.

    A model's architecture, parameter count, input shape, training data and steps, best validation bits/dim,
    precision and format; a score file's groups (samples, scores, gate, provenance); a features file's backbone
    and shape. Any other file is an error (exit 1).
    """
    described = describe_file(path)
    if json_out:
        common.print_json(described)
    elif described["kind"] == "scores":
        _print_scores(described)
    else:
        _print_fields(described)


def _print_fields(described: dict) -> None:
    console = common.stdout()
    for key, value in described.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        elif isinstance(value, float):
            value = f"{value:.6g}"
        console.print(f"{key.replace('_', ' ')}: {'-' if value is None else value}", highlight=False, markup=False)


def _print_scores(described: dict) -> None:
    table = Table(title=Text(f"{described['file']}: oodflow score file (format {described['format_version']}), "
                  f"{len(described['groups'])} group(s)"), title_justify="left")
    for col in ("group", "n", "scores", "gate", "model", "source"):
        table.add_column(col, justify="right" if col == "n" else "left")
    for g in described["groups"]:
        prov = g["provenance"]
        gate = g.get("gate")
        gate_text = f"{gate['n_ood']} OOD ({gate['ood_fraction']:.1%})" if gate and "n_ood" in gate else "-"
        model = prov.get("model", "-")
        model = ", ".join(Path(m).name for m in model) if isinstance(model, list) else Path(str(model)).name
        cells = (g["name"], str(g["n"]), ", ".join(g["scores"]), gate_text, model, str(prov.get("source", "-")))
        table.add_row(*(Text(c) for c in cells))  # Text: a source like "x [limit 5]" is not rich markup
    common.stdout().print(table)


def register(app: typer.Typer) -> None:
    common.command(app, info)
