"""`quranft trainer ...`: prepare, train, doctor, tiny-model, real-size-model, synth-data.

Every failure maps to an exit code and a one-line JSON summary on the termination-message path
(docs/contracts.md); heavy libraries are imported only inside the sub-command that needs them.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from quranft.contract.exits import PREEMPTED_REASON, ExitCode
from quranft.contract.summaries import FailureSummary, write_termination_message
from quranft.contract.config import ConfigError, load_config
from quranft.trainer.errors import FAILURES, classify, failure_summary

# How long a local rank > 0 that stops with an error waits for its pod's main process to exit first
# (quranft.trainer.distributed.wait_for_launcher_exit says why).
LAUNCHER_EXIT_WAIT_SECONDS = 30.0


def _log(msg: str) -> None:
    print(msg, flush=True)


class _Parser(argparse.ArgumentParser):
    # argparse exits 2 by itself; raising keeps the failure summary on the termination-log path too.
    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--termination-log", type=Path, default=None,
                        help="where the one-line JSON summary goes (default: $QURANFT_TERMINATION_LOG, "
                             "else /dev/termination-log when writable)")
    with_config = argparse.ArgumentParser(add_help=False)
    with_config.add_argument("--config", type=Path, default=None, help="run config JSON (docs/contracts.md)")
    with_config.add_argument("--set", dest="overrides", action="append", default=[], metavar="a.b=c",
                             help="override one config field (repeatable)")

    parser = _Parser(prog="quranft trainer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("prepare", parents=[common, with_config],
                   help="build NeMo manifests + 16 kHz WAVs in the workspace (cached by data hash)")
    sub.add_parser("train", parents=[common, with_config],
                   help="fine-tune on the prepared manifests; resumes from the run's last checkpoint")
    doctor = sub.add_parser("doctor", parents=[common, with_config],
                            help="report torch/CUDA/libnvvm; fails if the configured mode cannot run here")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument("--ptx", nargs="?", const="auto", choices=("auto", "nemo", "representative"),
                        help="also compile the RNNT loss kernels to PTX for sm_80/sm_90 (no GPU needed): NeMo's "
                             "own (nemo), a representative one, or NeMo's when installed (auto, the default)")
    tiny = sub.add_parser("tiny-model", parents=[common], help="write the untrained CPU-stub base model (.nemo)")
    tiny.add_argument("--out", type=Path, required=True)
    tiny.add_argument("--seed", type=int, default=1234)
    real = sub.add_parser("real-size-model", parents=[common],
                          help="write the production architecture (~115 M parameters) with random weights (.nemo)")
    real.add_argument("--out", type=Path, required=True)
    real.add_argument("--seed", type=int, default=1234)
    synth = sub.add_parser("synth-data", parents=[common],
                           help="synthesise Arabic recitations (espeak-ng): a local dataset + a benchmark corpus")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--surahs", default="1,112,113,114", help="comma-separated surah numbers")
    return parser


def _prepare(args) -> dict[str, Any]:
    from quranft.trainer.prepare import prepare

    return prepare(load_config(args.config, args.overrides), log=_log)


def _train(args) -> dict[str, Any] | None:
    from quranft.trainer.train import train

    return train(load_config(args.config, args.overrides), log=_log)


def _doctor(args) -> dict[str, Any]:
    from quranft.trainer.doctor import check_mode, report
    from quranft.trainer.errors import EnvironmentProblem

    cfg = load_config(args.config, args.overrides)

    def show(info: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(info, indent=1), flush=True)
        else:
            for key, value in info.items():
                print(f"{key:>14}: {value}", flush=True)

    try:
        info = report(ptx=args.ptx)
    except EnvironmentProblem as exc:  # the PTX check failed: still show what was found
        show(getattr(exc, "report", {}))
        raise
    show(info)
    check_mode(cfg.training.mode, info["cudaAvailable"])
    summary = {"ok": True, "stage": "doctor", "cudaAvailable": info["cudaAvailable"], "libnvvm": info["libnvvm"]}
    if args.ptx:
        summary["ptx"] = {arch: t["bytes"] for arch, t in info["ptx"]["targets"].items()}
    return summary


def _tiny(args) -> dict[str, Any]:
    from quranft.trainer.tiny import write_tiny_model

    result = write_tiny_model(args.out, seed=args.seed)
    _log(f"tiny-model: {result['parameters']:,} parameters, {result['sizeBytes']:,} bytes -> {result['path']}")
    return {"ok": True, "stage": "tiny-model", **result}


def _real_size(args) -> dict[str, Any]:
    from quranft.trainer.realsize import write_real_size_model

    result = write_real_size_model(args.out, seed=args.seed)
    _log(f"real-size-model: {result['parameters']:,} parameters, {result['sizeBytes']:,} bytes -> {result['path']}")
    return {"ok": True, "stage": "real-size-model", **{k: v for k, v in result.items() if k != "parameterGroups"}}


def _synth(args) -> dict[str, Any]:
    from quranft.trainer.synth import parse_surahs, write_synth_data

    return {"ok": True, "stage": "synth-data", **write_synth_data(args.out, parse_surahs(args.surahs), log=_log)}


COMMANDS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "prepare": _prepare, "train": _train, "doctor": _doctor, "tiny-model": _tiny, "real-size-model": _real_size,
    "synth-data": _synth,
}


def _termination_log_arg(argv: list[str]) -> Path | None:
    """The --termination-log value even when the rest of the command line does not parse."""
    for i, arg in enumerate(argv):
        if arg == "--termination-log" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--termination-log="):
            return Path(arg.split("=", 1)[1])
    return None


def _stop(code: int, summary: dict[str, Any], term_log: Path | None) -> int:
    """Write the failure summary and return `code`; a local rank > 0 (a launcher child) writes none, its pod's
    main process owns the termination message, and leaves only after that process has exited."""
    from quranft.trainer.distributed import is_launcher_child, wait_for_launcher_exit

    if not is_launcher_child():
        write_termination_message(summary, term_log)
    else:
        wait_for_launcher_exit(LAUNCHER_EXIT_WAIT_SECONDS)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        build_parser().print_help()
        return ExitCode.OK if argv else ExitCode.CONFIG_ERROR
    stage = argv[0] if argv[0] in COMMANDS else "trainer"
    term_log = _termination_log_arg(argv)
    try:
        args = build_parser().parse_args(argv)
        summary = COMMANDS[args.command](args)
    except SystemExit as exc:  # --help inside a sub-command
        return int(exc.code or 0)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes an exit code + summary
        from quranft.trainer.train import Preempted

        if isinstance(exc, Preempted):
            _log(f"{stage}: {exc}")
            # The Job's retry resumes from the checkpoint just saved.
            summary = FailureSummary(stage=stage, reason=PREEMPTED_REASON, message=str(exc)).wire()
            return _stop(ExitCode.PREEMPTED, summary, term_log)
        if isinstance(exc, KeyboardInterrupt):
            return 130
        reason, code = classify(exc)
        if not isinstance(exc, tuple(FAILURES)):
            traceback.print_exc()  # unexpected: keep the stack in the pod log
        print(f"{stage}: {reason}: {exc}", file=sys.stderr, flush=True)
        return _stop(code, failure_summary(stage, exc), term_log)
    if summary is None:  # a distributed rank other than 0: rank 0 writes the run's summary
        return ExitCode.OK
    line = write_termination_message(summary, term_log)
    _log(line)
    return ExitCode.OK
