"""`quranft benchmark run [--config FILE] [--set a.b=c] [flags]`, `quranft benchmark score FILE [--json]`,
`quranft benchmark compare RESULTS BASELINE [--json]` and
`quranft benchmark campaign-report --input FILE --workspace DIR` (a campaign's ranking, report and promotion).

`run` reads the run config's `benchmark` section (quranft.contract.config; run_settings.py), the file the
operator mounts into the stage pod; each flag given explicitly wins over the file, and without --config the
flags alone describe the run (--model, --out and a corpus required).

Exit codes and the termination message follow docs/contracts.md: 0 ok (whatever the verdict),
2 ConfigError, 3 DataError, 4 BenchmarkError (TrainingError), 5 EnvironmentError.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from quranft.contract import workspace as layout
from quranft.contract.config import ConfigError
from quranft.trainer.errors import (
    EXIT_OK,
    DataError,
    classify,
    failure_summary,
    write_termination_message,
)

from .verdict import Targets, Tolerances

STAGE = "benchmark"
CAMPAIGN_STAGE = "campaign-report"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quranft benchmark", description="Quran verse-recognition benchmark.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="evaluate a model (and optionally a baseline) over a corpus")
    # Defaults are None: a flag given explicitly overrides the config file; the defaults named in the help are
    # the config's (quranft.contract.config.BenchmarkConfig).
    run.add_argument("--config", metavar="FILE",
                     help="the run config (JSON); its `benchmark` section holds every setting below")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override one config field, e.g. benchmark.seed=3 (repeatable)")
    run.add_argument("--model", help="path to a .nemo file, or a hub name (org/model) (benchmark.model)")
    corpus = run.add_mutually_exclusive_group()
    corpus.add_argument("--corpus", help="directory holding manifest.json and the audio files")
    corpus.add_argument("--corpus-spec", metavar="JSON",
                        help="a corpus spec (spec.benchmark.corpus): a dataset split, prepared once into "
                             "WORKSPACE/corpora/<hash>/ and reused, or {\"path\": DIR}")
    run.add_argument("--workspace",
                     help="where --corpus-spec corpora are prepared (corpora/<hash>/); default: run.workspace, "
                          "or . without --config")
    run.add_argument("--training-data", metavar="DIR",
                     help="the run's prepared data (data/<dataSpecHash>/): corpus clips found there are leaks")
    run.add_argument("--include-leaked", action="store_true", default=None,
                     help="score clips whose audio is also in the training data (counted as leaks either way)")
    run.add_argument("--decoder", choices=("auto", "ctc", "rnnt", "both"),
                     help="decoder heads to score (default auto: ctc for --mode ctcOnly, both for hybrid)")
    run.add_argument("--mode", choices=("ctcOnly", "hybrid"), help="how the model was trained (for auto heads)")
    run.add_argument("--verdict-head", choices=("ctc", "rnnt"),
                     help="head that decides the verdict (default: ctc for ctcOnly, rnnt for hybrid)")
    run.add_argument("--verdict-rule", choices=("paired", "threshold"),
                     help="paired bootstrap intervals (default) or v1's thresholds on raw deltas")
    run.add_argument("--primary-metric", choices=("recall", "precision", "sequenceAccuracy"),
                     help="metric whose gain makes an improvement (default recall)")
    run.add_argument("--latency-samples", type=int, metavar="N",
                     help="clips timed one by one at batch 1 (a seeded sample shared by model and baseline; "
                          "default 32)")
    run.add_argument("--seed", type=int, help="seed of the latency sample and the bootstrap (default 0)")
    run.add_argument("--resamples", type=int, help="bootstrap resamples (default 2000; >= 2000 recommended)")
    run.add_argument("--out", help="results directory (<timestamp>.json + latest.json)")
    base = run.add_mutually_exclusive_group()
    base.add_argument("--baseline", metavar="RESULTS.json", help="compare against a saved results file")
    base.add_argument("--baseline-model", metavar="M2", help="evaluate this model too, side by side")
    run.add_argument("--baseline-run", metavar="NAME", help="which run of a multi-run --baseline file")
    run.add_argument("--name", help="run name in the results (default: derived from --model)")
    run.add_argument("--baseline-name", help="name for the --baseline-model run")
    run.add_argument("--termination-log", metavar="PATH",
                     help="verdict JSON destination (default: $QURANFT_TERMINATION_LOG or /dev/termination-log)")
    run.add_argument("--no-also-accept", action="store_true", default=None,
                     help="score against expected_verses only (reproduces the team's old numbers)")
    run.add_argument("--tolerance", type=float, metavar="POINTS",
                     help="recall / sequence-accuracy drop (percentage points) that counts as a regression "
                          "(default 1)")
    run.add_argument("--min-gain", type=float, metavar="POINTS",
                     help="recall / sequence-accuracy rise (points) needed for an improvement (default 1)")
    run.add_argument("--latency-tolerance", type=float, metavar="FRACTION",
                     help="relative average-latency growth allowed (with --latency-tolerance-abs; default 0.10)")
    run.add_argument("--latency-tolerance-abs", type=float, metavar="SECONDS",
                     help="absolute average-latency growth always allowed (timer noise; default 0.05)")
    run.add_argument("--target-recall", type=float, help="recall target (default 0.95)")
    run.add_argument("--target-size-mb", type=float, help="model file size target (10^6 bytes; default 200)")
    run.add_argument("--target-latency", type=float, help="average latency target, seconds (default 1.0)")
    run.add_argument("--batch-size", type=int,
                     help="transcription batch size for the throughput pass (latency is timed at batch 1; "
                          "default 1 by hand, the operator sets 16 on a GPU, 4 on CPU)")
    run.add_argument("--device", help="auto (default) | cpu | cuda | cuda:N")

    score = sub.add_parser("score", help="re-score a results file from its per-sample expected/predicted")
    score.add_argument("file")
    score.add_argument("--json", action="store_true", help="print the re-scored runs in the input's shape")
    score.add_argument("--no-also-accept", action="store_true", help="ignore also_accept in the rows")

    cmp = sub.add_parser("compare", help="paired comparison and verdict of two results files (by sample id)")
    cmp.add_argument("results", metavar="RESULTS", help="results file holding the candidate run(s)")
    cmp.add_argument("baseline", metavar="BASELINE", help="results file holding the baseline run (old files too)")
    cmp.add_argument("--json", action="store_true", help="print the comparison as JSON")
    cmp.add_argument("--rule", choices=("paired", "threshold"), default="paired",
                     help="paired bootstrap intervals (default) or v1's thresholds on raw deltas")
    cmp.add_argument("--head", choices=("ctc", "rnnt"),
                     help="judge this decoder head only (default: every head of RESULTS; the verdict is the "
                          "head RESULTS was judged on, else ctc)")
    cmp.add_argument("--results-run", metavar="NAME", help="which run of a multi-run RESULTS file")
    cmp.add_argument("--baseline-run", metavar="NAME", help="which run of a multi-run BASELINE file")
    cmp.add_argument("--tolerance", type=float, default=1.0, metavar="POINTS",
                     help="recall / sequence-accuracy drop (points) that counts as a regression")
    cmp.add_argument("--min-gain", type=float, default=1.0, metavar="POINTS",
                     help="primary-metric rise (points) needed for an improvement")
    cmp.add_argument("--latency-tolerance", type=float, default=0.10, metavar="FRACTION")
    cmp.add_argument("--latency-tolerance-abs", type=float, default=0.05, metavar="SECONDS")
    cmp.add_argument("--primary", choices=("recall", "precision", "sequenceAccuracy"), default="recall")
    cmp.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    cmp.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    cmp.add_argument("--no-also-accept", action="store_true", help="re-score against expected verses only")

    camp = sub.add_parser("campaign-report",
                          help="rank a campaign's variants, write report.md + PNGs, promote the chosen variant")
    camp.add_argument("--input", required=True, metavar="FILE",
                      help="the campaign controller's JSON (campaign, promote, baseline, variants)")
    camp.add_argument("--workspace", default=layout.WORKSPACE, help="the claim's root (runs/, campaigns/, models/)")
    camp.add_argument("--termination-log", metavar="PATH",
                      help="summary JSON destination (default: $QURANFT_TERMINATION_LOG or /dev/termination-log)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "run" and not args.config:
            _require_flags(parser, args)
    except SystemExit as exc:  # argparse: --help exits 0, bad flags exit 2 (ConfigError by contract)
        code = int(exc.code or 0)
        if code and argv[:1] in (["run"], ["campaign-report"]):
            _fail(ConfigError("invalid command-line flags"), _termination_path_from(argv),
                  CAMPAIGN_STAGE if argv[:1] == ["campaign-report"] else STAGE)
        return code
    if args.command == "score":
        return _score(args)
    if args.command == "compare":
        return _compare(args)
    if args.command == "campaign-report":
        try:
            return _campaign_report(args)
        except Exception as exc:  # like `run`: a contract exit code plus a termination message
            return _fail(exc, args.termination_log, CAMPAIGN_STAGE)
    try:
        from .run_settings import from_args

        return _run(from_args(args))
    except Exception as exc:  # every failure ends as a contract exit code plus a termination message
        return _fail(exc, args.termination_log)


def _require_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Without --config the flags describe the whole run: the model, a corpus and where results go."""
    missing = [flag for flag, value in (("--model", args.model), ("--corpus or --corpus-spec",
                                                                    args.corpus or args.corpus_spec),
                                        ("--out", args.out)) if not value]
    if missing:
        parser.error(f"without --config, {', '.join(missing)} required")


