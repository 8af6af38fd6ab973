"""`quranft operator`: run the QuranFineTune controller."""
from __future__ import annotations

import argparse
import json
import logging
import os

from quranft.contract.keys import COMMAND_ANNOTATION

from .settings import settings_from_env


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quranft operator", description="Run the QuranFineTune controller (kopf).")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[],
                       help="Watch this namespace (repeatable; globs allowed). Default: all namespaces.")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="Watch all namespaces (default).")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (default 8080; 0 disables).")
    p.add_argument("--max-concurrent-trainings", type=int, help="Runs training at once, all namespaces (0: no limit).")
    p.add_argument("--max-gpus-per-namespace", type=int, help="GPUs held by runs per namespace (0: no limit).")
    p.add_argument("--image-tag", help="Tag of the default stage images.")
    p.add_argument("--gpu-image", help="Default trainer image for gpus > 0.")
    p.add_argument("--cpu-image", help="Default trainer image for gpus == 0.")
    p.add_argument("--progress-interval", type=float, help="Seconds between writes of status.progress (10).")
    p.add_argument("--progress-writes-per-second", type=float,
                   help="status.progress writes per second, all runs together (10; 0: no limit).")
    p.add_argument("--no-progress-push", dest="progress_push", action="store_false", default=None,
                   help="Serve no progress endpoint: read each training pod's log instead.")
    p.add_argument("--progress-port", type=int, help="HTTPS port of the progress endpoint (0: a free port).")
    p.add_argument("--progress-address", help="Address the progress endpoint binds (127.0.0.1).")
    p.add_argument("--progress-url", help="Base URL training pods push to (default https://127.0.0.1:<port>).")
    p.add_argument("--progress-cert-file", help="TLS certificate of the endpoint (default: self-signed).")
    p.add_argument("--progress-key-file", help="Its private key.")
    p.add_argument("--progress-ca-file", help="The CA the pods trust (default: the certificate).")
    p.add_argument("--progress-stale-seconds", type=float,
                   help="A training pod that pushed nothing this long has its log read instead (60).")
    p.add_argument("--termination-grace-seconds", type=int, help="Grace for a training pod to checkpoint.")
    p.add_argument("--image-pull-deadline-seconds", type=int,
                   help="Without spec.startupDeadlineSeconds: a failing image pull fails the run after this (600).")
    p.add_argument("--startup-deadline-seconds", type=int,
                   help="Without spec.startupDeadlineSeconds: other start-up waits fail the run after this (300); "
                        "an unschedulable pod (GPUs busy) waits indefinitely.")
    p.add_argument("--stage-command", action="append", default=[], metavar="STAGE=JSON",
                   help='Replace a stage command for all runs, e.g. train=\'["python","-c","..."]\' (tests).')
    p.add_argument("--allow-command-overrides", action="store_true", default=None,
                   help=f"Honour the {COMMAND_ANNOTATION} annotation (tests only).")
    p.add_argument("--liveness", default=None, help="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    p.add_argument("--verbose", "-v", action="store_true")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    commands = {}
    for item in args.stage_command:
        stage, _, raw = item.partition("=")
        commands[stage] = json.loads(raw)
    settings = settings_from_env(
        metrics_port=args.metrics_port, max_concurrent_trainings=args.max_concurrent_trainings,
        max_gpus_per_namespace=args.max_gpus_per_namespace, image_tag=args.image_tag, gpu_image=args.gpu_image,
        cpu_image=args.cpu_image, progress_interval=args.progress_interval,
        progress_writes_per_second=args.progress_writes_per_second, progress_push=args.progress_push,
        progress_port=args.progress_port, progress_address=args.progress_address, progress_url=args.progress_url,
        progress_cert_file=args.progress_cert_file, progress_key_file=args.progress_key_file,
        progress_ca_file=args.progress_ca_file, progress_stale_seconds=args.progress_stale_seconds,
        termination_grace_seconds=args.termination_grace_seconds,
        image_pull_deadline_seconds=args.image_pull_deadline_seconds,
        startup_deadline_seconds=args.startup_deadline_seconds,
        allow_command_overrides=args.allow_command_overrides,
        stage_commands=commands or None)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # kopf logs every timer pass per resource at INFO; transitions are Kubernetes Events already.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    import kopf

    from . import campaign_handlers, handlers  # noqa: F401  (register the kopf handlers of runs and campaigns)

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    from . import memstats, memtrace, tls_buffers

    memtrace.install_from_env()  # debug only: QURANFT_TRACEMALLOC=<file> (memtrace.py)
    memstats.install_from_env()  # debug only: QURANFT_MEMSTATS=<file> (memstats.py)
    tls_buffers.shrink()  # every TLS connection of kopf's loop: the API server's and the pods' pushes
    kopf.run(clusterwide=not args.namespace, namespaces=args.namespace, standalone=True,
             liveness_endpoint=args.liveness, memo=kopf.Memo(settings=settings))
    return 0
