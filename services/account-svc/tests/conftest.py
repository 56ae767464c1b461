"""account-svc's tests: account_test_support (beside this file) is importable by them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
