"""Model files of older formats, brought to the current one on load (the file itself is never changed).

Format 1 (oodflow before the authors' st-network) differs from format 2 in:

- RealNVP's default st-network and layout: rebuilt as ``net='resnet-v1'`` with ``layout='v1'``
  (its masks, factor-out and widths as they were), so old models give the same numbers;
- the coupling's log-scale factor, a plain ``scale`` then, weight-normalised now: ``g = scale``,
  ``v = 1`` is the same factor;
- the invertible 1x1 convolution's ``lower``, ``upper`` and ``log_s``, now packed into one ``lu``
  matrix (same numbers, the unused triangles dropped);
- Glow's ``glow`` st-network stored ``blocks``, which it never used.
"""

from __future__ import annotations

import torch
from torch import Tensor


def from_format_1(model: str, config: dict, state: dict[str, Tensor]) -> tuple[dict, dict[str, Tensor]]:
    """``(config, state_dict)`` of a format-1 file as format 2 rebuilds the same model."""
    config = dict(config)
    if config.get("net") == "resnet":
        config["net"] = "resnet-v1"
    if model == "realnvp":
        config["layout"] = "v1"
    if model == "glow" and config.get("net") == "glow":
        config["blocks"] = None
    return config, _state(state)


def _state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        head, _, leaf = key.rpartition(".")
        prefix = f"{head}." if head else ""
        if leaf == "scale":
            out[f"{prefix}rescale.weight_g"] = value
            out[f"{prefix}rescale.weight_v"] = torch.ones_like(value)
        elif leaf == "lower":
            upper, log_s = state[f"{prefix}upper"], state[f"{prefix}log_s"]
            out[f"{prefix}lu"] = torch.tril(value, -1) + torch.triu(upper, 1) + torch.diag(log_s)
        elif leaf not in ("upper", "log_s"):
            out[key] = value
    return out
