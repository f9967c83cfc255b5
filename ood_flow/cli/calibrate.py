"""``oodflow calibrate``: score held-out in-distribution data and store it as a model file's calibration set,
the one ``score``'s gate rests on. The work is :func:`ood_flow.calibrate_model`; this module parses and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ood_flow.cli import common, options


CALIBRATION = "Calibration"


def calibrate(
    source: str = typer.Argument(..., help="Held-out in-distribution SOURCE (default split: test), never the "
                                 "model's training data."),
    data_dir: Optional[str] = options.DataDir,
    limit: Optional[int] = options.Limit,
    skip_invalid: bool = options.SkipInvalid,
    resize: bool = options.Resize,
    grayscale: bool = options.Grayscale,
    rgb: bool = options.Rgb,
    columns: Optional[str] = options.Columns,
    label_column: Optional[str] = options.LabelColumn,
    class_value: Optional[str] = options.ClassValue,
    model: Path = typer.Option(..., "--model", metavar="FILE", rich_help_panel=CALIBRATION,
                               help="Model file (.pt/.h5) to store the calibration in."),
    weights: Optional[Path] = options.in_panel(options.Weights, CALIBRATION),
    method: str = typer.Option("likelihood", "--method", metavar="NAME", rich_help_panel=CALIBRATION,
                               help="The method whose score the gate will use (as score's --method; bn-train cannot "
                               "be calibrated)."),
    dequant_samples: int = typer.Option(1, "--dequant-samples", min=1, metavar="K", rich_help_panel=CALIBRATION,
                                        help="Dequantization draws averaged; score then gates only with the same "
                                        "number."),
    seed: int = typer.Option(0, "--seed", metavar="N", rich_help_panel=CALIBRATION, help="Dequantization seed."),
    overwrite: bool = typer.Option(False, "--overwrite", rich_help_panel=CALIBRATION,
                                   help="Replace a calibration the model file carries."),
    device: str = options.device_option(),
    precision: str = options.precision_option("fp32"),
    batch_size: int = typer.Option(256, "--batch-size", min=1, metavar="N", rich_help_panel=options.RUNTIME,
                                   help="Samples per forward pass."),
    json_out: bool = options.Json,
    quiet: bool = options.Quiet,
) -> None:
    """Calibrate MODEL's gate on SOURCE: score it as `oodflow score` would and store the scores in the model file.

    The file is replaced atomically; the weights, and so the model's identity in score files, are untouched.
    A gate's error rate holds for data exchangeable with the calibration set: use in-distribution data the
    model never trained on and that chose nothing (not the data you tune on), as much as you can spare, and
    the settings (--dequant-samples, --precision, --resize/--grayscale/--rgb, --method) the gate will use.
    `oodflow info MODEL` shows the calibration a model carries.
    """
    from ood_flow.score.calibrate import calibrate_model
    from ood_flow.score.evidence import flag_rate, order_rank
    from ood_flow.score.threshold import rank_at_tpr

    data = options.source_options(data_dir, limit, skip_invalid, columns, label_column, class_value, resize,
                                  grayscale, rgb)
    report = common.Reporter("calibrate", quiet, info=source)

    def show(r) -> None:
        cal = r.calibration
        rate, (low, high) = flag_rate(order_rank(cal.n, rank_at_tpr(cal.n, 0.95)), cal.n)
        if json_out:
            common.print_json({"model": str(r.model), "replaced": r.replaced, "n": cal.n, "score": cal.score,
                               "source": cal.source, "settings": cal.settings.to_dict(), "skipped": len(r.skipped)})
            return
        common.message(f"{r.model}: {'replaced its calibration with' if r.replaced else 'calibrated on'} "
                       f"{cal.describe()}; at --tpr 0.95 good data will be flagged at {rate:.1%} "
                       f"[{low:.1%}, {high:.1%}]", quiet)

    common.run(lambda: calibrate_model(model, source, method=method, dequant_samples=dequant_samples,
                                       precision=precision, seed=seed, batch_size=batch_size, device=device,
                                       options=data, weights=weights, overwrite=overwrite, progress=report.progress,
                                       on_message=report.message), show, report)


def register(app: typer.Typer) -> None:
    common.command(app, calibrate)
