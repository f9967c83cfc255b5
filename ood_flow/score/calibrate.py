"""Adding a calibration to a model file: :func:`calibrate_model`, the work behind ``oodflow calibrate``.

It scores held-out in-distribution data exactly as ``score`` would (same code, same settings) and stores
the scores in the model file as its calibration set (:mod:`ood_flow.score.calibration`), atomically; the
weights are untouched, so the model's identity (:func:`~ood_flow.flows.io.model_digest`) and every score
file made with it stay valid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ood_flow import log
from ood_flow.data import SourceOptions, open_with_options
from ood_flow.distributed import writes_files
from ood_flow.errors import AlreadyExists, UsageError
from ood_flow.flows.io import read_model_file, rewrite_extra
from ood_flow.score.calibration import Calibration, Settings, check_method, make
from ood_flow.score.methods import get_method
from ood_flow.score.run import score_source


@dataclass
class CalibrateResult:
    """What :func:`calibrate_model` stored.

    Attributes:
        model: the model file.
        calibration: the calibration it now carries.
        replaced: it replaced one the file carried before.
        skipped: ``(path, reason)`` of inputs skipped as invalid (not part of the calibration).
    """

    model: Path
    calibration: Calibration
    replaced: bool
    skipped: list[tuple[str, str]]


def calibrate_model(model: str | os.PathLike, source: str, *, method: str = "likelihood", dequant_samples: int = 1,
                    precision: str = "fp32", seed: int = 0, batch_size: int = 256, device: str = "cpu",
                    options: SourceOptions | None = None, weights: str | os.PathLike | None = None,
                    overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
                    on_message: Callable[[str], None] | None = None) -> CalibrateResult:
    """Score ``source`` (held-out in-distribution data; default split: test) with ``model`` and store the scores
    as the model file's calibration set, with the settings they were scored under.

    ``score`` then gates only with those settings (``dequant_samples``, ``precision``, the conversions of
    ``options``, ``method``); give the same ones here as the gate will use.

    Raises:
        UsageError: ``source`` is the model's own training data, or ``method`` cannot be calibrated.
        OutputError: the model already carries a calibration (without ``overwrite``), or is being trained.
        InputError, ModelFileError: as for :func:`~ood_flow.score_source`; non-finite scores.

    Example (``m.pt`` from :func:`~ood_flow.train_flow`; docs/api.md runs it)::

        calibrate_model("m.pt", "demo-fashionmnist:test", overwrite=True).calibration.n   # 1000
    """
    path = Path(model)
    extra = read_model_file(path).get("extra") or {}
    check_method(method)
    src = open_with_options(source, "test", options)
    if extra.get("data") is not None and _data_of(src.source) == _data_of(extra["data"]):
        raise UsageError(f"{source}: {path} was trained on this data ({_data_of(extra['data'])}); calibrate with "
                         "held-out in-distribution data (e.g. its test split)")
    replaced = bool(extra.get("calibration"))
    if replaced and not overwrite:
        raise AlreadyExists(f"{path}'s calibration ({extra['calibration'].get('n')} scores of "
                            f"{extra['calibration'].get('source')})")
    progress, on_message = progress or log.progress("calibrate", "samples scored"), on_message or log.messages(
        "calibrate")
    result = score_source(src, path, methods=[method], dequant_samples=dequant_samples, precision=precision, seed=seed,
                          batch_size=batch_size, device=device, options=options, weights=weights, progress=progress,
                          on_message=on_message)
    settings = Settings.from_dict(result.attrs["settings"])
    score = get_method(method).score
    skipped = f", {len(result.skipped)} unreadable skipped" if result.skipped else ""
    cal = make(result.arrays[score], score, f"{src.source} ({result.n} samples{skipped})".replace("  ", " "),
               "calibrate", settings,
               result.attrs["model_digest"])
    if writes_files():  # under torchrun every process holds all the scores; one of them writes the file
        rewrite_extra(path, {"calibration": cal.to_dict(), "calibration_note": None},
                      digest=result.attrs["model_digest"])
    return CalibrateResult(path, cal, replaced, list(result.skipped))


def _data_of(source: str) -> str:
    """The dataset and split, or the file or folder, a SOURCE's provenance text names, without the selection
    made from it (``[limit N]``, ``[class C]``, a shipped sample's size), which may differ from training's."""
    return source.split(" [")[0].split(" (sample")[0].strip()
