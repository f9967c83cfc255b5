"""Scoring a SOURCE under trained flows: :func:`score_source`, the work behind ``oodflow score``.

It loads the model(s), reads the source and fits it to the model, computes the chosen methods
(sharing forward passes), applies a gate fitted on a reference group if asked, and writes one
group of a score file with its provenance.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ood_flow import distributed, hdf5, log, runtime, store
from ood_flow.data import Dataset, Source, SourceOptions, TrainedOn, fit_to_model, open_with_options
from ood_flow.errors import GateFailed, InputError, UsageError
from ood_flow.fileio import check_output, sha256_file
from ood_flow.flows import Flow, load_checkpoint, load_model
from ood_flow.flows.io import model_digest
from ood_flow.runtime import Runtime
from ood_flow.score.calibration import Settings
from ood_flow.score.evidence import Decision
from ood_flow.score.gate import Gate, GateSpec, apply_gate, gate_for_run, gate_score
from ood_flow.score.batched import Scored, check_methods, merged, score_batches
from ood_flow.score.methods import Method, ScoreContext, get_method, total_passes
from ood_flow.validation import check_number, check_seed
from ood_flow.version import __version__


@dataclass
class ScoreResult:
    """The scores of one source.

    Attributes:
        group: the score group's name.
        arrays: per-sample scores (``log_likelihood``, ...; ``is_ood`` when gated), float64 (N,).
        ids, labels: per-sample ids and labels (None when unknown).
        attrs: the group's provenance attributes.
        source: where the samples came from.
        out: the score file written, or None.
        skipped: ``(path, reason)`` of inputs skipped as invalid.
        gate: the gate applied, or None.
        decision: the batch decision (``gate.max_ood_fraction``), or None.
    """

    group: str
    arrays: dict[str, np.ndarray]
    ids: np.ndarray
    labels: np.ndarray | None
    attrs: dict
    source: str
    out: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    gate: Gate | None = None
    decision: Decision | None = None

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def score_names(self) -> list[str]:
        """The stored scores, sorted (``is_ood`` and ``p_value`` are a flag and evidence, not scores)."""
        return sorted(k for k in self.arrays if k not in store.NOT_SCORES)


def score_source(source: str | Sequence[str] | Dataset, models: str | os.PathLike | Sequence[str | os.PathLike], *,
                 methods: Sequence[str] = ("likelihood",), out: str | os.PathLike | None = None,
                 name: str | None = None, overwrite: bool = False, gate: GateSpec | None = None,
                 background: str | os.PathLike | None = None, compressor: str = "png", dequant_samples: int = 1,
                 batch_size: int = 256, seed: int = 0, device: str = "cpu", precision: str = "fp32",
                 options: SourceOptions | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 on_message: Callable[[str], None] | None = None,
                 weights: str | os.PathLike | None = None) -> ScoreResult:
    """Score every sample of ``source`` with ``methods`` (see :data:`~ood_flow.score.methods.METHODS`).

    Args:
        source: SOURCE text (default split: test), a list of image files and folders scored as one group in
            the order given (``name`` then required), or a :class:`~ood_flow.data.Dataset`.
        models: model file(s); the first is *the* model, all are the ensemble of ``waic``.
        out: score file to create or add the group to; None keeps the scores in memory only.
        name: group name (default: from the source, e.g. ``mnist-test``).
        overwrite: replace an existing group of that name.
        gate: a gate calibrated on a reference group, or (``gate.reference`` None) on the calibration the
            model file carries (:mod:`ood_flow.score.gate`); adds ``is_ood`` and ``p_value``, and with
            ``gate.max_ood_fraction`` the batch decision (``result.decision``). Gating needs the settings the
            calibration was scored under (dequantization draws, precision, conversions, method).
        background: the background flow of ``likelihood-ratio``.
        dequant_samples, seed: the dequantization noise (a function of seed and sample id).
        device, precision: where to run, and the precision of the st-networks (of a feature detector: of its
            backbone; its flow runs in fp32), ``fp32``, ``bf16`` or ``auto``, resolved once
            (:mod:`ood_flow.runtime`); the one used is recorded in the group's provenance.
        options: how to read the source and fit it to the model.
        progress: called with (samples done, total) over all forward passes (default: logged to
            ``ood_flow.score``, see :mod:`ood_flow.log`).
        on_message: receives warnings and skipped inputs, one line each (default: logged likewise).
        weights: a feature detector's backbone weights (default: found as ``embed`` finds them,
            hash-checked).

    Under torchrun every process calls this alike: each scores whole batches of the single-process batch
    grid, rank 0 writes the group with the rows in the original order, and every process returns it.

    Raises:
        InputError, ModelFileError, ScoreFileError, UsageError: before any work where possible (``NoBfloat16``,
            a usage error: bf16 asked for where the device cannot run it).
        GateFailed: after saving, when the batch test finds significant evidence (at ``gate.alpha``) that more
            than ``gate.max_ood_fraction`` of the source is OOD; ``.result`` holds the result.

    Example (``m.pt`` from :func:`~ood_flow.train_flow`; docs/api.md runs the whole sequence)::

        r = score_source("demo-mnist", "m.pt", out="scores.h5", options=SourceOptions(limit=10))
        r.arrays["log_likelihood"].shape   # (10,)
    """
    _check_settings(dequant_samples, batch_size, seed)
    if isinstance(source, (list, tuple)) and len(source) > 1 and name is None:
        raise UsageError(f"{len(source)} SOURCEs are scored as one group: name it with --name")
    if name is not None:
        try:
            hdf5.check_name(name, "group")
        except ValueError as exc:  # the user's choice, refused before any work: a usage error
            raise UsageError(f"--name: {exc}") from None
    if out is not None:
        check_output(out, kind=store.SCORE_FILE, replaceable=True)  # the group is checked once it is known
    chosen = tuple(get_method(m) for m in dict.fromkeys(methods))
    paths = (Path(models),) if isinstance(models, (str, os.PathLike)) else tuple(Path(m) for m in models)
    job = _Job(source, paths, chosen, gate_score([m.score for m in chosen], gate), name, out, overwrite, gate,
               background, compressor, dequant_samples, batch_size, seed, options or SourceOptions(), weights,
               progress or log.progress("score", "samples scored"), on_message or log.messages("score"))
    with runtime.session(device, st=precision, backbone=precision) as rt:
        return _score(job, rt)


@dataclass(frozen=True)
class _Job:
    """What :func:`score_source` was asked to do, checked: everything but how it runs (the runtime)."""

    source: Any
    paths: tuple[Path, ...]
    methods: tuple[Method, ...]
    gate_score: str | None
    name: str | None
    out: Any
    overwrite: bool
    gate: GateSpec | None
    background: Any
    compressor: str
    dequant_samples: int
    batch_size: int
    seed: int
    options: SourceOptions
    weights: Any
    progress: Callable[[int, int], None]
    say: Callable[[str], None]


def _score(job: _Job, rt: Runtime) -> ScoreResult:
    flows, background, extra = _load_models(job, rt)
    rt = rt.for_detector() if extra.get("detector") else rt
    digests = [model_digest(f) for f in flows]
    src = open_with_options(job.source, "test", job.options, name=job.name)
    settings = _settings(job, rt, extra, src)
    fitted = gate_for_run(job.gate, job.gate_score, list(job.paths), extra, digests, settings)
    group = job.name or src.name
    if job.out is not None:
        rt.dist.agree(lambda: store.check_score_output(job.out, group, overwrite=job.overwrite), writer_only=True)
    ctx = ScoreContext(flows, torch.zeros(0), torch.zeros(0, dtype=torch.int64), job.batch_size, job.dequant_samples,
                       job.seed, options={"compressor": job.compressor}, background=background)
    src, batches, images, read_as = _batches(src, flows[0], extra, job, rt)
    with rt.st_networks():
        scored = _compute(list(job.methods), ctx, src, batches, images, job.progress, job.say, rt.dist)
    for path, reason in src.skipped:
        job.say(f"skipped {path}: {reason}")
    attrs = {**_provenance(src, scored, job), **ctx.attrs,
             "precision": rt.backbone if extra.get("detector") else rt.st,  # log-densities in fp32
             "model_digest": digests if len(digests) > 1 else digests[0], "settings": settings.to_dict()}
    if read_as:  # a feature detector: its inputs are features, never dequantized
        attrs.update(detector_input=read_as, dequantization="none")
    decision = apply_gate(fitted, job.gate, job.gate_score, scored.arrays, attrs, len(src.skipped)) \
        if fitted is not None else None
    if decision is not None and decision.too_small():
        job.say(decision.too_small())
    if job.out is not None and rt.dist.writer:
        store.write_group(job.out, group, {**scored.arrays, **scored.ids_labels()}, attrs, overwrite=job.overwrite)
    result = ScoreResult(group, scored.arrays, np.asarray(scored.ids, dtype=str), scored.labels, attrs, src.source,
                         Path(job.out) if job.out is not None else None, list(src.skipped), fitted, decision)
    if decision is not None and not decision.passed:
        raise GateFailed(f"{group}: {decision.sentence()}", result=result)
    return result


def _load_models(job: _Job, rt: Runtime) -> tuple[list[Flow], Flow | None, dict]:
    """The flows of ``--model`` and the background flow, prepared for ``rt``, and the first model's ``extra``
    record; every model takes the same inputs, and extra models are only used by waic (said so)."""
    first, extra = load_checkpoint(job.paths[0], device=rt.device)
    flows = [rt.prepare(f) for f in [first] + [load_model(m, device=rt.device) for m in job.paths[1:]]]
    background = _load_background(job, flows[0], rt)
    for path, flow in zip(job.paths[1:], flows[1:]):
        if flow.input_shape != flows[0].input_shape:
            raise InputError(f"{path}: expects inputs of shape {flow.input_shape}, but {job.paths[0]} "
                             f"{flows[0].input_shape}; ensemble members must take the same inputs")
    if len(flows) > 1 and "waic" not in [m.name for m in job.methods]:
        job.say(f"warning: {len(flows)} models given; only --method waic uses more than the first")
    return flows, background, extra


def _load_background(job: _Job, flow: Flow, rt: Runtime) -> Flow | None:
    if job.background is None:
        return None
    if "likelihood-ratio" not in [m.name for m in job.methods]:
        job.say("warning: --background-model is used only by --method likelihood-ratio; ignored")
        return None
    background = rt.prepare(load_model(job.background, device=rt.device))
    if background.input_shape != flow.input_shape:
        raise InputError(f"{job.background}: background model expects inputs of shape {background.input_shape}, "
                         f"the model {flow.input_shape}")
    return background


def _settings(job: _Job, rt: Runtime, extra: dict, src: Source) -> Settings:
    """How this run computes its scores, as the calibration records them (see
    :class:`~ood_flow.score.calibration.Settings`): a detector's flow runs in fp32 on features made by its backbone
    in ``rt.backbone``, or in the precision a features file records."""
    if extra.get("detector"):
        backbone = (src.meta.get("precision") or "fp32") if src.kind == "vector" else rt.backbone
        return Settings(dequant_samples=1, precision=rt.st, backbone_precision=backbone)
    o = job.options
    return Settings(dequant_samples=job.dequant_samples if src.kind == "image" else 1, precision=rt.st,
                    resize=o.resize, grayscale=o.grayscale, rgb=o.rgb)


def _check_settings(dequant_samples: int, batch_size: int, seed: int) -> None:
    check_number("--dequant-samples", dequant_samples, low=1, integer=True)
    check_number("--batch-size", batch_size, low=1, integer=True)
    check_seed("--seed", seed)


def _batches(src: Source, flow: Flow, extra: dict, job: _Job, rt: Runtime):
    """The batches to score, whether they are images (dequantized), and for a feature detector how its
    inputs are read (images embedded on the fly, or a features file of its backbone checked)."""
    record = extra.get("detector")
    if not record:
        trained = TrainedOn.from_record(job.paths[0].name, extra.get("data"))
        fitted, transform = fit_to_model(src, flow.input_shape, job.options, trained)
        return fitted, fitted.batches(job.batch_size, transform), src.kind == "image", None
    from ood_flow.embed.detector import detector_batches  # imports timm, slow: only for detectors

    batches, read_as = detector_batches(record, src, flow.input_shape, job.batch_size, rt,
                                        weights=str(job.weights) if job.weights else None)
    return src, batches, False, read_as


def _compute(methods: list[Method], ctx: ScoreContext, src: Source, batches, images: bool, progress, say,
             dist: distributed.Dist) -> Scored:
    """Every method on every batch of ``src`` (this process's batches, then everyone's rows in order);
    checked before anything is read (an error is then the only thing reported)."""
    check_methods(methods, ctx, ctx.flow.input_shape, images)
    passes = total_passes(methods, len(ctx.flows))
    total, done = len(src) * passes, [0]

    def advance(k: int) -> None:
        done[0] += k * dist.world  # this process's share stands for all of them
        if progress is not None:
            progress(min(done[0], total), total)

    scored = merged(score_batches(methods, distributed.own_batches(batches, dist), ctx, progress=advance),
                     ctx.batch_size, dist)
    if progress is not None:  # the true total once the files are read (unreadable ones are skipped)
        progress(len(scored) * passes, len(scored) * passes)
    scored.skipped = list(src.skipped)
    for note in ctx.notes:
        say(f"warning: {note}")
    return scored


def _provenance(src: Source, ds: Scored, job: _Job) -> dict:
    models, background, several = job.paths, job.background, len(job.paths) > 1
    attrs = {
        "source": src.source,
        "model": [str(m.resolve()) for m in models] if several else str(models[0].resolve()),
        "model_sha256": [sha256_file(m) for m in models] if several else sha256_file(models[0]),
        "method": [m.name for m in job.methods],
        "seed": job.seed,
        "dequantization": (f"uniform, {job.dequant_samples} draw(s), noise = f(seed, sample id)" if src.kind == "image"
                           else "none"),
        "batchnorm": "eval (stored statistics)",
        "oodflow_version": __version__,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "n_samples": len(ds),
        "skipped": json.dumps([{"path": p, "reason": r} for p, r in src.skipped]),
        "label_names": list(src.label_names) if src.label_names else [],
    }
    if background is not None and "likelihood-ratio" in attrs["method"]:
        attrs.update(background_model=str(Path(background).resolve()), background_model_sha256=sha256_file(background))
    return attrs
