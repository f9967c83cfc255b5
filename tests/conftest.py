import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets root (OODFLOW_DATA_DIR), or skip."""
    root = os.environ.get("OODFLOW_DATA_DIR")
    if not root or not Path(root).is_dir():
        pytest.skip("OODFLOW_DATA_DIR not set: real datasets not available")
    return Path(root)


@pytest.fixture(scope="session")
def report_scores(tmp_path_factory):
    """``(score file, model)``: a small real evaluation shared by the report tests (see report_helpers)."""
    from report_helpers import make_scores

    return make_scores(tmp_path_factory.mktemp("report-scores"))
