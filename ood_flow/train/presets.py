"""Presets: the paper's settings for each kind of data (the default), and a small model for CPUs.

``paper`` is what the paper trained (Kirichenko, Izmailov & Wilson 2020):

- grayscale images (Appendix C): RealNVP 2 scales, 6 residual blocks of 64 channels, Adam, lr 5e-5,
  batch 32, 80 epochs; Glow 2 scales of 16 steps, 3-layer highway st-networks of 200 channels,
  RMSprop, lr 5e-5, batch 32, 80 epochs;
- colour images (Appendix C): RealNVP 3 scales, 8 blocks, Adam, lr 1e-4, weight decay 5e-5, batch 32,
  100 epochs; Glow 3 scales of 8 steps, 400 channels, RMSprop, lr 5e-5, batch 32, 80 epochs;
- vectors (Appendix K.1): RealNVP with 8 couplings, AdamW, weight decay 1e-3; tables (UCI) 1 hidden
  layer of 256 units, lr 1e-4, batch 32, 100 epochs; image embeddings (HDF5 ``features`` files, as
  ``oodflow embed`` writes them) 3 hidden layers of 512 units, lr 1e-3, batch 1024, 120 epochs.

Where the paper gives no weight decay (grayscale RealNVP, Glow) the authors' script default, 5e-5,
is used. That takes days on a CPU; ``cpu`` trains a small model of the same structure (about
1/50 of the paper's RealNVP) with a larger learning rate and batch, and stops early when
validation bits/dim has not improved by 0.005 over 3 epochs (at most 30 epochs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ood_flow import names

PRESETS = names.PRESETS
KINDS = ("grayscale", "colour", "uci", "embedding")

_EARLY_STOP = {"patience": 3, "min_delta": 0.005}
_SETTINGS: dict[tuple[str, str, str], tuple[dict, dict]] = {
    ("paper", "realnvp", "grayscale"): ({"scales": 2, "blocks": 6, "channels": 64},
                                        {"optimizer": "adam", "lr": 5e-5, "weight_decay": 5e-5, "batch_size": 32,
                                         "epochs": 80}),
    ("paper", "realnvp", "colour"): ({"scales": 3, "blocks": 8, "channels": 64},
                                     {"optimizer": "adam", "lr": 1e-4, "weight_decay": 5e-5, "batch_size": 32,
                                      "epochs": 100}),
    ("paper", "glow", "grayscale"): ({"scales": 2, "couplings": 16, "channels": 200, "blocks": 3},
                                     {"optimizer": "rmsprop", "lr": 5e-5, "weight_decay": 5e-5, "batch_size": 32,
                                      "epochs": 80}),
    ("paper", "glow", "colour"): ({"scales": 3, "couplings": 8, "channels": 400, "blocks": 3},
                                  {"optimizer": "rmsprop", "lr": 5e-5, "weight_decay": 5e-5, "batch_size": 32,
                                   "epochs": 80}),
    ("paper", "tabular", "uci"): ({"couplings": 8, "hidden": 256, "layers": 1},
                                  {"optimizer": "adamw", "lr": 1e-4, "weight_decay": 1e-3, "batch_size": 32,
                                   "epochs": 100}),
    ("paper", "tabular", "embedding"): ({"couplings": 8, "hidden": 512, "layers": 3},
                                        {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-3, "batch_size": 1024,
                                         "epochs": 120}),
    ("cpu", "realnvp", "grayscale"): ({"scales": 2, "blocks": 2, "channels": 16},
                                      {"optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-5, "batch_size": 64,
                                       "epochs": 30, **_EARLY_STOP}),
    ("cpu", "realnvp", "colour"): ({"scales": 3, "blocks": 2, "channels": 16},
                                   {"optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-5, "batch_size": 64,
                                    "epochs": 30, **_EARLY_STOP}),
    ("cpu", "glow", "grayscale"): ({"scales": 2, "couplings": 4, "channels": 32, "blocks": 1},
                                   {"optimizer": "rmsprop", "lr": 1e-3, "weight_decay": 5e-5, "batch_size": 64,
                                    "epochs": 30, **_EARLY_STOP}),
    ("cpu", "glow", "colour"): ({"scales": 3, "couplings": 4, "channels": 32, "blocks": 1},
                                {"optimizer": "rmsprop", "lr": 1e-3, "weight_decay": 5e-5, "batch_size": 64,
                                 "epochs": 30, **_EARLY_STOP}),
    ("cpu", "tabular", "uci"): ({"couplings": 8, "hidden": 128, "layers": 1},
                                {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-3, "batch_size": 256,
                                 "epochs": 30, **_EARLY_STOP}),
    ("cpu", "tabular", "embedding"): ({"couplings": 8, "hidden": 256, "layers": 2},
                                      {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-3, "batch_size": 256,
                                       "epochs": 30, **_EARLY_STOP}),
}


@dataclass(frozen=True)
class Preset:
    """One preset's settings for one model family and kind of data.

    ``model`` fills architecture options the user did not give (where they apply), ``train``
    the training settings (:class:`~ood_flow.train.config.TrainConfig` fields).
    """

    name: str
    family: str
    kind: str
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)

    def describe(self) -> str:
        """One line, e.g. ``paper preset for grayscale images: ...``."""
        what = {"grayscale": "grayscale images", "colour": "colour images", "uci": "tables",
                "embedding": "image embeddings"}[self.kind]
        parts = [f"{k} {v}" for k, v in {**self.model, **self.train}.items()]
        return f"{self.name} preset for {what}: {', '.join(parts)} (options given explicitly override these)"


def data_kind(kind: str, sample_shape: tuple[int, ...], source: str) -> str:
    """``grayscale`` or ``colour`` for images (by channels); ``embedding`` for vectors from an HDF5
    ``features`` dataset (what ``oodflow embed`` writes), ``uci`` for other vectors (tables)."""
    if kind == "image":
        return "grayscale" if sample_shape[0] == 1 else "colour"
    return "embedding" if source.endswith(":features") else "uci"


def get_preset(name: str, family: str, kind: str) -> Preset:
    """The settings of preset ``name`` for ``family`` on data of ``kind``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    key = (name, family, kind)
    if key not in _SETTINGS:
        raise ValueError(f"no {name} preset for {family} on {kind} data")
    model, train = _SETTINGS[key]
    return Preset(name, family, kind, dict(model), dict(train))