def _termination_path_from(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--termination-log" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--termination-log="):
            return arg.split("=", 1)[1]
    return None


def _fail(exc: BaseException, termination_log: str | None, stage: str = STAGE) -> int:
    reason, code = classify(exc)
    print(f"{stage} failed ({reason}): {exc}", file=sys.stderr)
    try:
        write_termination_message(failure_summary(stage, exc), termination_log)
    except OSError as err:
        print(f"cannot write termination message: {err}", file=sys.stderr)
    return code


class CorpusMismatch(ConfigError):
    """A baseline results file scored on another corpus: comparing across corpora is meaningless."""

    failure_reason = "CorpusMismatch"


def _run(args: argparse.Namespace) -> int:
    """One benchmark run; `args` are the resolved settings (run_settings.resolve), one per flag."""
    # Imports here: `score` and `--help` must not load numpy-heavy modules or NeMo.
    from .corpus import CorpusError, corpus_hash, load_corpus
    from .matcher import VerseMatcher
    from .report import runs_table, verdict_lines
    from .results import write_results
    from .runner import RunOptions, decode_clips, default_run_name, latency_sample

    if args.baseline_run and not args.baseline:
        raise ConfigError("--baseline-run needs --baseline")
    tolerances = Tolerances(drop=args.tolerance / 100, min_gain=args.min_gain / 100,
                            latency_rel=args.latency_tolerance, latency_abs=args.latency_tolerance_abs)
    targets = Targets(recall=args.target_recall, model_size_bytes=int(args.target_size_mb * 1e6),
                      latency_seconds=args.target_latency)
    options = RunOptions(also_accept=not args.no_also_accept)

    corpus_dir, corpus_origin = _corpus_dir(args)
    try:
        corpus = load_corpus(corpus_dir)
    except CorpusError as exc:
        raise DataError(str(exc)) from exc
    if corpus.missing:
        print(f"benchmark: {len(corpus.missing)} sample(s) missing on disk, left out of the scores: "
              + ", ".join(s.id for s in corpus.missing), file=sys.stderr)
    if not corpus.samples:
        raise DataError(f"corpus {corpus_dir}: none of the {corpus.total} audio files is present")
    content_hash = corpus_hash(corpus)
    corpus_json = {"id": corpus.id, "path": str(corpus.root), "manifest_sha256": corpus.manifest_sha256,
                   "hash": content_hash, **corpus_origin}

    accept = {s.id: s.also_accept for s in corpus.samples + corpus.missing}
    baseline_file = _baseline_file_runs(args, options, accept, content_hash)  # before the long evaluation

    clips = decode_clips(corpus.samples)
    if all(c.error for c in clips):
        raise DataError(f"none of the {len(clips)} present audio files could be decoded "
                        f"(first error: {clips[0].error})")
    leaks = _leakage(args, clips)
    if leaks is not None and leaks.excluded:
        excluded = set(leaks.excluded)
        clips = [c for c in clips if c.sample.id not in excluded]
        print(f"benchmark: {len(excluded)} clip(s) are also in the training data; left out of the scores",
              file=sys.stderr)
        if not clips:
            raise DataError("every corpus clip is also in the training data: nothing left to judge on")
    corpus_json["clips"] = len(clips)
    latency_ids = latency_sample([c.sample.id for c in clips if c.error is None], args.latency_samples, args.seed)
    run_kwargs = dict(total=corpus.total, missing=corpus.missing, latency_ids=latency_ids)

    matcher = VerseMatcher()
    candidates, info = _evaluate_model(args.model, args.name or default_run_name(args.model), clips, matcher,
                                       options, args, heads=None, **run_kwargs)
    heads = list(candidates)
    verdict_head = args.verdict_head or _default_verdict_head(args.mode, info, heads)
    if verdict_head not in heads:
        raise ConfigError(f"--verdict-head {verdict_head} is not among the scored heads {heads}")
    if args.baseline_model:
        baselines, _ = _evaluate_model(args.baseline_model, args.baseline_name or default_run_name(args.baseline_model),
                                       clips, matcher, options, args, heads=heads, **run_kwargs)
        for run in baselines.values():
            run.update(role="baseline", corpus=corpus_json)
    else:
        baselines = _baseline_heads(baseline_file, args.baseline_run, heads, verdict_head)

    from .verdict import judge  # the paired (or threshold) comparison of every head

    judgement = judge({h: (candidates[h], baselines.get(h)) for h in heads}, verdict_head=verdict_head,
                      rule=args.verdict_rule, tolerances=tolerances, primary=args.primary_metric,
                      resamples=args.resamples, seed=args.seed)
    runs: list[dict[str, Any]] = []
    for h in heads:
        candidates[h].update(role="candidate", corpus=corpus_json)
        runs.append(candidates[h])
        if baselines.get(h) is not None:
            runs.append(baselines[h])
    extra = {"corpus": {"hash": content_hash, "clips": len(clips), "total": corpus.total,
                        **{k: corpus_origin[k] for k in ("reused", "bytesWritten", "specHash") if k in corpus_origin}},
             "artifact": _artifact(info),
             "throughput": _throughput(candidates[verdict_head])}
    if leaks is not None:
        extra["leakage"] = leaks.to_json()
        for run in runs:
            run.setdefault("leakage", extra["leakage"])
    # The verdict goes into the file too, so the file alone explains the decision.
    candidates[verdict_head]["verdict"] = judgement.for_results()
    path = write_results(args.out, runs)
    report_md, report_png = _write_report(path, judgement, runs, extra, targets)
    extra["reportPath"] = str(report_md)
    tracking = _track(path, [report_md, report_png], args.name)
    if tracking is not None:
        extra["tracking"] = tracking

    message = judgement.message(targets, str(path), extra)
    print(runs_table(runs))
    print(verdict_lines(message))
    print(f"results: {path}\nreport: {extra['reportPath']}")
    line = write_termination_message(message, args.termination_log)
    print(f"QURANFT_VERDICT {line}", file=sys.stderr)
    return EXIT_OK


