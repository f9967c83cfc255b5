"""What a file oodflow wrote holds: a model (or training checkpoint), a score file or a features file.

:func:`describe_file` returns a plain, JSON-ready dict whose ``kind`` says which; any other file is
an :class:`InputError` (one line, naming the file). Nothing is executed from the file: models are
read with ``weights_only=True`` or from HDF5, score and features files with h5py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py

from ood_flow import hdf5, store
from ood_flow.errors import InputError
from ood_flow.fileio import sha256_file
from ood_flow.model_format import FORMAT as MODEL_FORMAT
from ood_flow.model_format import H5_SUFFIXES, PT_SUFFIXES

FOREIGN = "not a file oodflow wrote (a model .pt/.h5, a score file or a features file)"
GATE_ATTRS = ("threshold", "threshold_score", "threshold_tpr", "threshold_tpr_achieved", "threshold_reference",
              "calibration_n", "calibration_source", "flags_by", "n_ood", "ood_fraction", "max_ood_fraction",
              "gate_rule", "gate_decision")
SKIP_PROVENANCE = ("skipped", "label_names", "n_samples") + GATE_ATTRS  # shown elsewhere, or summarised


def describe_file(path: str | os.PathLike) -> dict[str, Any]:
    """Describe ``path``: ``{"kind": "model" | "checkpoint" | "scores" | "features", "file": ..., ...}``.

    Raises:
        InputError: no such file, a folder, or a file oodflow did not write.
        ModelFileError, ScoreFileError: an oodflow file that is damaged or of a newer format.

    Example (docs/api.md runs it)::

        describe_file("scores.h5")["groups"][0]["n"]  # 10000
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not a file")
    if h5py.is_hdf5(p):
        if store.SCORE_FILE.test(p):
            return describe_scores(p)
        if store.FEATURES_FILE.test(p):
            return describe_features(p)
        if _is_h5_model(p):
            return describe_model(p)
        raise InputError(f"{p}: {FOREIGN}")
    if p.suffix.lower() in PT_SUFFIXES:
        return describe_model(p)
    raise InputError(f"{p}: {FOREIGN}")


def describe_model(path: Path) -> dict[str, Any]:
    """A model or checkpoint file: architecture, size, what it takes (a detector: its backbone, weights,
    transform and standardization), its training and state (finished, stopped early or interrupted), its
    calibration and format. A model fitted in closed form shows no preset or optimiser settings: it used none.
    """
    from ood_flow.flows.io import load_model, model_digest, read_model_file  # torch: only for a model

    record = read_model_file(path)
    extra = record.get("extra") or {}
    flow = load_model(path)
    weights = [t for t in record["state_dict"].values() if t.is_floating_point()]
    history = [h for h in extra.get("history", []) if h.get("val_bpd") is not None]
    train_config = extra.get("train_config") or {}
    preset = extra.get("preset") or train_config.get("preset") or record["config"].get("preset")
    steps = extra.get("steps", (extra.get("position") or {}).get("step"))
    return {
        "kind": "checkpoint" if extra.get("checkpoint") else "model",
        "file": str(path),
        "sha256": sha256_file(path),
        "model": record["model"],
        "config": record["config"],
        **({} if flow.closed_form else {"preset": preset}),
        "parameters": sum(p.numel() for p in flow.parameters()),
        "input_shape": list(record["input_shape"]),
        **_detector(extra, record),
        "training_data": extra.get("data"),
        "negative_data": extra.get("negative_data"),
        "steps": steps,
        **run_state(extra, steps, flow.closed_form),
        "best_val_bits_per_dim": min((h["val_bpd"] for h in history), default=None),
        "train_config": _settings_used(train_config, flow.closed_form) or None,
        "precision": _precision(weights, train_config),
        "model_digest": model_digest(flow),
        **_calibration(extra, path),
        "format": MODEL_FORMAT,
        "format_version": int(record.get("format_version", 0)),
        "oodflow_version": record.get("oodflow_version"),
    }


def _detector(extra: dict, record: dict) -> dict[str, Any]:
    """A feature detector's backbone, weights, transform and standardization under ``input`` and ``detector``;
    nothing for a model of pixels or tables."""
    if not extra.get("detector"):
        return {}
    from ood_flow.embed.detector import detector_info  # imports timm, slow: only for detectors

    config, backbone = record["config"], extra["detector"]
    floor = float(config.get("std_floor") or 0.0) if config.get("standardize", True) else 0.0
    size = (backbone.get("transform") or {}).get("size")
    return {"input": f"images of any size, resized to {size}x{size} px and embedded by {backbone.get('backbone')} "
                     f"into {backbone.get('feature_dim')} features, which the {record['model']} model scores",
            "detector": detector_info(backbone, floor)}


def _settings_used(train_config: dict, closed_form: bool) -> dict:
    """The training configuration; for a closed-form fit only what it used (the held-out splits and their seed)."""
    if not closed_form:
        return train_config
    return {k: train_config[k] for k in ("seed", "val_fraction", "cal_fraction") if k in train_config}


