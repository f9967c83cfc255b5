"""Images in, feature vectors out: resize, normalise, run the backbone in batches."""

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ood_flow.embed.backbones import backbone_config
from ood_flow.errors import InputError

_ANTIALIAS = {"bilinear", "bicubic"}  # the modes F.interpolate can antialias


def embed_images(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    *,
    image_size: int | None = None,
    batch_size: int = 128,
    device: str | torch.device | None = "cpu",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Pooled features of a backbone for a stack of 8-bit images.

    Each batch is scaled to [0, 1], grayscale is repeated to RGB, resized
    (with antialiasing) to a square ``image_size`` with the backbone's
    interpolation, and normalised with the backbone's mean and std. Images are
    resized whole, not cropped, so non-square images are stretched.

    Args:
        model: from ``create_backbone``; put in eval mode and moved to ``device``.
        images: uint8 ``(N, C, H, W)`` with ``C`` 1 or 3 (channels first).
        image_size: side in pixels; default the backbone's input size.
        batch_size: images per forward pass; results do not depend on it
            beyond float rounding.
        device: where to compute; None keeps the model's device.
        progress: called after each batch with the number of images it held.

    Returns:
        float32 ``(N, d)``; ``d`` is the backbone's feature size (or its
        number of classes when it kept its classifier).

    Raises:
        InputError: images of the wrong type, dtype, rank or channels.
    """
    images = _check_images(images)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    cfg = backbone_config(model)
    size = image_size or cfg["input_size"][-1]
    if device is not None:
        model.to(device)
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    mean = torch.tensor(cfg["mean"], device=device).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"], device=device).view(1, -1, 1, 1)
    out = []
    with torch.inference_mode():
        for batch in images.split(batch_size):
            x = _resize(batch.to(device).float() / 255, size, cfg["interpolation"])
            out.append(model((x.expand(-1, 3, -1, -1) - mean) / std).float().cpu())
            if progress is not None:
                progress(len(batch))
    if not out:
        return np.zeros((0, _feature_size(model)), dtype=np.float32)
    return torch.cat(out).numpy()


def _check_images(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise InputError(f"images must be a tensor or array, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise InputError(f"images must be uint8 (0-255), got {images.dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise InputError(f"images must be (N, C, H, W) with C 1 or 3, got shape {tuple(images.shape)}")
    return images


def _resize(x: torch.Tensor, size: int, interpolation: str) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    mode = interpolation if interpolation in _ANTIALIAS | {"nearest", "area"} else "bilinear"
    if mode in _ANTIALIAS:
        y = F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=True)
    else:
        y = F.interpolate(x, size=(size, size), mode=mode)
    return y.clamp_(0, 1)  # bicubic overshoots


def _feature_size(model: nn.Module) -> int:
    return getattr(model, "num_classes", 0) or getattr(model, "num_features", 0)
