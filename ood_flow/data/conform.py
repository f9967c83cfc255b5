"""Make a dataset or a source fit a model's input shape, converting only what the user allowed.

Samples that do not fit are an error that says first what the model was trained on (when the caller
names the model: :class:`TrainedOn`), then what these samples are, and only then how to force them
into the model: a FashionMNIST model given CIFAR-10 is more likely the wrong model than data to convert.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import PurePath

import torch

from ood_flow.data.dataset import Dataset
from ood_flow.data.pixels import in_chunks, resize_images, to_grayscale
from ood_flow.data.stream import Source, replace
from ood_flow.errors import InputError


@dataclass(frozen=True)
class TrainedOn:
    """The model samples are fitted to, as the messages name it.

    Attributes:
        model: its file name, e.g. ``m.pt``.
        data: a short name of its training data, e.g. ``fashionmnist-train`` (None: not recorded).
    """

    model: str
    data: str | None = None

    @classmethod
    def from_record(cls, model: str, source: str | None) -> TrainedOn:
        """From a model file's name and the training source text it records (``extra["data"]``)."""
        return cls(model, data_name(source) if source else None)

    def says(self, shape: tuple[int, ...]) -> str:
        """``m.pt was trained on 1x28x28 images of fashionmnist-train``."""
        return f"{self.model} was trained on {_kind(shape)}" + (f" of {self.data}" if self.data else "")


def data_name(source: str) -> str:
    """A short name of a SOURCE's provenance text: ``fashionmnist:train from ROOT/... [limit 5]`` ->
    ``fashionmnist-train``; a file (``ROOT/x.npz:key``) or folder -> its name."""
    head = source.split(" [")[0].split(" (")[0].strip()
    if " from " in head:
        return head.split(" from ")[0].replace(":", "-")
    name = PurePath(head).name or head
    return name.split(":")[0] if "." in name.split(":")[0] else name  # x.npz:key, x.h5:features -> the file


def _kind(shape: tuple[int, ...]) -> str:
    return f"{_fmt(shape)} images" if len(shape) == 3 else f"{shape[0]}-dimensional vectors"


def _refuse(plain: str, model: TrainedOn | None, target: tuple[int, ...], these: str, fix: str = "") -> InputError:
    """The error for samples that do not fit a model: ``plain`` when the model is not named; else what the model
    was trained on first, then what ``these`` samples are, then ``fix`` (``pass --resize ...``: how to force them
    in, offered as what to do if that is really meant; or a note)."""
    if model is None:
        return InputError(plain)
    if fix.startswith("pass "):
        fix = f": if that is really meant, {fix}"
    return InputError(f"{model.says(target)}; {these}{fix}")


