import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# The fixture scripts record how fixture files were written; importing them (doctest collection) would rerun them.
collect_ignore_glob = ["fixtures/*"]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets root (OODFLOW_DATA_DIR), or skip."""
    from helpers import real_data_root

    root, reason = real_data_root()
    if root is None:
        pytest.skip(reason)
    return root


@pytest.fixture(scope="session")
def report_scores(tmp_path_factory):
    """``(score file, model)``: a small real evaluation shared by the report tests (see report_helpers)."""
    from report_helpers import make_scores

    return make_scores(tmp_path_factory.mktemp("report-scores"))


@pytest.fixture(scope="session")
def small_fmnist_model(tmp_path_factory) -> Path:
    """A small RealNVP trained briefly (fp32) on the packaged FashionMNIST sample: a model with learnt,
    non-trivial weights and batch-norm statistics, for the precision and fused-path tests."""
    from ood_flow import train_flow
    from ood_flow.data import SourceOptions
    from ood_flow.train import TrainConfig

    out = tmp_path_factory.mktemp("small-fmnist") / "m.pt"
    train_flow("demo-fashionmnist", TrainConfig(max_steps=40, batch_size=32, lr=1e-3, val_fraction=0.05), out=out,
               model_options={"channels": 8, "blocks": 1, "scales": 2}, options=SourceOptions(limit=1000))
    return out
