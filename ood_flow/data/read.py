"""Reading a SOURCE for a command: the options every command shares, and fitting the samples to a model.

:class:`SourceOptions` gathers how to read (data root, ``limit``, CSV columns, a class) and what
conversions to allow (resize, grayscale, rgb). :func:`read_source` loads a SOURCE whole with them
and, given a model's input shape, checks and converts it (:func:`~ood_flow.data.conform`);
:func:`open_with_options` opens it for reading in batches and :func:`fit_to_model` checks it
against a model and gives the per-batch conversion (:func:`~ood_flow.data.conform.conform_source`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from ood_flow.data.conform import ImageConform, TrainedOn, conform, conform_source
from ood_flow.data.dataset import Dataset
from ood_flow.data.images import list_source
from ood_flow.data.source import load_source, open_source
from ood_flow.data.stream import Source


@dataclass(frozen=True)
class SourceOptions:
    """How to read a SOURCE and fit it to a model (see :func:`~ood_flow.data.load_source`).

    Attributes:
        data_dir: root of the named datasets (default ``$OODFLOW_DATA_DIR``, else ``~/.cache/oodflow``).
        limit: keep the first N samples.
        skip_invalid: skip unreadable image files instead of failing.
        columns, label_column: CSV feature columns and the label column.
        class_value: keep only samples with this label (number or name).
        resize, grayscale, rgb: conversions allowed to fit a model's input shape.
    """

    data_dir: str | os.PathLike | None = None
    limit: int | None = None
    skip_invalid: bool = False
    columns: tuple[str, ...] | None = None
    label_column: str | None = None
    class_value: str | None = None
    resize: bool = False
    grayscale: bool = False
    rgb: bool = False


def read_source(source: str | Dataset, split: str, options: SourceOptions | None = None, *,
                shape: tuple[int, ...] | None = None, model: TrainedOn | None = None) -> Dataset:
    """The samples of ``source``, fitted to a model's input ``shape`` when one is given.

    Args:
        source: SOURCE text, or a :class:`Dataset` already in memory (the reading options
            then do not apply; the conversions do).
        split: the split of a named dataset when the SOURCE names none.
        options: reading options and allowed conversions.
        shape: the model's input shape, ``(C, H, W)`` or ``(D,)``.
        model: the model (its file and training data), named first when the samples do not fit it.

    Example:
        >>> read_source("demo-mnist", "test", SourceOptions(limit=3), shape=(1, 28, 28)).x.shape
        torch.Size([3, 1, 28, 28])
    """
    o = options or SourceOptions()
    if isinstance(source, Dataset):
        ds = source
    else:
        size = tuple(shape[1:]) if o.resize and shape is not None and len(shape) == 3 else None
        ds = load_source(source, split=split, data_dir=o.data_dir, limit=o.limit, skip_invalid=o.skip_invalid,
                         columns=list(o.columns) if o.columns else None, label_column=o.label_column,
                         class_value=o.class_value, image_size=size)  # a folder of mixed sizes is read at one
    if shape is None:
        return ds
    return conform(ds, shape, resize=o.resize, grayscale=o.grayscale, rgb=o.rgb, model=model)


def open_with_options(source: str | Sequence[str] | Dataset | Source, split: str,
                      options: SourceOptions | None = None, *, name: str | None = None) -> Source:
    """``source`` opened for reading in batches (:func:`~ood_flow.data.open_source` with ``options``); a
    :class:`Dataset` in memory is wrapped, an open :class:`Source` returned as it is. A list of SOURCEs is one
    source of their image files in the order given (:func:`~ood_flow.data.images.list_source`, named ``name``);
    a list of one is that SOURCE alone."""
    if isinstance(source, Source):
        return source
    if isinstance(source, Dataset):
        return Source.from_dataset(source)
    o = options or SourceOptions()
    if isinstance(source, (list, tuple)):
        if len(source) != 1:
            return list_source([str(s) for s in source], limit=o.limit, skip_invalid=o.skip_invalid, name=name)
        source = str(source[0])
    return open_source(source, split=split, data_dir=o.data_dir, limit=o.limit, skip_invalid=o.skip_invalid,
                       columns=list(o.columns) if o.columns else None, label_column=o.label_column,
                       class_value=o.class_value)


def fit_to_model(src: Source, shape: tuple[int, ...], options: SourceOptions | None = None,
                 model: TrainedOn | None = None) -> tuple[Source, ImageConform | None]:
    """Check ``src`` against a model's input ``shape``; returns it and the conversion to read it with. Samples
    that do not fit are an error that names ``model`` and its training data first."""
    o = options or SourceOptions()
    return conform_source(src, shape, resize=o.resize, grayscale=o.grayscale, rgb=o.rgb, model=model)
