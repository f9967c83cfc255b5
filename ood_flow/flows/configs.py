"""Model configurations: frozen dataclasses with the paper's defaults, stored in every model file.

Defaults follow the paper's setup (Appendix C and the authors' code, flows_ood) scaled to the
input: for small images (at most 28x28, like FashionMNIST) RealNVP has 2 scales and 6 residual
blocks of 64 channels, Glow 2 scales of 16 steps with 200-channel highway st-networks; for larger
images (CIFAR-10, CelebA) RealNVP has 3 scales and 8 blocks, Glow 3 scales of 8 steps with 400
channels. The number of scales is always capped by how many times the image can be halved.

Options left as ``None`` are filled in by :func:`resolve_config` and stored resolved; an option
that does not apply to the model as configured stays ``None``. Giving such an option is a
:class:`~ood_flow.errors.UsageError` (exit 2) that names it, never silently ignored. ``defaults``
(a preset's values) fill options the same way but are dropped where they do not apply.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ood_flow import names
from ood_flow.errors import UsageError
from ood_flow.flows.nets import IMAGE_NETS, NET_OPTIONS

IMAGE_MASKS = names.IMAGE_MASKS
LAYOUTS = ("flows_ood", "v1")
SINGLE_SCALE_COUPLINGS = 8  # Section 7: "RealNVP with 8 coupling layers and no squeeze layers"


@dataclass(frozen=True)
class RealNVPConfig:
    """RealNVP. ``mask='checkerboard'`` with ``scales >= 2`` is the paper's multi-scale model (per
    scale 3 checkerboard couplings, squeeze, 3 channel-wise, factor out half; 4 checkerboard at the
    last scale; the st-network width doubles at every squeeze). ``scales=1`` or any other mask gives
    a single-scale stack of ``couplings`` couplings (default 8). ``layout='v1'`` rebuilds files of
    model format 1 (mirror-image masks, no width doubling, 4 single-scale checkerboard couplings)."""

    mask: str = "checkerboard"
    scales: int | None = None
    couplings: int | None = None
    channels: int = 64
    blocks: int | None = None
    bottleneck: int | None = None
    batchnorm: bool = True
    net: str | None = None
    alpha: float = 0.05
    layout: str = "flows_ood"


@dataclass(frozen=True)
class GlowConfig:
    """Multi-scale Glow: ``couplings`` steps (ActNorm, 1x1 conv, affine coupling) per scale."""

    scales: int | None = None
    couplings: int | None = None
    channels: int | None = None
    blocks: int | None = None
    bottleneck: int | None = None
    batchnorm: bool = False
    net: str = "highway"
    alpha: float = 0.05


@dataclass(frozen=True)
class TabularConfig:
    """RealNVP for vectors (paper, Appendix K.1): ``couplings`` couplings, MLP st-networks.

    ``whiten=True`` puts a full-covariance Gaussian, fitted in closed form on the standardized training
    vectors (Ledoit-Wolf shrinkage), before the couplings: a fixed linear bijection, so the untrained
    flow is exactly the Gaussian baseline and training models what the Gaussian leaves over."""

    couplings: int = 8
    hidden: int = 256
    layers: int = 2
    batchnorm: bool = False
    standardize: bool = True
    std_floor: float = 0.0
    whiten: bool = False


@dataclass(frozen=True)
class GaussianConfig:
    """Full-covariance Gaussian for vectors, fitted in closed form: ``shrinkage`` None = Ledoit-Wolf's."""

    shrinkage: float | None = None
    standardize: bool = True
    std_floor: float = 0.0


# The std floor of feature files (a fraction of the median column std, see Standardize): chosen on
# in-distribution validation bits/dim of a RealNVP (Appendix K.1 settings) on 2,700 FashionMNIST
# Lite0 embeddings, 300 held out: floor 0 / 0.01 / 0.03 / 0.1 / 0.3 / 0.5 / 1.0 gave -1.435 / -1.426 /
# -1.489 / -1.595 / -1.650 / -1.667 / -1.687 bits/dim.
FEATURE_STD_FLOOR = 1.0
FEATURE_FLOW = {"couplings": 8, "hidden": 512, "layers": 3}
"""The st-networks of a flow on image embeddings (Appendix K.1): 8 couplings, 3 hidden layers of 512 units."""