def _corpus_dir(args: argparse.Namespace):
    """The corpus directory and where it came from; a dataset split is prepared (once) on the workspace."""
    from pathlib import Path

    from pydantic import ValidationError

    from .corpus_source import CorpusSpec, materialize

    if args.corpus:
        return Path(args.corpus), {}
    try:
        spec = CorpusSpec.model_validate(args.corpus_spec)
    except ValidationError as exc:
        raise ConfigError(f"benchmark.corpus (--corpus-spec): {exc}") from exc
    if spec.path:
        return Path(spec.path), {}
    prepared = materialize(spec, Path(args.workspace), log=lambda msg: print(msg, file=sys.stderr))
    return prepared.root, {"spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
                           **prepared.to_json()}


def _baseline_file_runs(args, options, accept, content_hash: str) -> list[dict[str, Any]] | None:
    from .results import ResultsError, load_runs, rescore_run, run_head

    if not args.baseline:
        return None
    try:
        runs, _ = load_runs(args.baseline)
    except ResultsError as exc:
        raise ConfigError(f"--baseline: {exc}") from exc
    for run in runs:
        other = (run.get("corpus") or {}).get("hash")
        if other and other != content_hash:
            raise CorpusMismatch(f"--baseline {args.baseline} was scored on corpus {other}, this corpus is "
                                 f"{content_hash}: comparing across corpora is meaningless; benchmark the "
                                 "baseline on this corpus (baseline: {baseModel: true}) instead")
    try:
        rescored = [rescore_run(r, options.also_accept, accept) for r in runs]
    except ResultsError as exc:
        raise ConfigError(f"--baseline: {exc}") from exc
    for run in rescored:
        run["source"] = args.baseline
    _baseline_heads(rescored, args.baseline_run, sorted({run_head(r) for r in rescored}), None)  # fail fast
    return rescored


