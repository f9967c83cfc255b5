"""Model files that describe themselves: ``.pt`` (loaded with ``weights_only=True``) or ``.h5``.

A file holds the model name, every configuration option, the input shape, the weights and fitted
statistics (buffers), the format version and the oodflow version, plus an optional ``extra``
dict (training summary, or a full training state in checkpoints). Loading rebuilds the model from
the file alone and never executes code from it.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ood_flow.version import __version__
from ood_flow.errors import ModelFileError, OodflowError
from ood_flow.fileio import Kind, atomic_write, file_lock
from ood_flow.flows.migrate import from_format_1
from ood_flow.flows.models import Flow, config_dict, create_flow
from ood_flow.model_format import FORMAT, FORMAT_VERSION, H5_SUFFIXES, PT_SUFFIXES


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in PT_SUFFIXES + H5_SUFFIXES:
        raise ModelFileError(f"{path}: unsupported model file extension {suffix or '(none)'!r}; use .pt or .h5")
    return suffix


def _is_model_file(path: Path) -> bool:
    """An oodflow model or checkpoint file, judged from its metadata only (no weights are read)."""
    try:
        if path.suffix.lower() in H5_SUFFIXES:
            import h5py

            with h5py.File(path, "r") as f:
                return f.attrs.get("format") in (FORMAT, FORMAT.encode())
        with zipfile.ZipFile(path) as z:
            pickles = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            return len(pickles) == 1 and FORMAT.encode() in z.read(pickles[0])
    except Exception:  # noqa: BLE001 - anything unreadable is not a model file
        return False


MODEL_FILE = Kind("an oodflow model file", _is_model_file)


def first_non_finite(named: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, or None when all are finite.

    One device sync in all: the per-tensor checks are stacked before they are read.
    """
    named = [(k, t) for k, t in named if t.is_floating_point() and t.numel()]
    if not named:
        return None
    finite = torch.stack([t.isfinite().all() for _, t in named]).cpu()
    if bool(finite.all()):
        return None
    return named[int((~finite).nonzero()[0])][0]