def run_state(extra: dict, steps: int | None, closed_form: bool) -> dict[str, Any]:
    """``status`` (fitted, finished, stopped_early, interrupted, diverged or unknown) and ``state`` in words, from
    what the file records: its steps, the steps the run was to take, early stopping, what stopped it."""
    history, best = extra.get("history") or [], extra.get("best_epoch") or (extra.get("best") or {}).get("epoch")
    if closed_form:
        return {"status": "fitted", "state": "fitted in closed form (no gradient steps)"}
    if extra.get("stopped_early") or (extra.get("position") or {}).get("stopped_early"):
        last = history[-1]["epoch"] if history else "?"
        return {"status": "stopped_early", "state": f"stopped early at epoch {last} (validation bits/dim stopped "
                                                    f"improving), keeping epoch {best}'s weights"}
    total, cfg = extra.get("total_steps"), extra.get("train_config") or {}
    if total is None:  # files of an older oodflow: finished when the last epoch or --max-steps was reached
        ended = bool(history) and history[-1].get("complete") and history[-1].get("epoch") == cfg.get("epochs")
        total = steps if ended or (cfg.get("max_steps") and steps >= cfg["max_steps"]) else None
    if total is None or steps is None:
        return {"status": "unknown", "state": f"step {steps}; the file does not record how many steps were planned"}
    if steps >= total:
        return {"status": "finished", "state": f"finished after {steps:,} steps"}
    by = extra.get("stopped_by")
    if by == "diverged":
        return {"status": "diverged", "state": f"diverged at step {steps:,} of {total:,} (non-finite losses); the last "
                                               "finite model is kept"}
    how = f"by {by}" if by else "(killed, or still training)"
    return {"status": "interrupted", "state": f"interrupted at step {steps:,} of {total:,} {how}; continue with the "
                                              "same train command plus --resume"}


def _calibration(extra: dict, path: Path) -> dict[str, Any]:
    """The calibration a model file carries (source, size, settings), or why it carries none."""
    from ood_flow.score.calibration import add_command

    record = extra.get("calibration")
    if extra.get("checkpoint"):
        return {}
    if not record:
        note = extra.get("calibration_note") or "made by an older oodflow (its validation scores cannot calibrate)"
        return {"calibration": None, "calibration_note": f"{note}; add one with {add_command(str(path))}"}
    shown = {k: record.get(k) for k in ("n", "score", "source", "origin", "step", "settings")}
    return {"calibration": shown}


def describe_scores(path: Path) -> dict[str, Any]:
    """A score file: each group's size, scores, gate and provenance."""
    groups = []
    for name in store.list_groups(path):
        arrays, attrs = store.read_group(path, name)
        n = len(next(iter(arrays.values()))) if arrays else 0
        entry = {"name": name, "n": n, "scores": [k for k in arrays if k not in store.NOT_SCORES and arrays[k].ndim == 1
                                                   and arrays[k].dtype.kind in "iuf"],
                 "ids": "id" in arrays, "labels": "label" in arrays, "skipped": _count_skipped(attrs.get("skipped"))}
        if "is_ood" in arrays:
            entry["gate"] = {k: attrs[k] for k in GATE_ATTRS if k in attrs}
        entry["provenance"] = {k: v for k, v in attrs.items() if k not in SKIP_PROVENANCE}
        groups.append(entry)
    return {"kind": "scores", "file": str(path), "format_version": store.FORMAT_VERSION, "groups": groups}


def describe_features(path: Path) -> dict[str, Any]:
    """A features file: backbone, shape and provenance."""
    shape, labelled, attrs = _features_header(path)
    return {"kind": "features", "file": str(path), "n": shape[0], "dim": shape[1] if len(shape) > 1 else None,
            "labels": labelled, "backbone": attrs.get("backbone"), "image_size": attrs.get("image_size"),
            "weights": attrs.get("weights"), "source": attrs.get("source"),
            "oodflow_version": attrs.get("oodflow_version"), "time": attrs.get("time"),
            "skipped": _count_skipped(attrs.get("skipped")),
            "provenance": {k: v for k, v in attrs.items() if k not in ("skipped", "label_names")}}


def _features_header(path: Path) -> tuple[tuple[int, ...], bool, dict[str, Any]]:
    """Shape of ``features``, whether there are labels, and the attributes, without reading the features."""
    with hdf5.open_file(path, "features") as f:
        if "features" not in f:
            raise InputError(f"{path}: an oodflow features file without a 'features' dataset")
        shape, labelled, attrs = tuple(f["features"].shape), "label" in f, hdf5.unpack_attrs(f.attrs)
    return shape, labelled, {k: v for k, v in attrs.items() if k not in (hdf5.FORMAT_ATTR, hdf5.VERSION_ATTR)}


def _is_h5_model(path: Path) -> bool:
    if path.suffix.lower() not in H5_SUFFIXES:
        return False
    with h5py.File(path, "r") as f:
        value = f.attrs.get("format")
    return (value.decode() if isinstance(value, bytes) else value) == MODEL_FORMAT


def _precision(weights: list, train_config: dict) -> str:
    stored = sorted({str(t.dtype).replace("torch.", "") for t in weights}) or ["(no weights)"]
    trained = train_config.get("precision")
    return "/".join(stored) + (f" (trained in {trained})" if trained else "")


def _count_skipped(value: Any) -> int:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return 0
    return len(value) if isinstance(value, list) else 0