def _baseline_heads(runs: list[dict[str, Any]] | None, name: str | None, heads: list[str],
                    verdict_head: str | None) -> dict[str, Any]:
    """The stored baseline run for each scored head (v1 files: CTC only); the verdict head must have one
    (None: at least one head must)."""
    from .results import ResultsError, pick_run

    if runs is None:
        return {}
    out: dict[str, Any] = {}
    for h in heads:
        try:
            out[h] = dict(pick_run(runs, name, h), role="baseline")  # the file's candidate is our baseline
        except ResultsError as exc:
            if h == verdict_head or (verdict_head is None and h == heads[-1] and not out):
                raise ConfigError(f"--baseline: {exc}") from exc
    return out


def _default_verdict_head(mode: str | None, info, heads: list[str]) -> str:
    from .transcribe import default_verdict_head

    head = default_verdict_head(mode, getattr(info, "saved_head", None))
    return head if head in heads else heads[0]


def _leakage(args: argparse.Namespace, clips):
    """Corpus clips also found in the run's prepared training/validation data (None: no data given)."""
    from pathlib import Path

    from .leakage import find_leaks, pcm_digest, training_index

    if not args.training_data:
        return None
    data_dir = Path(args.training_data)
    if not data_dir.is_dir():
        print(f"benchmark: no prepared data at {data_dir}; leakage not checked", file=sys.stderr)
        return None
    index = training_index(data_dir)
    return find_leaks([(c.sample, pcm_digest(c.audio)) for c in clips if c.audio is not None], index,
                      exclude_exact=not args.include_leaked)


