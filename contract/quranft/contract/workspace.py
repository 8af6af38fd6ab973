"""Where things live: the run config in the pod, and the layout of the workspace claim (docs/contracts.md).

Paths are functions of the workspace root (default WORKSPACE, where every stage pod mounts the claim), so the
operator (building pod arguments) and the stages (writing files) compute the same paths. Each returns a
`Path`; the operator passes `str()` of it into pod specs.
"""
from __future__ import annotations

import os
from pathlib import Path
StrPath = str | os.PathLike[str]

WORKSPACE = "/workspace"  # the claim's mount path in every stage pod
CONFIG_DIR = "/etc/quranft"  # the run's ConfigMap, mounted read-only
CONFIG_KEY = "config.json"  # its one key
CONFIG_FILE = f"{CONFIG_DIR}/{CONFIG_KEY}"

# The production model directory's files (quranft.benchmark.promotion writes them; a run's model has the same name).
MODEL_FILE = "model.nemo"
RESULTS_FILE = "results.json"
LINEAGE_FILE = "lineage.json"
LATEST_RESULTS_FILE = "latest.json"
PROGRESS_FILE = "progress.json"
PROGRESS_HISTORY_FILE = "progress_history.jsonl"
TRAINING_METADATA_FILE = "training_metadata.json"
REFOLDED_MANIFESTS_DIR = "manifests"  # in a run's directory


# --- runs/<name>/: one run's own files ----------------------------------------------------------------------

def run_dir(name: str, workspace: StrPath = WORKSPACE) -> Path:
    return Path(workspace) / "runs" / name


def checkpoints_dir(name: str, workspace: StrPath = WORKSPACE) -> Path:
    return run_dir(name, workspace) / "checkpoints"


def model_path(name: str, workspace: StrPath = WORKSPACE) -> Path:
    """The trained model the train stage exports and the benchmark judges."""
    return run_dir(name, workspace) / MODEL_FILE


def progress_path(name: str, workspace: StrPath = WORKSPACE) -> Path:
    """The latest progress record (the same JSON as the last progress line)."""
    return run_dir(name, workspace) / PROGRESS_FILE


def progress_history_path(name: str, workspace: StrPath = WORKSPACE) -> Path:
    """Every progress report, one JSON line each, append-only (campaign curves read it)."""
    return run_dir(name, workspace) / PROGRESS_HISTORY_FILE


def training_metadata_path(name: str, workspace: StrPath = WORKSPACE) -> Path:
    """The train summary plus the full config, versions and data stats (campaign lineage reads it)."""
    return run_dir(name, workspace) / TRAINING_METADATA_FILE


def refolded_manifests_dir(name: str, workspace: StrPath = WORKSPACE) -> Path:
    """Manifests refolded for this run's tokenizer, when the prepared data was folded for another one."""
    return run_dir(name, workspace) / REFOLDED_MANIFESTS_DIR


def benchmark_dir(name: str, workspace: StrPath = WORKSPACE) -> Path:
    """The benchmark's results files: `<timestamp>.json` and `latest.json`."""
    return run_dir(name, workspace) / "benchmark"


def latest_results_path(name: str, workspace: StrPath = WORKSPACE) -> Path:
    return benchmark_dir(name, workspace) / LATEST_RESULTS_FILE


# --- shared, content-addressed caches -----------------------------------------------------------------------

def data_root(workspace: StrPath = WORKSPACE) -> Path:
    return Path(workspace) / "data"


def data_dir(data_spec_hash: str, workspace: StrPath = WORKSPACE) -> Path:
    """Prepared manifests and audio of one data spec, shared by every run with that spec."""
    return data_root(workspace) / data_spec_hash


def corpora_root(workspace: StrPath = WORKSPACE) -> Path:
    return Path(workspace) / "corpora"


def corpus_cache_dir(corpus_spec_hash: str, workspace: StrPath = WORKSPACE) -> Path:
    """A benchmark corpus materialised from a dataset split."""
    return corpora_root(workspace) / corpus_spec_hash


def default_corpus_dir(workspace: StrPath = WORKSPACE) -> Path:
    """spec.benchmark.corpusPath when a run names no corpus."""
    return Path(workspace) / "corpus"


def hub_cache_dir(workspace: StrPath = WORKSPACE) -> Path:
    """HF_HOME of the stage pods: hub downloads are kept on the claim."""
    return Path(workspace) / ".cache" / "huggingface"


# --- campaigns ------------------------------------------------------------------------------------------------

def production_dir(campaign: str, workspace: StrPath = WORKSPACE) -> Path:
    """The campaign's promoted model: model.nemo, results.json, lineage.json (and history/)."""
    return Path(workspace) / "models" / "production" / campaign


def production_results_path(campaign: str, workspace: StrPath = WORKSPACE) -> Path:
    return production_dir(campaign, workspace) / RESULTS_FILE


def campaign_dir(campaign: str, workspace: StrPath = WORKSPACE) -> Path:
    """The campaign report: report.md and its PNGs."""
    return Path(workspace) / "campaigns" / campaign
