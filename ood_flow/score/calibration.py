"""The calibration set a gate rests on: in-distribution scores of exactly the model's weights, on data that
played no part in training or in any choice, and the settings they were scored under.

``train`` holds out a calibration split beside the validation split (the validation split chooses the
kept epoch, so its scores are optimistic) and scores it with the weights it writes; ``oodflow calibrate``
(:func:`~ood_flow.calibrate_model`) adds or replaces one later from held-out data. A model file carries
the record under ``extra["calibration"]``, or None and ``extra["calibration_note"]`` saying why and how
to add one. The record names the model's :func:`~ood_flow.flows.io.model_digest`, so it is never used with
other weights.

The gate's error rate holds only for scores exchangeable with the calibration scores, so ``score`` gates
only with the settings they were scored under (:meth:`Settings.mismatches`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ood_flow.errors import UsageError

VERSION = 1
UNGATEABLE = {"bn-train": "bn-train's scores depend on the batch they are scored in, so no calibration holds for "
                          "them"}
"""Methods whose scores cannot be calibrated, and why."""


@dataclass(frozen=True)
class Settings:
    """How scores were computed, as far as exchangeability with the calibration depends on it.

    The method is the score's own (each method computes scores of its own names), so the calibration's
    ``score`` stands for it.

    Attributes:
        dequant_samples: dequantization draws averaged (images).
        precision: of the st-networks (``fp32``/``bf16``).
        backbone_precision: of a feature detector's backbone (None for a model on pixels or tables).
        resize, grayscale, rgb: the conversions allowed to fit the images to the model.
    """

    dequant_samples: int = 1
    precision: str = "fp32"
    backbone_precision: str | None = None
    resize: bool = False
    grayscale: bool = False
    rgb: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Settings:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def mismatches(self, other: Settings) -> list[str]:
        """What differs in ``other`` (the scoring run) from these (the calibration's), as command-line options,
        e.g. ``["--dequant-samples 4 (calibrated with 1)"]``.

        Example:
            >>> Settings().mismatches(Settings(dequant_samples=4, resize=True))
            ['--dequant-samples 4 (calibrated with 1)', '--resize (calibrated without)']
        """
        out = []
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine == theirs:
                continue
            option = "--precision" if f.name == "backbone_precision" else "--" + f.name.replace("_", "-")
            if isinstance(mine, bool):
                out.append(f"{option} (calibrated with it)" if mine else f"{option} (calibrated without)")
            else:
                what = " of the backbone" if f.name == "backbone_precision" else ""
                out.append(f"{option} {theirs}{what} (calibrated with {mine})")
        return out


@dataclass(frozen=True, eq=False)
class Calibration:
    """In-distribution scores that set a gate's threshold and its error rate.

    Attributes:
        values: the scores, sorted (float64).
        score: the score they are (e.g. ``log_likelihood``).
        source: where they came from, in words (data, split, size).
        origin: ``train`` (the calibration split), ``calibrate`` (added later), or ``reference`` (a score
            group given with ``score --reference``).
        settings: how they were scored (None: not recorded, a reference group of an older oodflow).
        model_digest: the :func:`~ood_flow.flows.io.model_digest` of the weights that scored them (None: not
            recorded).
        step: the training step of those weights, where known.
    """

    values: np.ndarray
    score: str
    source: str
    origin: str
    settings: Settings | None = None
    model_digest: str | None = None
    step: int | None = None

    @property
    def n(self) -> int:
        return int(self.values.size)

    def to_dict(self) -> dict:
        """For a model file: plain values only (it loads with ``weights_only=True`` and into HDF5 JSON)."""
        return {"version": VERSION, "score": self.score, "n": self.n, "values": [float(v) for v in self.values],
                "source": self.source, "origin": self.origin,
                "settings": self.settings.to_dict() if self.settings else None, "model_digest": self.model_digest,
                "step": self.step}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        settings = Settings.from_dict(d["settings"]) if d.get("settings") else None
        return cls(np.sort(np.asarray(d["values"], dtype=np.float64)), str(d["score"]), str(d.get("source", "")),
                   str(d.get("origin", "train")), settings, d.get("model_digest"), d.get("step"))

    def describe(self) -> str:
        """One line: ``150 log_likelihood scores of <source>``."""
        return f"{self.n} {self.score} scores of {self.source}"


def make(values, score: str, source: str, origin: str, settings: Settings | None, model_digest: str | None,
         step: int | None = None) -> Calibration:
    """A calibration from raw scores; NaN or infinite scores are refused (a gate cannot rest on them)."""
    v = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if v.size == 0:
        raise ValueError(f"{source}: no calibration scores")
    if not np.isfinite(v).all():
        bad = int((~np.isfinite(v)).sum())
        raise ValueError(f"{source}: {bad} of {v.size} calibration scores are not finite")
    return Calibration(v, score, source, origin, settings, model_digest, step)


def add_command(model: str) -> str:
    """The command that adds a calibration to ``model``."""
    return f"oodflow calibrate --model {model} SOURCE (held-out in-distribution data, not the training data)"


def from_model(extra: dict, model: str, digest: str) -> Calibration:
    """The calibration a model file carries, checked to belong to its weights (``digest``).

    Raises:
        UsageError: there is none (the message says why, and how to add one or gate with ``--reference``),
            or it was scored with other weights.
    """
    record = extra.get("calibration") if isinstance(extra, dict) else None
    if not record:
        why = (extra.get("calibration_note") if isinstance(extra, dict) else None) or (
            "it was made by an older oodflow, whose validation scores chose the kept epoch and cannot calibrate a "
            "gate")
        raise UsageError(f"{model} carries no calibration: {why}; add one with {add_command(model)}, or pass "
                         "--reference FILE:GROUP with in-distribution scores of this model")
    cal = Calibration.from_dict(record)
    if cal.model_digest is not None and cal.model_digest != digest:
        raise UsageError(f"{model}: its calibration was scored with other weights (model digest "
                         f"{cal.model_digest[:12]}, the file's {digest[:12]}); replace it with "
                         f"{add_command(model)} --overwrite")
    return cal


def check_method(method: str) -> None:
    """Refuse a method whose scores cannot be calibrated (:data:`UNGATEABLE`)."""
    if method in UNGATEABLE:
        raise UsageError(f"--method {method}: {UNGATEABLE[method]}; gate on another method's score")


def method_of(score: str) -> str | None:
    """The ``--method`` that computes ``score`` (None: no method's)."""
    from ood_flow.score.methods import METHODS

    return next((m.name for m in METHODS.values() if m.score == score), None)


def check_settings(cal: Calibration, score: str, current: Settings, where: str) -> None:
    """Refuse to gate when the scoring run would not give scores exchangeable with the calibration's.

    Raises:
        UsageError: another score, or settings that differ (each named, with the calibration's value).
    """
    if cal.score != score:
        raise UsageError(f"{where}: the calibration holds {cal.score} scores, not {score}; gate on {cal.score} "
                         "(--gate-score) or calibrate that score")
    check_method(method_of(score))
    if cal.settings is None:
        return
    diff = cal.settings.mismatches(current)
    if diff:
        raise UsageError(f"{where}: this run's settings differ from the calibration's, so its error rate would not "
                         f"hold: {'; '.join(diff)}; score with the calibration's settings, or recalibrate with them "
                         "(oodflow calibrate ... --overwrite)")
