"""quranft.contract is the one definition of what the components agree on (issue 14, item 1).

(a) It imports none of the components (operator, trainer, benchmark, cluster) and nothing heavy, so every image
and pod can import it. (b) No component redefines what it holds: a scan of the source roots for exit-code
constants, the progress prefix, the 4 KB limit, label keys and hard-coded workspace paths. The scanner is
tested on lines that must and must not be flagged, so it cannot pass by matching nothing.
(c) The models and paths match what the stages write (docs/contracts.md).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from quranft.contract import exits, keys, progress, summaries, workspace

REPO = Path(__file__).resolve().parents[2]
CONTRACT_MODULES = ("quranft.contract", "quranft.contract.exits", "quranft.contract.keys",
                    "quranft.contract.progress", "quranft.contract.summaries", "quranft.contract.workspace")
SCANNED_ROOTS = ("operator", "trainer", "benchmark", "cluster")
FORBIDDEN_IMPORTS = ("quranft.operator", "quranft.trainer", "quranft.benchmark", "quranft.cluster", "quranft.cli",
                     "kubernetes", "kopf", "torch", "numpy")


# --- (a) imports ---------------------------------------------------------------------------------------------

def test_contract_imports_no_component():
    """Imported alone, in a fresh interpreter that COULD import every component (all roots on the path)."""
    probe = ("import importlib, json, sys\n"
             f"for name in {CONTRACT_MODULES!r}:\n"
             "    importlib.import_module(name)\n"
             "print(json.dumps(sorted(sys.modules)))\n")
    roots = [str(REPO / d) for d in ("contract", *SCANNED_ROOTS)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(roots)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True)
    loaded = json.loads(out.stdout)
    assert set(CONTRACT_MODULES) <= set(loaded)
    leaked = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN_IMPORTS)]
    assert not leaked, f"quranft.contract pulled in {leaked}"


def test_contract_modules_have_no_component_imports_in_their_source():
    """Also imports that would only run later (inside functions): none may name a component."""
    component = re.compile(r"^\s*(?:from|import)\s+quranft\.(?!contract\b)", re.M)
    for path in sorted((REPO / "contract" / "quranft" / "contract").glob("*.py")):
        assert not component.search(path.read_text()), path


# --- (b) no copies ---------------------------------------------------------------------------------------------

_NAMES_RE = r"[A-Z][A-Z0-9_]*"
_FILES = r"(?:model\.nemo|progress\.json|progress_history\.jsonl|training_metadata\.json|latest\.json)"
# (what, pattern): each a definition that belongs to quranft.contract.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((what, re.compile(rx)) for what, rx in (
    # EXIT_OK = 0, FATAL_EXIT_CODES = [2, 5], EXIT_CODES = (2, 5): a name about exit codes bound to integers.
    ("exit-code constant", rf"^\s*(?:{_NAMES_RE}_)?(?:EXIT|CODES?)(?:_{_NAMES_RE})?\s*(?::[^=]+)?=\s*[\[({{]?\s*\d+"
                           r"\s*(?:[,\])}#]|$)"),
    ("exit code -> reason map", r"\b\d{1,3}\s*:\s*[\"'](?:ConfigError|DataError|TrainingError|EnvironmentError)[\"']"),
    # (0, success, is everyone's; a code the operator acts on is the contract's)
    ("exit code compared to a literal", r"\bexit_?code\s*(?:==|!=|>=|<=|\bnot in\b|\bin\b)\s*[\[({]?\s*[1-9]"),
    ("exit codes in a podFailurePolicy", r"onExitCodes.*[\"']values[\"']\s*:\s*\[\s*\d"),
    ("progress prefix", r"[\"']QURANFT_PROGRESS\b"),
    ("progress push wire", r"(?i)[\"'](?:quranft-progress|/v1/progress|quranft-push-after)[\"']"),
    ("termination-message limit", rf"^\s*{_NAMES_RE}\s*(?::[^=]+)?=\s*4096\b"),
    ("label/annotation key", r"^\s*[A-Z0-9_]*(?:LABEL|ANNOTATION)[A-Z0-9_]*\s*=\s*f?[\"'](?:\{GROUP\}|quranft\.io)/"),
    ("API group literal", r"^\s*[\w, ]*\bGROUP\b[\w, ]*=.*[\"']quranft\.io[\"']"),
    ("workspace root", r"[\"']/workspace(?:/|[\"'])"),
    ("config mount", r"[\"']/etc/quranft(?:/|[\"'])"),
    ("workspace directory joined by hand", r"/\s*[\"'](?:runs|corpora|campaigns|checkpoints)[\"']"),
    ("run directory joined by hand", r"\brun_dir\s*/\s*[\"'](?:manifests|benchmark)[\"']"),
    ("workspace directory name", rf"^\s*{_NAMES_RE}\s*=\s*[\"'](?:runs|corpora|campaigns|checkpoints)[\"']"),
    ("workspace data directory joined by hand", r"workspace[\w.\])]*\s*/\s*[\"']data[\"']"),
    ("production directory", r"[\"']models/production(?:[\"']|/\{)|[\"']models[\"']\s*/\s*[\"']production[\"']"),
    ("workspace path in an f-string", r"\}/(?:runs|data|corpora|campaigns|corpus|models/production|\.cache/huggingface)"
                                      r"(?:/|[\"'])"),
    ("run file in an f-string", r"\}/(?:benchmark|checkpoints|" + _FILES + r")(?:/|[\"'])"),
    ("run file name", r"[\"'/]" + _FILES + r"[\"']"),
))
# The embedded cluster emulates the kubelet, whose own cap on a termination message is the same 4 KB.
EXEMPT = {("termination-message limit", "cluster/quranft/cluster/podstatus.py")}
# Files other helpers are editing right now (issue 14): they still hold copies and move to quranft.contract next.
# Each entry must still match (test_pending_copies_are_still_there), so a cleaned file leaves this list.
PENDING: set[tuple[str, str]] = set()


def scan_text(text: str) -> list[tuple[str, int, str]]:
    """(what, line number, line) for each line that redefines part of the contract; comments are skipped."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        for what, pattern in PATTERNS:
            if pattern.search(line):
                found.append((what, number, line.strip()))
    return found


