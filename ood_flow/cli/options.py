"""Options shared by several subcommands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

DataDir = typer.Option(None, "--data-dir", help="Root of named datasets (torchvision layout); default "
                       "$OODFLOW_DATA_DIR, else ~/.cache/oodflow.", envvar="OODFLOW_DATA_DIR", show_envvar=False)
Limit = typer.Option(None, "--limit", min=1, help="Use only the first N samples (deterministic).")
Quiet = typer.Option(False, "--quiet", "-q", help="No progress bars or messages on stderr.")
Json = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
Device = typer.Option("auto", "--device", help="auto, cpu or cuda.")
BatchSize = typer.Option(None, "--batch-size", min=1, help="Samples per batch.")
Seed = typer.Option(0, "--seed", help="Seed for everything random (initialisation, data order, noise).")
SkipInvalid = typer.Option(False, "--skip-invalid", help="Skip unreadable or corrupt input files (reported on "
                           "stderr and recorded) instead of failing.")
Columns = typer.Option(None, "--columns", help="CSV: comma-separated feature columns (default: all numeric).")
LabelColumn = typer.Option(None, "--label-column", help="CSV: column with labels (dropped from the features).")
ClassValue = typer.Option(None, "--class", help="Keep only samples with this label (number or name).")
Resize = typer.Option(False, "--resize", help="Resize images to the model's input size.")
Grayscale = typer.Option(False, "--grayscale", help="Convert colour images to grayscale.")
Rgb = typer.Option(False, "--rgb", help="Repeat grayscale images to 3 channels.")


def split_columns(columns: Optional[str]) -> Optional[list[str]]:
    return [c.strip() for c in columns.split(",") if c.strip()] if columns else None


def existing(path: Path) -> Path:
    return path
