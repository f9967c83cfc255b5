"""A feature detector: a flow (or Gaussian) on the features of a pretrained backbone, stored in one
model file with what it needs to embed raw images exactly as it was trained.

The model file records the backbone's name, the sha256 of its weights (:func:`weights_sha256`), where
they came from and the image transform; the weights themselves are not copied. Scoring finds them the
way ``oodflow embed`` does (a ``--weights`` file, the EfficientNet-Lite0 package, timm's hub cache)
and refuses weights whose hash differs, and features files made by another backbone or transform.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ood_flow.data.stream import Batch, Source
from ood_flow.embed.backbones import create_backbone
from ood_flow.embed.extract import ImageTransform, feature_batches
from ood_flow.embed.weights import weights_sha256
from ood_flow.errors import InputError


@dataclass(frozen=True)
class Backbone:
    """The backbone of a feature detector, as its model file records it.

    Attributes:
        name: the timm (or extra) model name, as given to ``--features``.
        sha256: :func:`weights_sha256` of the backbone's weights.
        weights_file: the state dict file the weights came from (None: the Lite0 package or timm's hub).
        transform: how images are turned into the backbone's input.
        feature_dim: the length of its feature vectors.
    """

    name: str
    sha256: str
    weights_file: str | None
    transform: ImageTransform
    feature_dim: int

    def to_dict(self) -> dict:
        return {"backbone": self.name, "backbone_sha256": self.sha256, "weights_file": self.weights_file,
                "transform": self.transform.to_dict(), "feature_dim": self.feature_dim}

    @classmethod
    def from_dict(cls, d: dict) -> Backbone:
        return cls(name=str(d["backbone"]), sha256=str(d["backbone_sha256"]), weights_file=d.get("weights_file"),
                   transform=ImageTransform.from_dict(d["transform"]), feature_dim=int(d["feature_dim"]))

    def describe(self) -> str:
        t = self.transform
        return f"{self.name} at {t.size} px ({t.interpolation}), weights sha256 {self.sha256[:12]}"

    def check_features(self, meta: dict, where: str) -> None:
        """Raise unless a features file (its attributes ``meta``) was made by this backbone and transform."""
        if not meta.get("backbone"):
            raise InputError(f"{where}: not features written by 'oodflow embed'; this detector takes images, or "
                             f"features from 'oodflow embed --backbone {self.name}'")
        theirs = _recorded_transform(meta)
        same = (meta.get("backbone") == self.name and meta.get("backbone_sha256") == self.sha256
                and theirs == self.transform)
        if not same:
            made = f"{meta.get('backbone')} at {meta.get('image_size')} px"
            sha = meta.get("backbone_sha256")
            made += f", weights sha256 {sha[:12]}" if sha else ", weights of unrecorded hash"
            raise InputError(f"{where}: features of {made}, but the detector was trained on {self.describe()}; "
                             "embed the images with the detector's backbone, or score the images themselves")


def _recorded_transform(meta: dict) -> ImageTransform | None:
    try:
        return ImageTransform(size=int(meta["image_size"]), mean=tuple(float(v) for v in meta["mean"]),
                              std=tuple(float(v) for v in meta["std"]), interpolation=str(meta["interpolation"]))
    except (KeyError, TypeError, ValueError):
        return None


def detector_backbone(extra: dict) -> Backbone | None:
    """The backbone recorded in a model file's ``extra`` dict, or None for a model on pixels or tables."""
    record = extra.get("detector") if isinstance(extra, dict) else None
    return Backbone.from_dict(record) if record else None


def describe_backbone(model: nn.Module, name: str, transform: ImageTransform, weights_file: str | None,
                      feature_dim: int) -> Backbone:
    """The record a detector trained on ``model``'s features keeps."""
    file = str(Path(weights_file).resolve()) if weights_file else None
    return Backbone(name=name, sha256=weights_sha256(model), weights_file=file, transform=transform,
                    feature_dim=int(feature_dim))


def load_backbone(spec: Backbone, *, weights: str | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """The detector's backbone, found the way ``oodflow embed`` finds weights, checked against its hash.

    Args:
        spec: the detector's record.
        weights: a state dict file to use; default the file recorded at training where it still
            exists, else the Lite0 package or timm's hub cache.

    Raises:
        InputError: weights missing (the message says where to put them) or not the detector's.
    """
    file = weights or (spec.weights_file if spec.weights_file and Path(spec.weights_file).is_file() else None)
    if file is None and spec.weights_file:
        raise InputError(f"the detector's backbone weights {spec.weights_file} are gone; pass them with --weights FILE")
    model = create_backbone(spec.name, weights=file, device=device)
    found = weights_sha256(model)
    if found != spec.sha256:
        where = file or "the installed package or hub cache"
        raise InputError(f"backbone weights from {where} are not those the detector was trained with (sha256 "
                         f"{found[:12]} vs {spec.sha256[:12]}); pass the original with --weights FILE")
    return model


def image_features(model: nn.Module, spec: Backbone, src: Source, batch_size: int, *, precision: str = "fp32",
                   device: str | torch.device = "cpu", workers: int | None = None) -> Iterator[Batch]:
    """The backbone's features of every image of ``src``, batch by batch (decoded and transformed in workers)."""
    if src.kind != "image":
        raise InputError(f"{src.name}: the source holds vectors; this detector takes images or features files")
    return feature_batches(model, src.batches(batch_size, spec.transform, workers=workers), precision=precision,
                           device=device)
