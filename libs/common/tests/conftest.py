import sys
from pathlib import Path

# The probe service used by these tests lives beside them.
sys.path.insert(0, str(Path(__file__).parent))
