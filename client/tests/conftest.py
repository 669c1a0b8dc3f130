from __future__ import annotations

import sys
from pathlib import Path

# real-process fixtures are shared with the node's tests
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "node" / "tests"))
