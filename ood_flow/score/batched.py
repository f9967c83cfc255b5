"""Scoring a source batch by batch, so memory stays flat however large the source is.

Every method scores each sample on its own (``bn-train`` uses the statistics of each batch of
``batch_size`` consecutive samples, which are exactly the batches read here), so the arrays are
those of scoring the whole source at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from ood_flow import distributed
from ood_flow.data.stream import Batch
from ood_flow.score.likelihood import sample_keys
from ood_flow.score.methods import Method, ScoreContext, check, compute


@dataclass
class Scored:
    """Per-sample arrays of a whole source, with the ids and labels of the samples read."""

    arrays: dict[str, np.ndarray]
    ids: np.ndarray
    labels: np.ndarray | None
    notes: list[str] = field(default_factory=list)
    attrs: dict = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def ids_labels(self) -> dict[str, np.ndarray]:
        """The ``id`` (and, where known, ``label``) datasets of a score group."""
        out = {"id": np.asarray(self.ids, dtype=str)}
        if self.labels is not None:
            out["label"] = np.asarray(self.labels, dtype=np.int64)
        return out


def check_methods(methods: list[Method], context: ScoreContext, input_shape: tuple[int, ...], images: bool) -> None:
    """Raise before reading anything if a method cannot score such inputs (e.g. complexity on vectors)."""
    dtype = torch.uint8 if images else torch.float32
    probe = ScoreContext(context.flows, torch.zeros((0, *input_shape), dtype=dtype), torch.zeros(0, dtype=torch.int64),
                         options=context.options, background=context.background)
    check(methods, probe)
    context.notes.extend(n for n in probe.notes if n not in context.notes)


def score_batches(methods: list[Method], batches: Iterable[Batch], context: ScoreContext,
                  progress: Callable[[int], None] | None = None) -> Scored:
    """Compute ``methods`` on every batch with the settings of ``context`` (its ``x`` is not used).

    Args:
        methods: the score methods.
        batches: the source's batches, read in order.
        context: models, batch size, dequantization, options; notes and attrs are collected into it.
        progress: called with the number of samples of each forward pass done.

    Returns:
        The arrays of all batches, concatenated in order.
    """
    parts: list[dict[str, np.ndarray]] = []
    ids, labels = [], []
    for batch in batches:
        ctx = ScoreContext(context.flows, batch.x, sample_keys(batch.ids), context.batch_size,
                           context.dequant_samples, context.seed, options=context.options, progress=progress,
                           background=context.background)
        parts.append(compute(methods, ctx))
        ids.append(batch.ids)
        labels.append(batch.labels)
        context.notes.extend(n for n in ctx.notes if n not in context.notes)
        context.attrs.update(ctx.attrs)
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    return Scored(arrays, np.concatenate(ids) if ids else np.zeros(0, dtype=str),
                  None if not labels or labels[0] is None else np.concatenate(labels), context.notes, context.attrs)


def merged(scored: Scored, batch_size: int, dist: distributed.Dist) -> Scored:
    """The rows of every process, in the source's order (as one process would have them)."""
    if dist.world == 1:
        return scored
    rows = distributed.gather_rows(dist, batch_size, {**scored.arrays, "\0id": np.asarray(scored.ids),
                                                      "\0label": scored.labels})
    ids, labels = rows.pop("\0id"), rows.pop("\0label")
    notes = list(dict.fromkeys(n for ns in dist.gather(scored.notes) for n in ns))
    return Scored(rows, ids, labels, notes, scored.attrs)