def conform(ds: Dataset, input_shape: tuple[int, ...], *, resize: bool = False,
            grayscale: bool = False, rgb: bool = False, model: TrainedOn | None = None) -> Dataset:
    """Check ``ds`` against a model's ``input_shape`` and convert it where the flags allow.

    Args:
        ds: the samples.
        input_shape: ``(C, H, W)`` for an image model, ``(D,)`` for a vector model.
        resize: resize images to ``H x W`` (bilinear with antialiasing, rounded to uint8).
        grayscale: turn RGB images into one channel (ITU-R 601 luma).
        rgb: turn one-channel images into three by repeating the channel.
        model: the model the samples are for, named in messages with what it was trained on.

    Returns:
        ``ds`` itself when it fits, else a converted copy whose ``source`` records the
        conversion. Flags that are not needed are ignored.

    Raises:
        InputError: the kinds differ (images vs vectors), the vector sizes differ, or
            the images differ in a way no given flag converts; the message names the
            flags that would.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 1:
        return _conform_vectors(ds, shape[0], model)
    if len(shape) == 3:
        return _conform_images(ds, shape, {"resize": resize, "grayscale": grayscale, "rgb": rgb}, model)
    raise InputError(f"model input shape {shape} is neither (D,) for vectors nor (C, H, W) for images")


def conform_source(src: Source, input_shape: tuple[int, ...], *, resize: bool = False, grayscale: bool = False,
                   rgb: bool = False, model: TrainedOn | None = None) -> tuple[Source, "ImageConform | None"]:
    """:func:`conform` for a source read in batches: checks now, converts per image as it is read.

    Rows in memory are checked at once, with :func:`conform`'s messages. Image files are checked one
    by one as they are decoded (a folder's images may differ in size); grayscale files are repeated
    to three channels for a colour model, as when a folder mixes them.

    Returns:
        The source (its ``source`` records any conversion) and the transform to read it with
        (None when nothing needs converting).
    """
    shape = tuple(int(s) for s in input_shape)
    flags = {"resize": resize, "grayscale": grayscale, "rgb": rgb}
    if src.in_memory or len(shape) != 3:
        needed = _check(src, shape, flags, model)
        if not needed:
            return src, None
        note = f" [converted {_fmt(src.sample_shape)} to {_fmt(shape)}: {', '.join(needed)}]"
        return replace(src, source=src.source + note), ImageConform(shape, needed, needed, model)
    if src.kind != "image":  # pragma: no cover - file sources hold images
        raise InputError(f"{src.name}: expected images")
    allowed = tuple(k for k, v in flags.items() if v) + ("rgb",)
    note = f" [converted to {_fmt(shape)} where needed; allowed: {', '.join(dict.fromkeys(allowed))}]"
    return replace(src, source=src.source + note), ImageConform(shape, tuple(dict.fromkeys(allowed)), model=model)


@dataclass(frozen=True)
class ImageConform:
    """Converts uint8 images ``(B, C, H, W)`` to a model's ``target`` shape, per :func:`conform`'s rules.

    Attributes:
        target: ``(C, H, W)`` of the model.
        allowed: the conversions the user allowed (``resize``, ``grayscale``, ``rgb``).
        expected: for rows in memory, the conversions already checked (nothing to check again).
        model: the model, named in messages with what it was trained on.
    """

    target: tuple[int, int, int]
    allowed: tuple[str, ...]
    expected: tuple[str, ...] | None = None
    model: TrainedOn | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        needed = self.expected if self.expected is not None else self._needed(tuple(x.shape[1:]))
        if "grayscale" in needed:
            x = to_grayscale(x)
        if "resize" in needed:
            x = resize_images(x, self.target[1:])
        if "rgb" in needed:
            x = x.expand(-1, 3, -1, -1).contiguous()
        return x

    def _needed(self, shape: tuple[int, ...]) -> list[str]:
        needed = _needed_for(shape, self.target, "image", self.model, "this image")
        missing = [n for n in needed if n not in self.allowed]
        if missing:
            flags = ' and '.join('--' + n for n in missing)
            raise _refuse(f"image is {_fmt(shape)} but the model expects {_fmt(self.target)}; pass {flags} to "
                          "convert", self.model, self.target, f"this image is {_fmt(shape)}",
                          f"pass {flags} to convert it")
        return needed


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def _conform_vectors(ds: Dataset, d: int, model: TrainedOn | None = None) -> Dataset:
    if ds.kind != "vector":
        shape = f"{_fmt(ds.sample_shape)} " if ds.sample_shape else ""
        raise _refuse(f"{ds.name}: the source holds {shape}images but the model expects {d}-dimensional vectors "
                      "(embed the images first with 'oodflow embed')", model, (d,),
                      f"these are {shape}images of {ds.name}",
                      " (embed the images first with 'oodflow embed' if a model of their features is meant)")
    if ds.sample_shape[0] != d:
        raise _refuse(f"{ds.name}: vectors have {ds.sample_shape[0]} dimensions but the model expects {d}", model,
                      (d,), f"these are {ds.sample_shape[0]}-dimensional vectors of {ds.name}")
    return ds


def _conform_images(ds: Dataset, target: tuple[int, int, int], flags: dict[str, bool],
                    model: TrainedOn | None = None) -> Dataset:
    needed = _check(ds, target, flags, model)
    if not needed:
        return ds
    x = ds.x
    if "grayscale" in needed:
        x = in_chunks(to_grayscale, x)
    if "resize" in needed:
        x = in_chunks(lambda c: resize_images(c, target[1:]), x)
    if "rgb" in needed:
        x = x.expand(-1, 3, -1, -1).contiguous()
    note = f" [converted {_fmt(ds.sample_shape)} to {_fmt(target)}: {', '.join(needed)}]"
    return dataclasses.replace(ds, x=x, source=ds.source + note)


def _check(ds: Dataset | Source, target: tuple[int, ...], flags: dict[str, bool],
           model: TrainedOn | None = None) -> tuple[str, ...]:
    """The conversions ``ds`` (samples of one shape) needs to fit ``target``; raises if not all are allowed."""
    if len(target) == 1:
        _conform_vectors(ds, target[0], model)
        return ()
    if ds.kind != "image":
        raise _refuse(f"{ds.name}: the source holds {ds.sample_shape[0]}-dimensional vectors but the model "
                      f"expects {_fmt(target)} images", model, target,
                      f"these are {ds.sample_shape[0]}-dimensional vectors of {ds.name}")
    needed = _needed_for(ds.sample_shape, target, f"{ds.name}: images", model,
                         f"these are {_fmt(ds.sample_shape)} images of {ds.name}")
    missing = [n for n in needed if not flags[n]]
    if missing:
        flags_text = ' and '.join('--' + n for n in missing)
        raise _refuse(f"{ds.name}: images are {_fmt(ds.sample_shape)} but the model expects {_fmt(target)}; "
                      f"pass {flags_text} to convert", model, target,
                      f"these are {_fmt(ds.sample_shape)} images of {ds.name}", f"pass {flags_text} to convert them")
    return tuple(needed)


def _needed_for(shape: tuple[int, ...], target: tuple[int, int, int], what: str, model: TrainedOn | None = None,
                these: str = "") -> list[str]:
    """The conversions from images of ``shape`` to ``target``, in the order they are applied."""
    c, h, w = shape
    tc, th, tw = target
    needed = ["resize"] if (h, w) != (th, tw) else []
    if (c, tc) == (1, 3):
        needed.append("rgb")
    elif (c, tc) == (3, 1):
        needed.append("grayscale")
    elif c != tc:
        raise _refuse(f"{what} have {c} channels but the model expects {tc}; no conversion exists", model, target,
                      these, ", and no conversion from their channels exists")
    return needed
