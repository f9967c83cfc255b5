"""Model configurations: frozen dataclasses with the paper's defaults, stored in every model file.

Defaults follow the paper's setup (Appendix C and the authors' code, flows_ood) scaled to the
input: for small images (at most 28x28, like FashionMNIST) RealNVP has 2 scales and 6 residual
blocks of 64 channels, Glow 2 scales of 16 steps with 200-channel highway st-networks; for larger
images (CIFAR-10, CelebA) RealNVP has 3 scales and 8 blocks, Glow 3 scales of 8 steps with 400
channels. The number of scales is always capped by how many times the image can be halved.
Options left as ``None`` are filled in by :func:`resolve_config` and stored resolved.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ood_flow.flows.nets import NETS

IMAGE_MASKS = ("checkerboard", "horizontal", "vertical", "cycle")
"""The masks of RealNVP's couplings that a user chooses (``channel`` is internal to the multi-scale model)."""
IMAGE_NETS = tuple(name for name in NETS if name != "mlp")
"""The st-network families of the image models (``mlp`` serves the tabular model)."""


@dataclass(frozen=True)
class RealNVPConfig:
    """RealNVP. ``mask='checkerboard'`` is the multi-scale model; other masks give a single-scale
    stack of ``couplings`` couplings. ``scales=None`` means as many as the image allows, up to 3."""

    mask: str = "checkerboard"
    scales: int | None = None
    couplings: int = 8
    channels: int = 64
    blocks: int | None = None
    bottleneck: int | None = None
    batchnorm: bool = True
    net: str = "resnet"
    alpha: float = 0.05


@dataclass(frozen=True)
class GlowConfig:
    """Multi-scale Glow: ``couplings`` steps (ActNorm, 1x1 conv, affine coupling) per scale."""

    scales: int | None = None
    couplings: int | None = None
    channels: int | None = None
    blocks: int = 3
    bottleneck: int | None = None
    batchnorm: bool = False
    net: str = "highway"
    alpha: float = 0.05


@dataclass(frozen=True)
class TabularConfig:
    """RealNVP for vectors (paper, Appendix K.1): ``couplings`` couplings, MLP st-networks."""

    couplings: int = 8
    hidden: int = 256
    layers: int = 2
    batchnorm: bool = False
    standardize: bool = True
    std_floor: float = 0.0


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


def resolve_config(name: str, input_shape: tuple[int, ...], options: dict):
    """Validate ``options`` for model ``name`` and fill in input-dependent defaults."""
    cls = CONFIGS[name]
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) for {name}: {', '.join(unknown)}; valid options: {', '.join(valid)}")
    cfg = cls(**{k: v for k, v in options.items() if v is not None or k == "bottleneck"})
    if name == "tabular":
        return _check_tabular(cfg, input_shape)
    if name == "gaussian":
        return _check_gaussian(cfg, input_shape)
    explicit = {k for k, v in options.items() if v is not None}
    return _check_image(name, _size_defaults(name, cfg, input_shape), input_shape, explicit)


def _size_defaults(name: str, cfg, input_shape: tuple[int, ...]):
    """Fill the options whose paper default depends on the image size."""
    if len(input_shape) != 3:
        return cfg
    small = input_shape[1] * input_shape[2] <= 28 * 28
    paper = {
        "realnvp": {"scales": 2 if small else 3, "blocks": 6 if small else 8},
        "glow": {"scales": 2 if small else 3, "couplings": 16 if small else 8, "channels": 200 if small else 400},
    }[name]
    return dataclasses.replace(cfg, **{k: v for k, v in paper.items() if getattr(cfg, k) is None})


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


def _check_image(name: str, cfg, input_shape: tuple[int, ...], explicit: set[str]):
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs images (C, H, W), got input shape {input_shape}; use 'tabular' for vectors")
    if cfg.net not in IMAGE_NETS:
        raise ValueError(f"unknown st-network {cfg.net!r} for {name}; valid: {', '.join(IMAGE_NETS)}")
    mask = getattr(cfg, "mask", "checkerboard")
    if mask not in IMAGE_MASKS:
        raise ValueError(f"unknown mask {mask!r}; valid masks: {', '.join(IMAGE_MASKS)}")
    _positive(cfg, "couplings", "channels")
    if cfg.bottleneck is not None and cfg.bottleneck < 1:
        raise ValueError(f"bottleneck must be a positive dimension, got {cfg.bottleneck}")
    _, h, w = input_shape
    limit = max_halvings(h, w) if name == "glow" else max_halvings(h, w) + 1
    if mask != "checkerboard":
        if "scales" in explicit and cfg.scales != 1:
            _fail_scales(mask)
        return dataclasses.replace(cfg, scales=1)
    scales = min(cfg.scales, limit) if "scales" not in explicit else cfg.scales
    if not 1 <= scales <= limit:
        raise ValueError(f"{name} on {h}x{w} images supports 1 to {limit} scales, got {scales}")
    return dataclasses.replace(cfg, scales=scales)


def _fail_scales(mask: str):
    raise ValueError(f"the {mask} mask builds a single-scale model; drop --scales or use the checkerboard mask")


def _positive(cfg, *names: str) -> None:
    for n in names:
        if getattr(cfg, n) < 1:
            raise ValueError(f"{n} must be positive, got {getattr(cfg, n)}")