def _artifact(info) -> dict[str, Any]:
    return {"bytes": info.size_bytes, "precision": getattr(info, "precision", None), "sha256": info.sha256}


def _throughput(run: dict[str, Any]) -> dict[str, Any]:
    t = run.get("throughput") or {}
    return {k: t.get(k) for k in ("clipsPerSecond", "rtfx", "batchSize", "matcherShare")}


def _write_report(results_path, judgement, runs, extra, targets):
    from .report_files import write_report

    return write_report(results_path.parent, judgement, runs, results_path.stem, extra=dict(extra),
                        targets=targets)


def _track(results_path, artifacts, name: str | None) -> dict[str, Any] | None:
    """The verdict and the report into the resource's MLflow run when MLFLOW_TRACKING_URI is set (tracking.py);
    never fails the benchmark."""
    from .tracking import log_benchmark

    return log_benchmark(results_path, artifacts, name=name, log=lambda msg: print(msg, file=sys.stderr))


def _evaluate_model(ref: str, name: str, clips, matcher, options, args: argparse.Namespace, *,
                    heads: list[str] | None, **run_kwargs: Any):
    """Runs of one model, one per decoder head ({head: run}), and the loaded model's info.

    `heads` None: the heads `--decoder` asks for (the candidate); else exactly these (the baseline, scored
    with the candidate's heads)."""
    from .report import Progress
    from .runner import evaluate
    from .transcribe import Transcriber, resolve_heads

    print(f"benchmark: loading {ref}", file=sys.stderr)
    model = Transcriber(ref, device=args.device, batch_size=args.batch_size)
    try:
        wanted = heads or resolve_heads(args.decoder, args.mode, model.heads, saved=model.saved_head)
        runs: dict[str, dict[str, Any]] = {}
        for head in wanted:
            model.use_head(head)  # ConfigError when the model has no such head
            progress = Progress(len(clips), f"{name}/{head}")
            try:
                runs[head] = evaluate(model, clips, matcher, name, options, progress, head=head, **run_kwargs)
            finally:
                progress.close()
        return runs, model.info
    finally:
        model.close()


def _score(args: argparse.Namespace) -> int:
    from .report import per_sample_table, runs_table
    from .results import ResultsError, load_runs, rescore_run

    try:
        runs, was_list = load_runs(args.file)
        rescored = [rescore_run(r, also_accept=not args.no_also_accept) for r in runs]
    except ResultsError as exc:
        print(f"benchmark score: {exc}", file=sys.stderr)
        return classify(ConfigError(str(exc)))[1]
    if args.json:
        print(json.dumps(rescored if was_list else rescored[0], ensure_ascii=False, indent=1))
        return EXIT_OK
    print(runs_table(rescored))
    for run in rescored:
        print(f"\n{run.get('name', '')}")
        print(per_sample_table(run))
    return EXIT_OK