CONFIGS = {"realnvp": RealNVPConfig, "glow": GlowConfig, "tabular": TabularConfig, "gaussian": GaussianConfig}
VECTOR_MODELS = ("tabular", "gaussian")


def max_halvings(height: int, width: int) -> int:
    """How many times an image can be squeezed (both sides even each time)."""
    n = 0
    while height % 2 == 0 and width % 2 == 0 and height > 1:
        height, width, n = height // 2, width // 2, n + 1
    return n


def resolve_config(name: str, input_shape: tuple[int, ...], options: dict, defaults: dict | None = None):
    """Validate ``options`` for model ``name``, fill in defaults (``defaults``, then the paper's by size).

    Raises:
        UsageError: an unknown option, or one given (not ``None``) that does not apply.
        ValueError: a value out of range or an input shape the model cannot take.
    """
    cls = CONFIGS[name]
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(k for k, v in options.items() if k not in valid and v is not None)
    if unknown:
        raise UsageError(f"--{unknown[0]} does not apply to {name}; valid options: {', '.join(valid)}")
    given = {k: v for k, v in options.items() if v is not None}
    if name == "tabular":
        cfg = cls(**{**_known(cls, defaults), **given})
        return _check_tabular(cfg, input_shape)
    if name == "gaussian":
        return _check_gaussian(cls(**{**_known(cls, defaults), **given}), input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs images (C, H, W), got input shape {input_shape}; use 'tabular' for vectors")
    if given.get("layout") == "v1":  # model format 1, stored resolved: rebuilt as it was
        missing = [k for k in ("scales", "couplings", "blocks", "net") if k not in given]
        if missing:
            raise ValueError(f"layout 'v1' rebuilds stored format-1 models and needs every option; missing {missing}")
        return cls(**given)
    cfg = _fill(cls(**given), _known(cls, defaults), given, input_shape, name)
    return _check_image(name, cfg, input_shape)


def _known(cls, defaults: dict | None) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in (defaults or {}).items() if k in names and v is not None}


def _fill(cfg, defaults: dict, given: dict, input_shape: tuple[int, ...], name: str):
    """Net, scales, couplings and net options: check what was given, fill the rest where it applies."""
    net = given.get("net") or defaults.get("net") or _default_net(name, given)
    if net not in IMAGE_NETS:
        raise UsageError(f"unknown st-network {net!r} for {name}; valid: {', '.join(IMAGE_NETS)}")
    if given.get("bottleneck") and net == "resnet":
        raise UsageError("--bottleneck needs an st-network without the skip path, which would go around it: "
                         "use --net resnet-noskip (the paper's, the default with --bottleneck)")
    for option in ("blocks", "bottleneck", "batchnorm", "channels"):
        if option in given and option not in NET_OPTIONS[net]:
            raise UsageError(f"--{option} does not apply to the {net!r} st-network ({_why_not(net, option)})")
    paper = _paper_sizes(name, input_shape)
    values = {"net": net}
    for option in ("channels", "blocks", "batchnorm", "bottleneck"):
        value = given.get(option, defaults.get(option, paper.get(option)))
        values[option] = value if option in NET_OPTIONS[net] else None
    values["channels"] = values["channels"] or paper["channels"]
    cfg = dataclasses.replace(cfg, **values)
    scales = given.get("scales", defaults.get("scales", paper["scales"]))
    return dataclasses.replace(cfg, **_layout(name, cfg, given, defaults, scales, input_shape))


def _default_net(name: str, given: dict) -> str:
    if name == "glow":
        return "highway"
    return "resnet-noskip" if given.get("bottleneck") else "resnet"


def _why_not(net: str, option: str) -> str:
    return {"blocks": "its depth is fixed", "bottleneck": "its skip path would go around a bottleneck",
            "batchnorm": "it has no batch norm"}.get(option, "not an option of it")


