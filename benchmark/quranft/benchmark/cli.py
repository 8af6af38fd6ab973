"""`quranft benchmark run ...`, `quranft benchmark score FILE [--json]` and
`quranft benchmark compare RESULTS BASELINE [--json]`.

Exit codes and the termination message follow docs/contracts.md: 0 ok (whatever the verdict),
2 ConfigError, 3 DataError, 4 BenchmarkError (TrainingError), 5 EnvironmentError.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from quranft.trainer.config import ConfigError
from quranft.trainer.errors import (
    EXIT_OK,
    DataError,
    classify,
    failure_summary,
    write_termination_message,
)

from .verdict import Targets, Tolerances

STAGE = "benchmark"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quranft benchmark", description="Quran verse-recognition benchmark.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="evaluate a model (and optionally a baseline) over a corpus")
    run.add_argument("--model", required=True, help="path to a .nemo file, or a hub name (org/model)")
    run.add_argument("--corpus", required=True, help="directory holding manifest.json and the audio files")
    run.add_argument("--out", required=True, help="results directory (<timestamp>.json + latest.json)")
    base = run.add_mutually_exclusive_group()
    base.add_argument("--baseline", metavar="RESULTS.json", help="compare against a saved results file")
    base.add_argument("--baseline-model", metavar="M2", help="evaluate this model too, side by side")
    run.add_argument("--baseline-run", metavar="NAME", help="which run of a multi-run --baseline file")
    run.add_argument("--name", help="run name in the results (default: derived from --model)")
    run.add_argument("--baseline-name", help="name for the --baseline-model run")
    run.add_argument("--termination-log", metavar="PATH",
                     help="verdict JSON destination (default: $QURANFT_TERMINATION_LOG or /dev/termination-log)")
    run.add_argument("--no-also-accept", action="store_true",
                     help="score against expected_verses only (reproduces the team's old numbers)")
    run.add_argument("--tolerance", type=float, default=1.0, metavar="POINTS",
                     help="recall / sequence-accuracy drop (percentage points) that counts as a regression")
    run.add_argument("--min-gain", type=float, default=1.0, metavar="POINTS",
                     help="recall / sequence-accuracy rise (points) needed for an improvement")
    run.add_argument("--latency-tolerance", type=float, default=0.10, metavar="FRACTION",
                     help="relative average-latency growth allowed (with --latency-tolerance-abs)")
    run.add_argument("--latency-tolerance-abs", type=float, default=0.05, metavar="SECONDS",
                     help="absolute average-latency growth always allowed (timer noise)")
    run.add_argument("--target-recall", type=float, default=0.95)
    run.add_argument("--target-size-mb", type=float, default=200.0, help="model file size target (10^6 bytes)")
    run.add_argument("--target-latency", type=float, default=1.0, help="average latency target, seconds")
    run.add_argument("--batch-size", type=int, default=1,
                     help="transcription batch size (latency = batch time / batch size)")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")

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
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help exits 0, bad flags exit 2 (ConfigError by contract)
        code = int(exc.code or 0)
        if code and argv[:1] == ["run"]:
            _fail(ConfigError("invalid command-line flags"), _termination_path_from(argv))
        return code
    if args.command == "score":
        return _score(args)
    if args.command == "compare":
        return _compare(args)
    try:
        return _run(args)
    except Exception as exc:  # every failure ends as a contract exit code plus a termination message
        return _fail(exc, args.termination_log)


def _termination_path_from(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--termination-log" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--termination-log="):
            return arg.split("=", 1)[1]
    return None


def _fail(exc: BaseException, termination_log: str | None) -> int:
    reason, code = classify(exc)
    print(f"benchmark failed ({reason}): {exc}", file=sys.stderr)
    try:
        write_termination_message(failure_summary(STAGE, exc), termination_log)
    except OSError as err:
        print(f"cannot write termination message: {err}", file=sys.stderr)
    return code


def _run(args: argparse.Namespace) -> int:
    # Imports here: `score` and `--help` must not load numpy-heavy modules or NeMo.
    from .corpus import CorpusError, load_corpus
    from .matcher import VerseMatcher
    from .report import runs_table, verdict_lines
    from .results import ResultsError, load_runs, pick_run, rescore_run, write_results
    from .runner import RunOptions, default_run_name
    from .verdict import metrics_from_run, verdict_message

    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if args.baseline_run and not args.baseline:
        raise ConfigError("--baseline-run needs --baseline")
    tolerances = Tolerances(drop=args.tolerance / 100, min_gain=args.min_gain / 100,
                            latency_rel=args.latency_tolerance, latency_abs=args.latency_tolerance_abs)
    targets = Targets(recall=args.target_recall, model_size_bytes=int(args.target_size_mb * 1e6),
                      latency_seconds=args.target_latency)
    options = RunOptions(also_accept=not args.no_also_accept)

    try:
        corpus = load_corpus(args.corpus)
    except CorpusError as exc:
        raise DataError(str(exc)) from exc
    if corpus.missing:
        print(f"benchmark: {len(corpus.missing)} sample(s) missing on disk, left out of the scores: "
              + ", ".join(s.id for s in corpus.missing), file=sys.stderr)
    if not corpus.samples:
        raise DataError(f"corpus {args.corpus}: none of the {corpus.total} audio files is present")

    baseline_run: dict[str, Any] | None = None
    if args.baseline:  # read before the (long) evaluation so a bad file fails fast
        try:
            runs, _ = load_runs(args.baseline)
            accept = {s.id: s.also_accept for s in corpus.samples + corpus.missing}
            baseline_run = rescore_run(pick_run(runs, args.baseline_run), options.also_accept, accept)
        except ResultsError as exc:
            raise ConfigError(f"--baseline: {exc}") from exc
        baseline_run.update(role="baseline", source=args.baseline)

    matcher = VerseMatcher()
    candidate = _evaluate_model(args.model, args.name or default_run_name(args.model), corpus, matcher,
                                options, args)
    candidate["role"] = "candidate"
    if candidate["errors"] == candidate["scored"]:
        raise DataError(f"none of the {candidate['scored']} present audio files could be decoded "
                        f"(first error: {candidate['per_sample'][0].get('error')})")
    if args.baseline_model:
        baseline_run = _evaluate_model(args.baseline_model,
                                       args.baseline_name or default_run_name(args.baseline_model),
                                       corpus, matcher, options, args)
        baseline_run["role"] = "baseline"

    metrics = metrics_from_run(candidate)
    base_metrics = metrics_from_run(baseline_run) if baseline_run is not None else None
    # The verdict goes into the file too, so the file alone explains the decision.
    provisional = verdict_message(metrics, base_metrics, tolerances, targets, "")
    candidate["verdict"] = {k: provisional[k] for k in ("verdict", "deltas", "targets")}
    candidate["verdict"]["tolerances"] = asdict(tolerances)
    runs = [candidate] + ([baseline_run] if baseline_run is not None else [])
    path = write_results(args.out, runs)

    message = verdict_message(metrics, base_metrics, tolerances, targets, str(path))
    print(runs_table(runs))
    print(verdict_lines(message))
    print(f"results: {path}")
    line = write_termination_message(message, args.termination_log)
    print(f"QURANFT_VERDICT {line}", file=sys.stderr)
    return EXIT_OK


def _evaluate_model(ref: str, name: str, corpus, matcher, options, args: argparse.Namespace) -> dict[str, Any]:
    from .report import Progress
    from .runner import evaluate
    from .transcribe import Transcriber

    print(f"benchmark: loading {ref}", file=sys.stderr)
    model = Transcriber(ref, device=args.device, batch_size=args.batch_size)
    progress = Progress(len(corpus.samples), name)
    try:
        return evaluate(model, corpus, matcher, name, options, progress)
    finally:
        progress.close()
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


__all__ = ["main", "build_parser"]