def header(flow: Flow) -> dict[str, Any]:
    """Everything but the weights: enough to rebuild the architecture."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "oodflow_version": __version__,
        "model": flow.name,
        "config": config_dict(flow),
        "input_shape": list(flow.input_shape),
    }


def model_digest(flow: Flow, state: dict[str, torch.Tensor] | None = None) -> str:
    """The identity of a model: sha256 of its architecture and its weights and buffers (``state``, default the
    flow's own), not of the notes a model file carries beside them (training history, calibration). Score
    files record it, so adding a calibration to a model file does not make earlier scores of it look like
    another model's; a calibration records it, so it is never used with other weights.

    Example:
        >>> f = create_flow("tabular", (2,), couplings=2, hidden=4, layers=1)
        >>> model_digest(f) == model_digest(f, {k: v.clone() for k, v in f.state_dict().items()})
        True
    """
    return _digest(flow.name, config_dict(flow), flow.input_shape, state if state is not None else flow.state_dict())


def record_digest(record: dict) -> str:
    """:func:`model_digest` of a model file's contents (:func:`read_model_file`), without building the model."""
    return _digest(record["model"], record["config"], record["input_shape"], record["state_dict"])


def _digest(name: str, config: dict, input_shape, state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(json.dumps({"model": name, "config": config, "input_shape": [int(v) for v in input_shape]},
                                       sort_keys=True).encode())
    for key, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def rewrite_extra(path: str | Path, update: dict[str, Any], *, digest: str | None = None) -> None:
    """Replace keys of a model file's ``extra`` dict, atomically, keeping everything else (weights, header)
    byte for byte as it is; used to add a calibration (:func:`ood_flow.calibrate_model`).

    Args:
        digest: the :func:`model_digest` the file must still have (it was scored under it); else
            :class:`ModelFileError`.

    Raises:
        OutputError: a training run holds the file (it writes it every epoch), or it cannot be written.
    """
    path = Path(path)
    with file_lock(path, timeout=0):  # a training run holds it for its whole run: fail at once, naming it
        record = read_model_file(path)
        if digest is not None and record_digest(record) != digest:
            raise ModelFileError(f"{path}: its weights changed while it was being scored; run the command again")
        extra = {**(record.get("extra") or {}), **update}
        with atomic_write(path, overwrite=True, kind=MODEL_FILE) as tmp:
            if _suffix(path) in PT_SUFFIXES:
                torch.save({**record, "extra": extra}, tmp)
            else:
                head = {k: v for k, v in record.items() if k not in ("state_dict", "extra")}
                _save_h5(tmp, head, record["state_dict"], extra)


def save_model(flow: Flow, path: str | Path, *, extra: dict | None = None, overwrite: bool = False,
               state: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``flow`` to ``path`` atomically; the format follows the extension (.pt or .h5).

    ``extra`` must hold tensors and plain values only (it is loaded with ``weights_only=True``);
    in ``.h5`` files only its JSON-able part is kept, as an attribute. An existing file is replaced
    only with ``overwrite``, and only when it is an oodflow model file. ``state`` (weights and buffers of
    ``flow``'s architecture, e.g. an earlier epoch's) is written instead of the flow's own.

    Raises:
        ValueError: a weight or statistic of ``flow`` is NaN or infinite (such a model cannot score).
        OutputError: ``path`` exists (without ``overwrite``), is another kind of file, or cannot be written.
    """
    path = Path(path)
    suffix = _suffix(path)
    state = {k: v.detach().cpu().clone() for k, v in (state or flow.state_dict()).items()}
    bad = first_non_finite(state.items())
    if bad is not None:
        raise ValueError(f"{path}: refusing to save a model whose weights are not finite (NaN or inf in {bad})")
    with atomic_write(path, overwrite=overwrite, kind=MODEL_FILE) as tmp:
        if suffix in PT_SUFFIXES:
            torch.save({**header(flow), "state_dict": state, "extra": extra or {}}, tmp)
        else:
            _save_h5(tmp, header(flow), state, extra or {})


def _save_h5(path: Path, head: dict, state: dict, extra: dict) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        for key, value in head.items():
            f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
        f.attrs["extra"] = json.dumps(_jsonable(extra))
        weights = f.create_group("state_dict")
        for key, tensor in state.items():
            weights.create_dataset(key, data=tensor.numpy())


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items() if _jsonable(v) is not _SKIP}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return _SKIP


_SKIP = object()


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> Flow:
    """Rebuild a flow from a model file (``.pt`` or ``.h5``), in eval mode."""
    return load_checkpoint(path, device=device)[0]


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[Flow, dict]:
    """Like :func:`load_model`, also returning the file's ``extra`` dict."""
    path = Path(path)
    record = read_model_file(path)
    flow = _rebuild(path, record)
    return flow.to(device).eval(), record.get("extra") or {}


def read_model_file(path: str | Path) -> dict:
    """The checked contents of a model file without building the model: the header (``format_version``,
    ``oodflow_version``, ``model``, ``config``, ``input_shape``), ``extra`` and ``state_dict``."""
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    return _read_pt(path) if suffix in PT_SUFFIXES else _read_h5(path)


def _read_pt(path: Path) -> dict:
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ModelFileError(f"{path}: not an oodflow model file (not loaded: oodflow loads only tensors and "
                                 "plain values from .pt files)") from None
        raise ModelFileError(f"{path}: not an oodflow model file (corrupt or truncated)") from None
    except KeyError:  # torch's reader of old-style files met an unknown opcode: its message is a bare byte value
        raise ModelFileError(f"{path}: not an oodflow model file (not a PyTorch file, or corrupt)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not an oodflow model file (corrupt or truncated: {_first_line(exc)})") from None
    return _check_header(path, record)


def _read_h5(path: Path) -> dict:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs = {k: f.attrs[k] for k in f.attrs}
            if attrs.get("format") != FORMAT or "state_dict" not in f:
                raise ModelFileError(f"{path}: not an oodflow model file (an HDF5 file without oodflow model data)")
            state = {k: torch.from_numpy(np.array(ds[()])) for k, ds in f["state_dict"].items()}
    except OSError as exc:
        raise ModelFileError(f"{path}: not an oodflow model file (corrupt or truncated: {_first_line(exc)})") from None
    record = {k: (json.loads(v) if k in ("config", "input_shape", "extra") else v) for k, v in attrs.items()}
    record = {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}
    return _check_header(path, {**record, "state_dict": state})


def _check_header(path: Path, record: Any) -> dict:
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an oodflow model file (no oodflow metadata)")
    version = int(record.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format version {version} is newer than this oodflow supports "
                             f"({FORMAT_VERSION}); upgrade oodflow (file written by oodflow "
                             f"{record.get('oodflow_version')})")
    missing = [k for k in ("model", "config", "input_shape", "state_dict") if k not in record]
    if missing:
        raise ModelFileError(f"{path}: model file is missing {', '.join(missing)}")
    return record


def _rebuild(path: Path, record: dict) -> Flow:
    config, state = record["config"], record["state_dict"]
    if int(record.get("format_version", 0)) < 2:
        config, state = from_format_1(record["model"], config, state)
    try:
        flow = create_flow(record["model"], tuple(record["input_shape"]), **config)
        flow.load_state_dict(state, strict=True)
    except (ValueError, RuntimeError, TypeError, OodflowError) as exc:
        raise ModelFileError(f"{path}: model file does not match its configuration: {_first_line(exc)}") from None
    bad = first_non_finite(state.items())
    if bad is not None:
        raise ModelFileError(f"{path}: the model's weights are not finite (NaN or inf in {bad}); it cannot score "
                             "(was it saved from a diverged training run?)")
    return flow


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