def scan_tree() -> dict[tuple[str, str], list[str]]:
    hits: dict[tuple[str, str], list[str]] = {}
    for root in SCANNED_ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for what, number, line in scan_text(path.read_text(encoding="utf-8")):
                if (what, rel) not in EXEMPT:
                    hits.setdefault((what, rel), []).append(f"{rel}:{number}: {line}")
    return hits


def test_no_component_redefines_the_contract():
    hits = {key: lines for key, lines in scan_tree().items() if key not in PENDING}
    report = "\n".join(f"{what}: {line}" for (what, _), lines in sorted(hits.items()) for line in lines)
    assert not hits, f"import these from quranft.contract instead:\n{report}"


def test_pending_copies_are_still_there():
    """A pending entry whose file no longer holds the copy must leave PENDING (the scan then guards the file)."""
    hits = scan_tree()
    stale = sorted(key for key in PENDING if key not in hits)
    assert not stale, f"no longer needed in PENDING: {stale}"


@pytest.mark.parametrize("line", [
    "EXIT_OK = 0",
    "EXIT_PREEMPTED = 143  # 128 + SIGTERM",
    "FATAL_EXIT_CODES = [2, 5]",
    "FATAL_EXIT_CODES: tuple[int, ...] = (2, 5)",
    "RETRYABLE_CODES = {3, 4}",
    'REASON_BY_EXIT = {2: "ConfigError", 3: "DataError"}',
    "    cause = next((pod for pod in failed if pod.exit_code != 143), None)",
    "    if pod.exit_code in (2, 5):",
    '    root = f"models/production/{campaign}"',
    '{"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}},',
    'PROGRESS_PREFIX = "QURANFT_PROGRESS "',
    "    self._out('QURANFT_PROGRESS ' + json.dumps(doc))",
    'PROGRESS_AUDIENCE = "quranft-progress"',
    '    app.router.add_post("/v1/progress", endpoint.handle)',
    '    after = response.getheader("Quranft-Push-After")',
    "MAX_MESSAGE_BYTES = 4096",
    "MAX_TERMINATION_BYTES: int = 4096  # the kubelet's limit",
    'LABEL_RUN = f"{GROUP}/run"',
    'STOP_ANNOTATION = "quranft.io/stop-requested"',
    'GROUP = "quranft.io"',
    'GROUP, VERSION, PLURAL = "quranft.io", "v1alpha1", "quranfinetunecampaigns"',
    'WORKSPACE = "/workspace"',
    '    workspace: Path = Field(Path("/workspace"), description="Root of the shared volume (the PVC).")',
    '    model = {"path": summary.get("modelPath") or f"/workspace/runs/{meta[\'name\']}/model.nemo"}',
    'CONFIG_DIR = "/etc/quranft"',
    'CONFIG_FILE = "/etc/quranft/config.json"',
    '        return self.run.workspace / "runs" / self.run.name',
    '    path = workspace / "runs" / child / METADATA_FILE',
    '    root = Path(os.path.abspath(workspace)) / "corpora"',
    '    out_dir = workspace / "campaigns" / name',
    '    ckpt_dir = run_dir / "checkpoints"',
    '        return self.run.workspace / "data" / data_spec_hash(self.data)',
    '    data_root = Path(os.path.abspath(cfg.run.workspace)) / "data"',
    '    return workspace / "models" / "production" / campaign',
    'PRODUCTION_DIR = "models/production"',
    '    run_dir = f"{WORKSPACE}/runs/{meta[\'name\']}"',
    '            "--training-data", f"{WORKSPACE}/data/{spec_data_hash(spec)}",',
    '        return {"resultsPath": f"{builders.WORKSPACE}/models/production/{name}/results.json"}',
    '    corpus = bench.get("corpusPath", f"{WORKSPACE}/corpus")',
    '            "--out", f"{run_dir}/benchmark", "--name", name,',
    '    args = ["--model", model_path or f"{run_dir}/model.nemo"]',
    '    model_path = run_dir / "model.nemo"',
    '        progress = ProgressReporter(run_dir / "progress.json", 5.0, history=run_dir / "progress_history.jsonl")',
    'METADATA_FILE = "training_metadata.json"',
    'CORPORA_DIR = "corpora"',
    '    out = run_dir / "manifests" if refold_dir is None else refold_dir',
    '        {"name": "HF_HOME", "value": f"{WORKSPACE}/.cache/huggingface"},',
    '    for target in (path, out_dir / "latest.json"):',
])
def test_the_scan_flags_a_copy(line):
    assert scan_text(line), f"not flagged: {line}"


