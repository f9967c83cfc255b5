"""Where the report's numbers come from: the models behind the score groups, versions, the gate.

Each score group records the model file it was scored with (path and sha256). The report looks
the file up again: when it is still there, unchanged, its description (architecture, parameter
count, training data) goes into the header; otherwise the header says what was recorded and why
there is no more. Groups scored with different models get a warning that names each one's model.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ood_flow.errors import OodflowError
from ood_flow.fileio import sha256_file
from ood_flow.info import GATE_ATTRS, describe_model


@dataclass
class ModelInfo:
    """One model (or ensemble) that scored some of the report's groups.

    Attributes:
        paths: the model file(s) as recorded at scoring time.
        sha256: their recorded sha256 (one per file).
        groups: the report's groups scored with it.
        description: :func:`~ood_flow.info.describe_model` of the (first) file, if it is still there unchanged.
        note: why there is no description, else None.
    """

    paths: list[str]
    sha256: list[str]
    groups: list[str] = field(default_factory=list)
    description: dict | None = None
    note: str | None = None


def models_of(attrs_by_group: dict[str, dict]) -> list[ModelInfo]:
    """The distinct models of the groups (by recorded sha256), in the order the groups are given."""
    models: dict[tuple, ModelInfo] = {}
    for group, attrs in attrs_by_group.items():
        paths, shas = _as_list(attrs.get("model")), _as_list(attrs.get("model_sha256"))
        digests = _as_list(attrs.get("model_digest"))
        key = tuple(digests) or tuple(shas) or tuple(paths) or ("(not recorded)",)
        if key not in models:
            models[key] = _look_up(paths, shas, digests)
        models[key].groups.append(group)
    return list(models.values())


def mixed_models_warning(models: list[ModelInfo]) -> str | None:
    """One line when the groups come from more than one model, naming each group's model."""
    if len(models) < 2:
        return None
    parts = [f"{', '.join(m.groups)} <- {', '.join(Path(p).name for p in m.paths) or '(model not recorded)'}"
             f" ({m.sha256[0][:12] if m.sha256 else 'no sha256'})" for m in models]
    return f"the groups were scored with {len(models)} different models, so their scores may not compare: " + \
        "; ".join(parts)


def versions() -> dict[str, str]:
    """The versions that made the report."""
    import matplotlib
    import numpy
    import torch

    from ood_flow import __version__

    return {"oodflow": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "matplotlib": matplotlib.__version__, "python": platform.python_version()}


def gate_of(group: str, arrays: dict, attrs: dict) -> dict[str, Any] | None:
    """The recorded gate of a group (threshold, calibration, flags, and the decision ``score`` stored), if it has
    ``is_ood``. The decision is never recomputed: a group of an older oodflow, gated by the OOD fraction alone,
    is labelled so (``rule``)."""
    if "is_ood" not in arrays:
        return None
    flags = arrays["is_ood"].astype(bool)
    gate = {k: attrs[k] for k in GATE_ATTRS if k in attrs}
    gate.update(group=group, n=int(flags.size), n_ood=int(flags.sum()),
                ood_fraction=float(flags.mean()) if flags.size else 0.0)
    recorded = attrs.get("gate_decision")
    if isinstance(recorded, dict):
        gate.update(rule=attrs.get("gate_rule", "batch test"), decision="pass" if recorded.get("passed") else "fail",
                    p_value=recorded.get("p_value"), alpha=recorded.get("alpha"))
    elif gate.get("max_ood_fraction") is not None:
        gate["rule"] = "old rule (fail when the flagged share exceeds the limit; no error rate), not recomputed"
    return gate


def _look_up(paths: list[str], shas: list[str], digests: list[str]) -> ModelInfo:
    info = ModelInfo(paths, shas)
    if not paths:
        info.note = "the score group records no model file"
        return info
    first = Path(paths[0])
    if not first.is_file():
        info.note = f"{first} is no longer there"
    elif _changed(first, shas, digests):
        info.note = f"{first} has changed since these scores were made (its weights differ)"
    else:
        try:
            info.description = describe_model(first)
        except OodflowError as exc:
            info.note = " ".join(str(exc).split())
    return info


def _changed(path: Path, shas: list[str], digests: list[str]) -> bool:
    """Whether the model at ``path`` is not the one recorded: by its weights' digest where recorded (a calibration
    added since changes the file, not the model), else by the file's sha256."""
    if digests:
        from ood_flow.flows.io import read_model_file, record_digest

        try:
            return record_digest(read_model_file(path)) != digests[0]
        except OodflowError:
            return True
    return bool(shas) and sha256_file(path) != shas[0]


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]