def _paper_sizes(name: str, input_shape: tuple[int, ...]) -> dict:
    """The paper's sizes for this image size (Appendix C): small (<= 28x28) or larger images."""
    small = input_shape[1] * input_shape[2] <= 28 * 28
    if name == "realnvp":
        return {"scales": 2 if small else 3, "blocks": 6 if small else 8, "channels": 64, "batchnorm": True}
    return {"scales": 2 if small else 3, "couplings": 16 if small else 8, "channels": 200 if small else 400,
            "blocks": 3, "batchnorm": False}


def _layout(name: str, cfg, given: dict, defaults: dict, scales: int, input_shape: tuple[int, ...]) -> dict:
    """``scales`` and ``couplings``: where each applies, and the cap set by the image size."""
    _, h, w = input_shape
    if name == "glow":
        limit = max_halvings(h, w)
        couplings = given.get("couplings", defaults.get("couplings", _paper_sizes(name, input_shape)["couplings"]))
        return {"scales": _capped(scales, limit, "scales" in given, name, h, w), "couplings": couplings}
    if cfg.mask != "checkerboard":
        if "scales" in given and given["scales"] != 1:
            raise UsageError(f"--scales does not apply to the {cfg.mask} mask, which builds a single-scale model; "
                             "drop --scales or use the checkerboard mask")
        scales = 1
    else:
        scales = _capped(scales, max_halvings(h, w) + 1, "scales" in given, name, h, w)
    if scales > 1:
        if "couplings" in given:
            raise UsageError("--couplings does not apply to the multi-scale RealNVP, whose layout is the paper's "
                             "(3 checkerboard, squeeze, 3 channel-wise couplings per scale); use --scales 1 for "
                             "a single-scale stack of --couplings couplings")
        return {"scales": scales, "couplings": None}
    return {"scales": 1, "couplings": given.get("couplings", defaults.get("couplings", SINGLE_SCALE_COUPLINGS))}


def _capped(scales: int, limit: int, explicit: bool, name: str, h: int, w: int) -> int:
    scales = scales if explicit else min(scales, limit)
    if not 1 <= scales <= limit:
        raise ValueError(f"{name} on {h}x{w} images supports 1 to {limit} scales, got {scales}")
    return scales


def _check_tabular(cfg: TabularConfig, input_shape: tuple[int, ...]) -> TabularConfig:
    if len(input_shape) != 1 or input_shape[0] < 2:
        raise ValueError(f"tabular needs vectors of at least 2 features, got input shape {input_shape}")
    _positive(cfg, "couplings", "hidden")
    _floor(cfg)
    return cfg


def _floor(cfg) -> None:
    if not 0.0 <= cfg.std_floor <= 1.0:
        raise ValueError(f"std_floor (a fraction of the median column std) must lie in [0, 1], got {cfg.std_floor}")


def _check_gaussian(cfg: GaussianConfig, input_shape: tuple[int, ...]) -> GaussianConfig:
    if len(input_shape) != 1 or input_shape[0] < 1:
        raise ValueError(f"gaussian needs vectors (D,), got input shape {input_shape}; embed images first")
    if cfg.shrinkage is not None and not 0.0 <= cfg.shrinkage <= 1.0:
        raise ValueError(f"shrinkage must lie in [0, 1], got {cfg.shrinkage}")
    _floor(cfg)
    return cfg


def _check_image(name: str, cfg, input_shape: tuple[int, ...]):
    mask = getattr(cfg, "mask", "checkerboard")
    if mask not in IMAGE_MASKS:
        raise ValueError(f"unknown mask {mask!r}; valid masks: {', '.join(IMAGE_MASKS)}")
    if getattr(cfg, "layout", "flows_ood") not in LAYOUTS:
        raise ValueError(f"unknown layout {cfg.layout!r}; valid: {', '.join(LAYOUTS)}")
    _positive(cfg, "couplings", "channels", "blocks")
    if cfg.bottleneck is not None and cfg.bottleneck < 1:
        raise ValueError(f"bottleneck must be a positive dimension, got {cfg.bottleneck}")
    return cfg


def _positive(cfg, *names: str) -> None:
    for n in names:
        value = getattr(cfg, n)
        if value is not None and value < (0 if n == "blocks" else 1):
            raise ValueError(f"{n} must be positive, got {value}")