def _compare(args: argparse.Namespace) -> int:
    """Both files re-scored by today's rules, paired by sample id, judged like `run` judges (exit 0)."""
    from .paired import PairingError
    from .report import comparison_table
    from .results import ResultsError, load_runs, pick_run, rescore_run, run_head
    from .verdict import judge

    try:
        if args.resamples < 1:
            raise ResultsError("--resamples must be >= 1")
        tolerances = Tolerances(drop=args.tolerance / 100, min_gain=args.min_gain / 100,
                                latency_rel=args.latency_tolerance, latency_abs=args.latency_tolerance_abs)
        results, _ = load_runs(args.results)
        baselines, _ = load_runs(args.baseline)
        pool = ([r for r in results if r.get("name") == args.results_run] if args.results_run
                else [r for r in results if r.get("role") == "candidate"] or results)
        heads = [args.head] if args.head else list(dict.fromkeys(run_head(r) for r in pool))
        pairs: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {}
        for head in heads:
            try:
                candidate = pick_run(results, args.results_run, head)
            except ResultsError as exc:
                raise ResultsError(f"RESULTS {args.results}: "
                                   + str(exc).replace("--baseline-run", "--results-run")) from exc
            base_heads = {run_head(r) for r in baselines}
            baseline = None
            if head in base_heads:
                try:
                    baseline = pick_run(baselines, args.baseline_run, head)
                except ResultsError as exc:
                    raise ResultsError(f"BASELINE {args.baseline}: {exc}") from exc
            also = not args.no_also_accept
            pairs[head] = (rescore_run(candidate, also), None if baseline is None else rescore_run(baseline, also))
        judged = [h for h in heads if pairs[h][1] is not None]
        if not judged:
            raise ResultsError(f"BASELINE {args.baseline} has no run for head(s) {heads}")
        recorded = next((r.get("verdict", {}).get("verdictHead") for r in pool
                         if isinstance(r.get("verdict"), dict)), None)
        verdict_head = next(h for h in (recorded, "ctc", *judged) if h in judged)
        judgement = judge({h: pairs[h] for h in judged}, verdict_head=verdict_head, rule=args.rule,
                          tolerances=tolerances, primary=args.primary, resamples=args.resamples, seed=args.seed)
    except ResultsError as exc:  # unreadable file, no such run, or no shared sample id (PairingError)
        if isinstance(exc, PairingError):
            exc = ResultsError(f"RESULTS {args.results} and BASELINE {args.baseline}: {exc}")
        print(f"benchmark compare: {exc}", file=sys.stderr)
        return classify(ConfigError(str(exc)))[1]
    if args.json:
        out = {"results": args.results, "baseline": args.baseline,
               "runs": {h: {"results": pairs[h][0].get("name"), "baseline": pairs[h][1].get("name")}
                        for h in judged},
               **judgement.for_results()}
        print(json.dumps(out, ensure_ascii=False, indent=1))
        return EXIT_OK
    print(comparison_table(judgement))
    return EXIT_OK


