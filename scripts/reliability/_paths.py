"""Put the repo's source roots and the test helpers the reliability scripts share on sys.path."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for folder in ("contract", "operator", "trainer", "benchmark", "cluster", "tests/reliability", "tests/support"):
    if str(ROOT / folder) not in sys.path:
        sys.path.insert(0, str(ROOT / folder))
