"""``oodflow convert flows-ood``: the authors' checkpoint scores as their own code scored it.

``../shared/oracles/flows_ood/`` holds a checkpoint made by the authors' code and the
log-likelihoods it computed for four images with known dequantization noise ``u``. Their logit
layer adds ``D log(255/256)`` for mapping ``x`` to ``y = (255x + u)/256``; oodflow's flow takes ``y``,
so ``flow.log_prob(y)`` must equal theirs plus ``D log(256/255)``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import ood_flow
from ood_flow.cli.main import app
from ood_flow.errors import InputError
from ood_flow.flows.convert import convert_flows_ood


def _oracle_dir() -> Path:
    """``shared/oracles/flows_ood``: beside the data root, or beside the checkout (as CI lays them out)."""
    data = os.environ.get("OODFLOW_DATA_DIR")
    near_data = Path(data).resolve().parent / "oracles" / "flows_ood" if data else None
    return near_data if near_data and near_data.is_dir() else \
        Path(__file__).resolve().parents[2] / "shared" / "oracles" / "flows_ood"


ORACLE = _oracle_dir()
CKPT = ORACLE / "realnvp-2scales-8ch-1block.pt"
pytestmark = pytest.mark.skipif(not CKPT.is_file(), reason=f"oracle checkpoint not found at {CKPT}")


def _oracle():
    return torch.load(ORACLE / "expected.pt", weights_only=True)


def _their_log_likelihood(flow, expected):
    y = (255 * expected["x"] + expected["u"]) / 256
    with torch.no_grad():
        z, logdet = flow(y)
        return flow.log_prob(y) - flow.dim * math.log(256 / 255), logdet - flow.dim * math.log(256 / 255)


def test_converted_checkpoint_gives_the_authors_log_likelihoods():
    flow = convert_flows_ood(CKPT)
    cfg = flow.config
    assert (flow.input_shape, cfg.scales, cfg.channels, cfg.blocks, cfg.net) == ((1, 28, 28), 2, 8, 1, "resnet")
    assert sum(p.numel() for p in flow.parameters()) == 46_816  # as the oracle's README says
    expected = _oracle()
    ll, logdet = _their_log_likelihood(flow, expected)
    assert (ll - expected["log_likelihood"]).abs().max() < 1e-2
    assert (logdet - expected["log_det"]).abs().max() < 1e-2


def test_cli_writes_a_model_file_that_scores_the_same(tmp_path):
    out = tmp_path / "m.pt"
    result = CliRunner().invoke(app, ["convert", "flows-ood", str(CKPT), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "46,816 parameters" in result.stderr and result.stdout == ""
    flow = ood_flow.load_model(out)
    expected = _oracle()
    ll, _ = _their_log_likelihood(flow, expected)
    assert (ll - expected["log_likelihood"]).abs().max() < 1e-2
    again = CliRunner().invoke(app, ["convert", "flows-ood", str(CKPT), "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.stderr


def test_wrong_input_shape_and_foreign_files_are_one_line_errors(tmp_path):
    runner = CliRunner()
    bad_shape = runner.invoke(app, ["convert", "flows-ood", str(CKPT), "--out", str(tmp_path / "a.pt"),
                                    "--input-shape", "3,32,32"])
    assert bad_shape.exit_code == 1 and "1-channel" in bad_shape.stderr
    not_ckpt = runner.invoke(app, ["convert", "flows-ood", str(ORACLE / "expected.pt"),
                                   "--out", str(tmp_path / "b.pt")])
    assert not_ckpt.exit_code == 1 and len(not_ckpt.stderr.strip().splitlines()) == 1
    malformed = runner.invoke(app, ["convert", "flows-ood", str(CKPT), "--out", str(tmp_path / "c.pt"),
                                    "--input-shape", "1,28"])
    assert malformed.exit_code == 2
    assert not any(tmp_path.iterdir())


def test_a_truncated_state_dict_is_refused(tmp_path):
    record = torch.load(CKPT, weights_only=True)
    state = {k: v for k, v in record["net"].items() if "body.7." not in k}  # drop the last coupling
    torch.save({"net": state}, tmp_path / "cut.pt")
    with pytest.raises(InputError, match="couplings"):
        convert_flows_ood(tmp_path / "cut.pt")
