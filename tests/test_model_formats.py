"""Model files of format 1 (written by oodflow before the authors' st-network) still load, unchanged.

``tests/fixtures/format-v1/`` holds files written by commit c3a8f2f (format 1) and the log-probs
that code computed for fixed inputs; loading them now must give the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ood_flow
from ood_flow.flows.io import FORMAT_VERSION

FIXTURES = Path(__file__).parent / "fixtures" / "format-v1"
EXPECTED = torch.load(FIXTURES / "expected.pt", weights_only=True)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_format_1_files_load_and_score_as_when_written(name):
    record = torch.load(FIXTURES / name, weights_only=True) if name.endswith(".pt") else None
    if record is not None:
        assert record["format_version"] == 1
    flow = ood_flow.load_model(FIXTURES / name)
    with torch.no_grad():
        log_prob = flow.log_prob(EXPECTED[name]["x"])
    torch.testing.assert_close(log_prob, EXPECTED[name]["log_prob"], rtol=1e-6, atol=1e-5)


def test_format_1_realnvp_is_rebuilt_with_the_legacy_network_and_layout():
    flow = ood_flow.load_model(FIXTURES / "realnvp.pt")
    assert flow.config.net == "resnet-v1" and flow.config.layout == "v1"
    single = ood_flow.load_model(FIXTURES / "realnvp-1scale.pt")
    assert sum(1 for m in single.modules() if type(m).__name__ == "AffineCoupling") == 4  # as format 1 built it


@pytest.mark.parametrize("name", ["realnvp.pt", "glow.pt", "realnvp-cycle-bottleneck.h5"])
def test_resaving_a_format_1_model_writes_the_current_format_with_the_same_scores(tmp_path, name):
    flow = ood_flow.load_model(FIXTURES / name)
    path = tmp_path / f"again{Path(name).suffix}"
    ood_flow.save_model(flow, path)
    if path.suffix == ".pt":
        assert torch.load(path, weights_only=True)["format_version"] == FORMAT_VERSION == 2
    again = ood_flow.load_model(path)
    x = EXPECTED[name]["x"]
    with torch.no_grad():
        assert torch.equal(again.log_prob(x), flow.log_prob(x))
