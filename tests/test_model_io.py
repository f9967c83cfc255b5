"""Model files: self-describing, bit-identical after load, safe, atomic, clear errors."""

from __future__ import annotations

import json
import os
import pickle

import h5py
import pytest
import torch

from helpers import randomize
import ood_flow
from ood_flow.errors import ModelFileError, UsageError
from ood_flow.flows.io import FORMAT_VERSION
from ood_flow.flows.layers import ActNorm

CASES = [
    ("realnvp", (1, 8, 8), {"channels": 8, "blocks": 1}),
    ("realnvp", (3, 8, 8), {"mask": "cycle", "channels": 8, "blocks": 2, "bottleneck": 3}),
    ("glow", (1, 8, 8), {"channels": 8, "couplings": 2}),
    ("tabular", (6,), {"hidden": 16}),
]


def _flow(name, shape, opts):
    flow = ood_flow.create_flow(name, shape, **opts)
    flow.fit_preprocessing(torch.randn(30, *shape) * 3 + 2)
    flow(torch.rand(4, *shape))  # ActNorm data-dependent init happens here
    return randomize(flow).eval()


@pytest.mark.parametrize("suffix", [".pt", ".h5"])
@pytest.mark.parametrize("name,shape,opts", CASES)
def test_save_load_gives_bit_identical_log_prob(tmp_path, suffix, name, shape, opts):
    flow = _flow(name, shape, opts)
    x = torch.rand(5, *shape)
    path = tmp_path / f"m{suffix}"
    ood_flow.save_model(flow, path)
    loaded = ood_flow.load_model(path)
    assert loaded.config == flow.config and loaded.input_shape == flow.input_shape
    with torch.no_grad():
        assert torch.equal(loaded.log_prob(x), flow.log_prob(x))
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary files may be left behind"


def test_pt_file_loads_with_weights_only_and_describes_itself(tmp_path):
    flow = _flow(*CASES[1])
    ood_flow.save_model(flow, tmp_path / "m.pt", extra={"epochs": 3})
    record = torch.load(tmp_path / "m.pt", weights_only=True)
    assert record["model"] == "realnvp" and record["config"]["mask"] == "cycle"
    assert record["config"]["bottleneck"] == 3 and record["input_shape"] == [3, 8, 8]
    assert record["format_version"] == FORMAT_VERSION and record["oodflow_version"] == ood_flow.__version__
    assert ood_flow.load_checkpoint(tmp_path / "m.pt")[1] == {"epochs": 3}


def test_h5_stores_weights_as_datasets_and_config_as_attributes(tmp_path):
    flow = _flow(*CASES[3])
    ood_flow.save_model(flow, tmp_path / "m.h5")
    with h5py.File(tmp_path / "m.h5") as f:
        assert json.loads(f.attrs["config"])["hidden"] == 16
        assert f.attrs["model"] == "tabular"
        assert "preprocess.mean" in f["state_dict"]  # fitted statistics travel with the model


@pytest.mark.parametrize("suffix", [".pt", ".h5"])
def test_actnorm_does_not_reinitialise_after_load(tmp_path, suffix):
    flow = ood_flow.create_flow("glow", (1, 8, 8), channels=8, couplings=1)
    flow.train()
    flow(torch.rand(8, 1, 8, 8))
    ood_flow.save_model(flow, tmp_path / f"m{suffix}")
    loaded = ood_flow.load_model(tmp_path / f"m{suffix}").train()
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    loaded(torch.rand(8, 1, 8, 8) * 0.1)  # very different data: a re-initialisation would show
    actnorm_keys = [k for k in before if ".bias" in k or "log_scale" in k]
    norms = [m for m in loaded.modules() if isinstance(m, ActNorm)]
    assert norms and all(bool(m.initialized) for m in norms)
    assert all(torch.equal(before[k], loaded.state_dict()[k]) for k in actnorm_keys if "log_scale" in k)


def test_truncated_and_foreign_files_raise_clear_errors(tmp_path):
    flow = _flow(*CASES[0])
    ood_flow.save_model(flow, tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.pt: not an oodflow model file"):
        ood_flow.load_model(tmp_path / "cut.pt")
    for text in ("hello", "hi\n"):  # torch's error for these is a bare byte value (KeyError 104, 105)
        (tmp_path / "text.pt").write_text(text)
        with pytest.raises(ModelFileError) as raised:
            ood_flow.load_model(tmp_path / "text.pt")
        assert str(raised.value).endswith("text.pt: not an oodflow model file (not a PyTorch file, or corrupt)")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="no oodflow metadata"):
        ood_flow.load_model(tmp_path / "other.pt")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1, 2]
    with pytest.raises(ModelFileError, match="not an oodflow model file"):
        ood_flow.load_model(tmp_path / "other.h5")
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(ModelFileError, match="bad.h5"):
        ood_flow.load_model(tmp_path / "bad.h5")
    with pytest.raises(ModelFileError, match="no such model file"):
        ood_flow.load_model(tmp_path / "missing.pt")
    with pytest.raises(ModelFileError, match="use .pt or .h5"):
        ood_flow.load_model(tmp_path / "m.bin")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_a_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path):
    _Evil.marker = tmp_path / "pwned"
    torch.save({"format": "oodflow-model", "payload": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ModelFileError, match="not an oodflow model file"):
        ood_flow.load_model(tmp_path / "evil.pt")
    assert not _Evil.marker.exists()
    with open(tmp_path / "evil2.pt", "wb") as f:
        pickle.dump(_Evil(), f)
    with pytest.raises(ModelFileError):
        ood_flow.load_model(tmp_path / "evil2.pt")
    assert not _Evil.marker.exists()


def test_newer_format_is_refused(tmp_path):
    flow = _flow(*CASES[0])
    ood_flow.save_model(flow, tmp_path / "m.pt")
    record = torch.load(tmp_path / "m.pt", weights_only=True)
    record["format_version"] = 99
    torch.save(record, tmp_path / "new.pt")
    with pytest.raises(ModelFileError, match="format version 99 is newer"):
        ood_flow.load_model(tmp_path / "new.pt")


def test_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    flow = _flow(*CASES[0])
    path = tmp_path / "m.pt"
    ood_flow.save_model(flow, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        ood_flow.save_model(flow, path, overwrite=True)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_registry_lists_valid_models_and_options():
    with pytest.raises(ValueError, match="valid models: realnvp, glow, tabular"):
        ood_flow.create_flow("maf", (1, 8, 8))
    with pytest.raises(UsageError, match="valid options: .*bottleneck"):
        ood_flow.create_flow("realnvp", (1, 8, 8), depth=3)
    with pytest.raises(ValueError, match="supports 1 to"):
        ood_flow.create_flow("glow", (1, 6, 6), scales=3)


def test_defaults_follow_the_paper_scaled_to_the_input():
    small = ood_flow.create_flow("realnvp", (1, 28, 28)).config
    assert (small.scales, small.blocks, small.channels) == (2, 6, 64)
    large = ood_flow.create_flow("realnvp", (3, 32, 32)).config
    assert (large.scales, large.blocks) == (3, 8)
    glow = ood_flow.create_flow("glow", (3, 32, 32), channels=16).config
    assert (glow.scales, glow.couplings, glow.net) == (3, 8, "highway")
