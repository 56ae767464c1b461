"""rebalance-svc's tests: rebalance_test_support (beside this file) is importable by them."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from rebalance_test_support import process_requested_chunks


@pytest.fixture
def run_chunks():
    """`await run_chunks(db)`: process the chunks requested so far."""
    return process_requested_chunks
