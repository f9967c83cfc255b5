"""``oodflow convert``: model files of other code as oodflow model files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ood_flow.cli import common, help_page, options

convert_app = typer.Typer(no_args_is_help=True, help="Model files of other code as oodflow model files.",
                          cls=help_page.Group, context_settings=help_page.CONTEXT)


def _shape(text: Optional[str]) -> Optional[tuple[int, int, int]]:
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise typer.BadParameter(f"{text!r} is not C,H,W (three positive integers, e.g. 1,28,28)")
    return shape


def flows_ood(
    checkpoint: Path = typer.Argument(..., help="A checkpoint of PolinaKirichenko/flows_ood's RealNVP "
                                      "({'net': state_dict, ...}, keys prefixed 'module.')."),
    out: Path = typer.Option(..., "--out", metavar="FILE", help="Model file to write (.pt or .h5)."),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", callback=_shape, metavar="C,H,W",
                                              help="C,H,W of the images (default 1,28,28 for one channel, 3,32,32 "
                                                   "for three)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing model file."),
    quiet: bool = options.Quiet,
) -> None:
    """Convert the authors' multi-scale RealNVP (Kirichenko et al. 2020's code) to an oodflow model.

    The architecture (scales, channels, blocks, skip path, batch norm) is read from the keys and
    shapes. oodflow's log-likelihoods are of the 8-bit images; the flow's density of the dequantized
    input y = (255x + u)/256 is the authors' log-likelihood plus D*log(256/255), the term their logit
    layer adds for scaling x by 255/256 (docs/models.md, "The authors' checkpoints").
    """
    from ood_flow.flows.convert import convert_flows_ood_file, log_likelihood_offset

    flow = convert_flows_ood_file(checkpoint, out, input_shape=input_shape, overwrite=overwrite)
    cfg = flow.config
    common.message(f"wrote {out}: realnvp {flow.input_shape}, {cfg.scales} scales, {cfg.channels} channels, "
                   f"{cfg.blocks} blocks, net {cfg.net}; {sum(p.numel() for p in flow.parameters()):,} parameters; "
                   f"its log p(y) = the authors' log-likelihood + {log_likelihood_offset(flow):.4f} nats", quiet)


def register(app: typer.Typer) -> None:
    common.command(convert_app, flows_ood, "flows-ood")
    app.add_typer(convert_app, name="convert", help="Model files of other code as oodflow model files: flows-ood.")
