"""Open checkpoints of the paper's authors' code (PolinaKirichenko/flows_ood) as oodflow models.

Their training script saves ``{"net": state_dict, "epoch": ...}`` with keys prefixed ``module.``
(DataParallel). Their multi-scale RealNVP is, layer for layer, oodflow's default RealNVP (layout
``flows_ood``): the couplings appear in the same order, and inside each coupling the keys map
one to one (:data:`RENAMES`). The architecture is read from the keys and shapes: channels from the
first input convolution, the hidden width from its output, the blocks from their indices, the
scales from the number of couplings, the skip path (``resnet`` or ``resnet-noskip``) and batch
norm from whether their keys exist.

The log-likelihoods agree up to one constant. Their logit layer maps an image ``x`` in [0, 1]
to ``y = (255 x + u) / 256`` and includes ``D log(255/256)`` in its log-det, the log-det of
``x -> y``; oodflow's flow takes ``y`` itself. So for the same ``x`` and noise ``u``:
``flow.log_prob(y) = theirs + D log(256/255)``, and oodflow's log-likelihood of the 8-bit image,
``flow.log_prob(y) - D log 256``, is ``theirs - D log 255``.

Reading their files taught the key names and shapes; no code of theirs is used.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import torch
from torch import Tensor

from ood_flow.errors import InputError
from ood_flow.flows.io import save_model
from ood_flow.flows.models import Flow, create_flow

_COUPLING = re.compile(r"^body\.(\d+)\.(\d+)\.module1\.(.+)$")
RENAMES = (  # their key inside a coupling -> ours (after the coupling's prefix)
    (re.compile(r"^st_net\.in_skip\.conv\.(.+)$"), lambda m: f"net.skips.0.{m[1]}"),
    (re.compile(r"^st_net\.skips\.(\d+)\.conv\.(.+)$"), lambda m: f"net.skips.{int(m[1]) + 1}.{m[2]}"),
    (re.compile(r"^st_net\.bottleneck\.0\.(.+)$"), lambda m: f"net.bottleneck.down.{m[1]}"),
    (re.compile(r"^st_net\.bottleneck\.1\.(.+)$"), lambda m: f"net.bottleneck.up.{m[1]}"),
    (re.compile(r"^st_net\.(.+?)\.conv\.(.+)$"), lambda m: f"net.{m[1]}.{m[2]}"),
    (re.compile(r"^st_net\.(.+)$"), lambda m: f"net.{m[1]}"),
    (re.compile(r"^rescale\.(weight_[gv])$"), lambda m: f"rescale.{m[1]}"),
)


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state dict of one of their checkpoints, without the ``module.`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise InputError(f"{path}: not a readable torch checkpoint ({str(exc).splitlines()[0][:150]})") from None
    state = record.get("net", record) if isinstance(record, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"{path}: not a flows_ood checkpoint (no state dict under 'net')")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _couplings(path: Path, state: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """Per coupling, in forward order, its keys (without prefix)."""
    groups: dict[tuple[int, int], dict[str, Tensor]] = defaultdict(dict)
    for key, value in state.items():
        m = _COUPLING.match(key)
        if m is None:
            raise InputError(f"{path}: unexpected key {key!r}: not the multi-scale RealNVP of flows_ood")
        groups[(int(m[1]), int(m[2]))][m[3]] = value
    if not groups:
        raise InputError(f"{path}: no coupling layers found")
    return [groups[k] for k in sorted(groups)]


def infer_config(path: Path, couplings: list[dict[str, Tensor]]) -> dict:
    """Their ``RealNVP(num_scales, in_channels, mid_channels, num_blocks, skip, ...)`` as our options."""
    first = couplings[0]
    if "st_net.in_conv.conv.weight_v" not in first:
        raise InputError(f"{path}: the st-networks are not the authors' ResNet (no st_net.in_conv)")
    if (len(couplings) - 4) % 6:
        raise InputError(f"{path}: {len(couplings)} couplings is not a multi-scale RealNVP (6 per scale, 4 at the "
                         "last); single-scale models (RealNVP8Layers, horizontal and cycle masks) are not supported")
    blocks = {int(k.split(".")[2]) for k in first if k.startswith("st_net.blocks.")}
    config = {"scales": (len(couplings) - 4) // 6 + 1, "channels": int(first["st_net.in_conv.conv.weight_v"].shape[0]),
              "blocks": len(blocks), "batchnorm": "st_net.in_norm.weight" in first,
              "net": "resnet" if "st_net.in_skip.conv.weight_v" in first else "resnet-noskip"}
    if "st_net.bottleneck.0.weight" in first:
        if len(blocks) < 2:
            raise InputError(f"{path}: a bottleneck with {len(blocks)} block(s) is never used by their code")
        config["bottleneck"] = int(first["st_net.bottleneck.0.weight"].shape[0])
    return config


def in_channels(couplings: list[dict[str, Tensor]]) -> int:
    return int(couplings[0]["st_net.in_conv.conv.weight_v"].shape[1]) // 2


def convert_flows_ood(path: str | Path, input_shape: tuple[int, int, int] | None = None) -> Flow:
    """An oodflow RealNVP with the weights of a flows_ood checkpoint, in eval mode.

    ``input_shape`` defaults to (1, 28, 28) for one channel and (3, 32, 32) for three.
    """
    path = Path(path)
    couplings = _couplings(path, read_checkpoint(path))
    config, c = infer_config(path, couplings), in_channels(couplings)
    if input_shape is None:
        if c not in (1, 3):
            raise InputError(f"{path}: {c}-channel images: give the input shape (C,H,W)")
        input_shape = (1, 28, 28) if c == 1 else (3, 32, 32)
    if input_shape[0] != c:
        raise InputError(f"{path}: the checkpoint is for {c}-channel images, not input shape {tuple(input_shape)}")
    flow = create_flow("realnvp", tuple(input_shape), **config)
    ours = [n for n, m in flow.named_modules() if type(m).__name__ == "AffineCoupling"]
    if len(ours) != len(couplings):
        raise InputError(f"{path}: {len(couplings)} couplings, but {config['scales']} scales on "
                         f"{tuple(input_shape)} build {len(ours)}")
    state = {f"{prefix}.{_rename(path, key)}": value for prefix, theirs in zip(ours, couplings)
             for key, value in theirs.items()}
    target = flow.state_dict()
    state = {k: v.reshape(target[k].shape) if k in target and "rescale" in k else v for k, v in state.items()}
    try:
        flow.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not fit the inferred architecture {config} on {tuple(input_shape)}: "
                         f"{str(exc).splitlines()[1 if len(str(exc).splitlines()) > 1 else 0].strip()[:200]}") from None
    return flow.eval()


def _rename(path: Path, key: str) -> str:
    for pattern, rename in RENAMES:
        m = pattern.match(key)
        if m:
            return rename(m)
    raise InputError(f"{path}: unexpected key {key!r} in a coupling")


def log_likelihood_offset(flow: Flow) -> float:
    """``D log(256/255)``: what ``flow.log_prob(y)`` exceeds the authors' log-likelihood by (same x and noise)."""
    return flow.dim * math.log(256 / 255)


def convert_flows_ood_file(checkpoint: str | Path, out: str | Path, *, input_shape: tuple[int, int, int] | None = None,
                           overwrite: bool = False) -> Flow:
    """Convert a flows_ood checkpoint and write it as an oodflow model file (``.pt`` or ``.h5``)."""
    flow = convert_flows_ood(checkpoint, input_shape)
    save_model(flow, out, overwrite=overwrite, extra={"converted_from": str(checkpoint), "converter": "flows_ood",
                                                      "log_likelihood_offset_vs_authors": log_likelihood_offset(flow)})
    return flow
