"""Paths of the shipping artefacts (charts, manifests, monitoring files)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "quran-finetune"
MANIFESTS = ROOT / "manifests"
DASHBOARD = CHART / "files" / "dashboards" / "quranft-training.json"
RULES = CHART / "files" / "rules" / "quranft-alerts.yaml"
RULES_TESTS = ROOT / "tests" / "ship" / "rules_test.yaml"
