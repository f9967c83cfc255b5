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