def _campaign_report(args: argparse.Namespace) -> int:
    """Rank the variants, promote the chosen one (if any), write report.md and the PNGs; the summary JSON is
    the last stdout line and the termination message."""
    from pathlib import Path

    from .campaign_plots import CURVES_PNG, METRICS_PNG, load_curve, render_curves_png, render_metrics_png, colours
    from .campaign_report import (CampaignInputError, build_row, format_table, load_input, rank,
                                  report_markdown, unknown_keys, warn)
    from .promotion import write_atomic

    try:
        campaign = load_input(args.input)
    except CampaignInputError as exc:
        raise ConfigError(str(exc)) from exc
    for key in unknown_keys(campaign):
        warn(f"input key {key} is not in the contract; ignored")
    workspace = Path(args.workspace)
    name = campaign.campaign.name
    out_dir = layout.campaign_dir(name, workspace)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [build_row(v, workspace) for v in campaign.variants]
    for row in rows:
        for note in row.notes:
            warn(f"{row.variant}: {note}")
    production = _promote(campaign, workspace) if campaign.promote else None
    ranked = rank(rows, production.variant if production else None)

    title = f"campaign {name}: " + (f"production {production.variant}" if production else "nothing promoted")
    inputs = {v.name: v for v in campaign.variants}
    curves = [load_curve(r.variant, r.child, workspace, inputs[r.variant].val_wer_history, r.phase) for r in ranked]
    plots = [out_dir / METRICS_PNG, out_dir / CURVES_PNG]
    write_atomic(plots[0], render_metrics_png(ranked, title))
    write_atomic(plots[1], render_curves_png(curves, colours([r.variant for r in ranked]), title))
    report = out_dir / "report.md"
    prod_json = production.to_json() if production else None
    write_atomic(report, report_markdown(campaign, ranked, [str(p) for p in plots], prod_json).encode())

    print(format_table(ranked))
    print(f"report: {report}")
    if production:
        print(f"production: {production.variant} -> {production.model_path}"
              + (" (already promoted: nothing changed)" if production.already_promoted else ""))
    summary = {"ok": True, "stage": CAMPAIGN_STAGE, "reportPath": str(report), "plots": [str(p) for p in plots],
               "production": prod_json}
    registry = _register(production, campaign, workspace) if production else None
    if registry is not None:
        summary["registry"] = registry
    line = write_termination_message(_fit_history(summary), args.termination_log)
    print(line)
    return EXIT_OK


def _promote(campaign, workspace):
    """The chosen variant's model made production, with its lineage (promotion.py, lineage.py)."""
    from .campaign_report import judged_run, resolve
    from .lineage import (LineageError, benchmarked_sha256, build_lineage, promotion_id,
                          read_training_metadata)
    from .promotion import promote
    from .results import ResultsError, load_runs

    v = campaign.variant(campaign.promote)
    missing = [k for k, value in (("child", v.child), ("modelPath", v.model_path),
                                  ("resultsPath", v.results_path)) if not value]
    if missing:
        raise ConfigError(f"promote names {v.name}, which has no {', '.join(missing)}: nothing to promote")
    model, results = resolve(v.model_path, workspace), resolve(v.results_path, workspace)
    try:
        judged = judged_run(load_runs(results)[0])
    except ResultsError as exc:
        raise DataError(f"cannot promote {v.name}: {exc}") from exc
    try:
        metadata = read_training_metadata(workspace, v.child)
    except LineageError as exc:
        raise DataError(f"cannot promote {v.name}: {exc}") from exc
    c = campaign.campaign
    pid = promotion_id(c.uid, c.name, v.name)

    def lineage(model_doc, promoted_at):
        return build_lineage(promotion=pid, promoted_at=promoted_at,
                             campaign=c.model_dump(by_alias=True, exclude_none=False), variant=v.name,
                             child=v.child, reason=campaign.promotion_reason, metadata=metadata,
                             judged_run=judged, results_path=str(results), model=model_doc, image_id=v.image_id,
                             baseline=campaign.baseline, corpus_hash=campaign.corpus_hash)

    return promote(workspace, c.name, variant=v.name, model_source=model, results_source=results, promotion=pid,
                   expected_sha256=benchmarked_sha256(judged, metadata), lineage=lineage)


def _register(production, campaign, workspace) -> dict[str, Any] | None:
    """The promoted model as the `production` version in the MLflow registry when MLFLOW_TRACKING_URI is set
    (registry.py); never fails the campaign report."""
    from .lineage import LineageError, read_training_metadata
    from .registry import register_promotion

    child = campaign.variant(production.variant).child
    try:
        run_id = ((read_training_metadata(workspace, child).get("tracking") or {}).get("runId")) if child else None
    except LineageError:
        run_id = None
    return register_promotion(production.model_path, production.lineage_path, production.results_path,
                              run_id=run_id, log=lambda msg: print(msg, file=sys.stderr))


def _fit_history(summary: dict[str, Any]) -> dict[str, Any]:
    """Under the 4 KB termination limit: the oldest history entries go first (counted in historyOmitted)."""
    from quranft.trainer.errors import MAX_TERMINATION_BYTES

    production = summary.get("production")

    def size() -> int:
        return len(json.dumps(summary, separators=(",", ":"), ensure_ascii=False).encode())

    while production and production["history"] and size() > MAX_TERMINATION_BYTES:
        production["history"].pop(0)
        production["historyOmitted"] = production.get("historyOmitted", 0) + 1
    return summary


__all__ = ["main", "build_parser"]
