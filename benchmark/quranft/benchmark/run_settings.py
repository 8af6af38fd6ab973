"""What `quranft benchmark run` runs with: the run config's `benchmark` section (quranft.contract.config, the
file the operator mounts into every stage pod), `--set a.b=c` on top, then each flag given explicitly.

Pure: no I/O beyond reading the config file, and nothing numpy- or NeMo-heavy, so a bad file fails in
milliseconds (ConfigError, exit 2). `resolve` turns the validated config into the flat settings the run reads
(one attribute per flag), so the hand-typed flags and the operator's file mean exactly the same thing.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from quranft.contract import workspace as layout
from quranft.contract.config import ConfigError, RunConfig, apply_overrides, read_config_doc, validate_config

# Flags that set one config field as they are (argparse dest -> dotted camelCase path).
FIELD_FLAGS = {
    "model": "benchmark.model", "name": "benchmark.name", "out": "benchmark.out",
    "training_data": "benchmark.trainingData", "mode": "benchmark.mode", "decoder": "benchmark.decoder",
    "verdict_head": "benchmark.verdictHead", "verdict_rule": "benchmark.verdictRule",
    "primary_metric": "benchmark.primaryMetric", "latency_samples": "benchmark.latencySamples",
    "seed": "benchmark.seed", "resamples": "benchmark.resamples", "batch_size": "benchmark.batchSize",
    "device": "benchmark.device", "baseline_run": "benchmark.baselineRun", "baseline_name": "benchmark.baselineName",
    "tolerance": "benchmark.tolerances.tolerance", "min_gain": "benchmark.tolerances.minGain",
    "latency_tolerance": "benchmark.tolerances.latencyTolerance",
    "latency_tolerance_abs": "benchmark.tolerances.latencyToleranceAbs",
    "target_recall": "benchmark.targets.recall", "target_size_mb": "benchmark.targets.sizeMB",
    "target_latency": "benchmark.targets.latencySeconds", "workspace": "run.workspace",
}
# Without --config the flags are the whole story: no baseline unless one is asked for, corpora under ".".
FLAGS_ONLY_DOC: dict[str, Any] = {"run": {"workspace": "."}, "benchmark": {"baseline": None}}
BATCH_SIZE_UNSET = 1  # `batchSize` unset in a stage config: batch 1 (the operator always sets it)


def flag_overrides(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(dotted path, value) for every `run` flag given explicitly (argparse leaves the others None)."""
    out = [(path, getattr(args, dest)) for dest, path in FIELD_FLAGS.items() if getattr(args, dest, None) is not None]
    if args.corpus is not None:  # one corpus: a flag replaces whichever form the file had
        out += [("benchmark.corpusPath", args.corpus), ("benchmark.corpus", None)]
    if args.corpus_spec is not None:
        try:
            spec = json.loads(args.corpus_spec)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--corpus-spec is not valid JSON: {exc}") from None
        out += [("benchmark.corpus", spec), ("benchmark.corpusPath", None)]
    if args.baseline is not None:
        out.append(("benchmark.baseline", {"resultsPath": args.baseline}))
    if args.baseline_model is not None:
        out += [("benchmark.baseline", {"baseModel": True}), ("benchmark.baselineModel", args.baseline_model)]
    if args.include_leaked:
        out.append(("benchmark.excludeLeaked", False))
    if args.no_also_accept:
        out.append(("benchmark.alsoAccept", False))
    return out


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        child = node.get(part)
        if child is None:  # absent or null: setting a field creates the object
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{path}: {part} is not an object")
        node = child
    node[leaf] = value


def load(args: argparse.Namespace) -> RunConfig:
    """The config file (or the flags-only defaults), `--set`, then the explicit flags; validated once, so a bad
    value names its field whichever of the three it came from."""
    if args.config:
        doc = read_config_doc(args.config, args.set)
    else:
        doc = apply_overrides(FLAGS_ONLY_DOC, args.set)  # a deep copy
    for path, value in flag_overrides(args):
        set_path(doc, path, value)
    return validate_config(doc)


def resolve(cfg: RunConfig, termination_log: str | None = None) -> argparse.Namespace:
    """The flat settings of one benchmark run (the names of the flags), from a validated config."""
    b, workspace = cfg.benchmark, cfg.run.workspace
    missing = [f"benchmark.{key}" for key, value in (("model", b.model), ("out", b.out)) if not value]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} must be set (--model, --out)")
    corpus = dict(b.corpus) if b.corpus else {"path": b.corpus_path or str(layout.default_corpus_dir(workspace))}
    # A path corpus as the API server stores it also carries the dataset fields' defaults (source, split,
    # audioColumn): the path alone decides.
    corpus_dir, corpus_spec = (str(corpus["path"]), None) if corpus.get("path") else (None, corpus)
    baseline_file = baseline_model = None
    if b.baseline is not None and b.baseline.results_path:
        baseline_file = b.baseline.results_path
    elif b.baseline is not None and b.baseline.qft_ref:
        baseline_file = str(layout.latest_results_path(b.baseline.qft_ref.name, workspace))
    elif b.baseline is not None and b.baseline.base_model:
        baseline_model = b.baseline_model or cfg.training.base_model
    t, g = b.tolerances, b.targets
    return argparse.Namespace(
        model=b.model, name=b.name, out=b.out, corpus=corpus_dir, corpus_spec=corpus_spec, workspace=str(workspace),
        training_data=b.training_data, include_leaked=not b.exclude_leaked, decoder=b.decoder, mode=b.mode,
        verdict_head=b.verdict_head, verdict_rule=b.verdict_rule, primary_metric=b.primary_metric,
        latency_samples=b.latency_samples, seed=b.seed, resamples=b.resamples,
        baseline=baseline_file, baseline_model=baseline_model, baseline_run=b.baseline_run,
        baseline_name=b.baseline_name, no_also_accept=not b.also_accept,
        tolerance=t.tolerance, min_gain=t.min_gain, latency_tolerance=t.latency_tolerance,
        latency_tolerance_abs=t.latency_tolerance_abs, target_recall=g.recall, target_size_mb=g.size_mb,
        target_latency=g.latency_seconds, batch_size=b.batch_size or BATCH_SIZE_UNSET, device=b.device,
        termination_log=termination_log)


def from_args(args: argparse.Namespace) -> argparse.Namespace:
    return resolve(load(args), args.termination_log)