@pytest.mark.parametrize("line", [
    "LAUNCHER_EXIT_WAIT_SECONDS = 30.0",
    "    return ExitCode.OK if argv else ExitCode.CONFIG_ERROR",
    "            return 130",
    '    pod = next((p for p in reversed(job.pods) if p.phase == "Succeeded" or p.exit_code == 0), None)',
    "RULE_FATAL, RULE_DISRUPTION, RULE_FAILED = 0, 1, 2",
    '    {"action": "FailJob", "onExitCodes": {"operator": "In", "values": list(FATAL_EXIT_CODES)}},',
    "    batch_size: int = Field(12, ge=1, le=4096)",
    "MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18",
    'KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"',
    'SCHEMA = "quranft.io/lineage/v1"',
    "# the caller exits 143 for the Job to retry; WORKSPACE = \"/workspace\"",
    '    model_path: str | None = Field(None, description="model.nemo on the claim.")',
    '    description="models/production/<campaign>/results.json on the claim.")',
    '    """The last QURANFT_PROGRESS line of a pod\'s log; runs/<name>/benchmark/latest.json."""',
    '    _write_split(rows, out / "dataset" / "data" / f"{split}-00000-of-00001.parquet")',
    '    bench = out / "benchmark"',
    '    path = cache_root() / "models" / "tiny-base.nemo"',
    '    build = KueueBuild(root / "bin" / "kueue", root / "manifests")',
    '        "data": {CONFIG_KEY: json.dumps(doc)},',
    '    return layout.production_dir(campaign, workspace)',
    'mkdir -p {WORKSPACE}/models',
    '    selector = f"{prefix}/data-spec-hash={value}"',  # `}/data` followed by more than a path segment
    '[ -d {WORKSPACE}/synth/benchmark-dataset ] || quranft trainer synth-data --out {WORKSPACE}/synth',
])
def test_the_scan_leaves_other_lines_alone(line):
    assert not scan_text(line), scan_text(line)


# --- (c) the definitions themselves -----------------------------------------------------------------------

def test_exit_codes_and_which_are_fatal():
    assert [int(c) for c in exits.ExitCode] == [0, 2, 3, 4, 5, 143]
    assert exits.FATAL_EXIT_CODES == (2, 5) and all(type(c) is int for c in exits.FATAL_EXIT_CODES)
    assert dict(exits.REASON_BY_EXIT) == {2: "ConfigError", 3: "DataError", 4: "TrainingError", 5: "EnvironmentError"}
    assert [c for c in exits.ExitCode if exits.is_fatal(c)] == [exits.ExitCode.CONFIG_ERROR,
                                                               exits.ExitCode.ENVIRONMENT_ERROR]
    assert json.dumps({"values": list(exits.FATAL_EXIT_CODES)}) == '{"values": [2, 5]}'


def test_workspace_layout():
    w = workspace
    assert str(w.run_dir("v3")) == "/workspace/runs/v3"
    assert [str(f("v3")) for f in (w.checkpoints_dir, w.model_path, w.progress_path, w.progress_history_path,
                                    w.training_metadata_path, w.refolded_manifests_dir, w.benchmark_dir,
                                    w.latest_results_path)] == [
        "/workspace/runs/v3/checkpoints", "/workspace/runs/v3/model.nemo", "/workspace/runs/v3/progress.json",
        "/workspace/runs/v3/progress_history.jsonl", "/workspace/runs/v3/training_metadata.json",
        "/workspace/runs/v3/manifests", "/workspace/runs/v3/benchmark", "/workspace/runs/v3/benchmark/latest.json"]
    assert str(w.data_dir("abc123")) == "/workspace/data/abc123"
    assert str(w.corpus_cache_dir("abc123")) == "/workspace/corpora/abc123"
    assert str(w.production_dir("plan")) == "/workspace/models/production/plan"
    assert str(w.production_results_path("plan")) == "/workspace/models/production/plan/results.json"
    assert str(w.campaign_dir("plan")) == "/workspace/campaigns/plan"
    assert w.CONFIG_FILE == "/etc/quranft/config.json"
    assert w.model_path("r", Path("rel/ws")) == Path("rel/ws/runs/r/model.nemo")  # a relative workspace stays so


def test_keys():
    assert keys.API_VERSION == "quranft.io/v1alpha1"
    assert (keys.LABEL_RUN, keys.LABEL_STAGE, keys.STOP_ANNOTATION, keys.COMMAND_ANNOTATION) == (
        "quranft.io/run", "quranft.io/stage", "quranft.io/stop-requested", "quranft.io/stage-commands")
    with pytest.raises(TypeError):
        keys.COMMON_LABELS["app.kubernetes.io/name"] = "x"  # type: ignore[index]


def test_progress_record_and_line_round_trip():
    doc = progress.ProgressRecord(step=3, max_steps=10, loss=None, lr=0.1, epoch=0, updated_at="2026-01-01T00:00:00Z",
                                  worldSize=2, custom=1).wire()
    assert doc == {"step": 3, "maxSteps": 10, "loss": None, "lr": 0.1, "epoch": 0,
                   "updatedAt": "2026-01-01T00:00:00Z", "worldSize": 2, "custom": 1}
    assert "lastCheckpointStep" not in doc  # omitted, not null, until set
    log = "noise\n" + "[rank 0] " + progress.progress_line(doc) + "\nQURANFT_PROGRESS {not json\n"
    assert progress.parse_progress(log) == doc
    assert progress.parse_progress("QURANFT_PROGRESS [1, 2]") is None


def test_summaries_keep_ok_and_stage_and_extra_keys():
    prep = summaries.PrepareSummary(data_spec_hash="abc", data_dir="/workspace/data/abc", reused=False,
                                    stats={"train": {}}).wire()
    assert list(prep) == ["ok", "stage", "dataSpecHash", "dataDir", "reused", "stats"] and prep["ok"] is True
    fail = summaries.FailureSummary(stage="train", reason="ConfigError", message="bad").wire()
    assert fail == {"ok": False, "stage": "train", "reason": "ConfigError", "message": "bad"}
    train = summaries.TrainSummary(step=2, model_path="m", size_bytes=1, sha256="s", data_spec_hash="h",
                                   final_loss=None, tracking={"ok": True}).wire()
    assert train["stage"] == "train" and train["finalLoss"] is None and train["tracking"] == {"ok": True}
    assert "valWer" not in train  # a key nobody set is not written


def test_fit_summary_stays_under_the_limit():
    line = summaries.fit_summary({"ok": False, "stage": "train", "reason": "DataError", "message": "é" * 5000})
    assert len(line.encode()) <= summaries.MAX_TERMINATION_BYTES and json.loads(line)["reason"] == "DataError"


def test_the_benchmark_summary_model_reads_the_verdict_message():
    """The benchmark builds its message itself (with its truncation rules); the contract's model must accept it,
    whole and cut down to 4 KB."""
    from quranft.benchmark.verdict import Targets, Tolerances, dumps, verdict_message

    def metrics(recall: float, seq: float) -> dict:
        return {"recall": recall, "precision": 0.9, "sequenceAccuracy": seq, "avgLatency": 0.3, "p50Latency": 0.3,
                "p90Latency": 0.3, "modelSize": 115_000_000, "total": 44, "scored": 44}

    for path in ("/workspace/runs/v3/benchmark/x.json", "/w/" + "x" * 10_000):
        msg = json.loads(dumps(verdict_message(metrics(0.84, 0.81), metrics(0.87, 0.85), Tolerances(), Targets(),
                                               path)))
        model = summaries.BenchmarkSummary.model_validate(msg)
        assert model.verdict == "regression" and model.wire() == msg
    assert model.truncated  # the long path was cut
