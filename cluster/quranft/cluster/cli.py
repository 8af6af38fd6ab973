"""`quranft cluster up|down|status|env`: the embedded Kubernetes cluster from the command line.

`up --with kueue|mlflow` also starts the add-on (quranft.cluster.kueue, quranft.cluster.mlflow_addon) once the
cluster is ready; `down` stops add-ons before the control plane; `env` also exports MLFLOW_TRACKING_URI while the
tracking server runs."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import controlplane
from .nodeconfig import default_nodes

ADDONS = ("kueue", "mlflow")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quranft cluster",
                                     description="Embedded Kubernetes: a real control plane and a process node agent.")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="state directory (default: $QURANFT_CLUSTER_DIR or ~/.cache/quranft/cluster)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster (idempotent); returns when it is ready")
    up.add_argument("--nodes", type=int, default=None, help="number of nodes (default 1, env QURANFT_NODES)")
    up.add_argument("--cpu", default=None, help="cpu capacity per node (default 8, env QURANFT_NODE_CPU)")
    up.add_argument("--memory", default=None, help="memory per node (default 32Gi, env QURANFT_NODE_MEMORY)")
    up.add_argument("--gpus", type=int, default=None,
                    help="nvidia.com/gpu advertised per node (default 2, env QURANFT_NODE_GPUS)")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    up.add_argument("--with", dest="addons", action="append", choices=ADDONS, default=[],
                    help="also start an add-on (repeatable): kueue = Kueue's controller manager with its "
                         "CRDs and webhooks (built from its Go module on first use); mlflow = an MLflow "
                         "tracking server on loopback (its own venv, built on first use)")
    sub.add_parser("down", help="stop everything the cluster started")
    sub.add_parser("status", help="print component and node status as JSON")
    sub.add_parser("env", help='print export lines: eval "$(quranft cluster env)"')
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731 - stdout stays machine-readable
    if args.command == "up":
        nodes = default_nodes(args.nodes, args.cpu, args.memory, args.gpus)
        try:
            cluster = controlplane.up(args.state_dir, nodes, timeout=args.timeout, log=log)
            if "kueue" in args.addons:
                from . import kueue

                kueue.start(cluster, timeout=args.timeout, log=log)
            tracking = None
            if "mlflow" in args.addons:
                from . import mlflow_addon

                tracking = mlflow_addon.start(cluster.state_dir, timeout=args.timeout, log=log)
        except (controlplane.ClusterError, RuntimeError) as err:
            print(f"quranft cluster up: {err}", file=sys.stderr)
            return 1
        print(f"KUBECONFIG={cluster.kubeconfig}")
        if tracking:
            print(f"MLFLOW_TRACKING_URI={tracking.uri}")
        return 0
    if args.command == "down":
        from . import kueue, mlflow_addon

        root = args.state_dir or controlplane.default_state_dir()
        kueue.stop(root, log=log)
        mlflow_addon.stop(root, log=log, wipe=True)  # its runs describe objects that go with etcd
        controlplane.down(args.state_dir, log=log)
        return 0
    if args.command == "status":
        status = controlplane.status(args.state_dir)
        status["addons"] = _addons(args.state_dir)
        print(json.dumps(status, indent=2))
        return 0 if status["ready"] else 1
    cluster = controlplane.attach(args.state_dir)
    if cluster is None:
        print("quranft cluster env: no running cluster; run `quranft cluster up`", file=sys.stderr)
        return 1
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    print(f'export PATH={cluster.bin_dir}:$PATH')
    from . import mlflow_addon

    tracking = mlflow_addon.attach(cluster.state_dir)
    if tracking:
        print(f"export MLFLOW_TRACKING_URI={tracking.uri}")
    return 0


def _addons(state_dir: Path | None) -> dict:
    """Which add-ons run on the cluster (their own health checks)."""
    from . import kueue, mlflow_addon

    cluster = controlplane.attach(state_dir)
    tracking = mlflow_addon.attach(state_dir or controlplane.default_state_dir())
    return {"kueue": cluster is not None and kueue.attach(cluster) is not None,
            "mlflow": tracking.uri if tracking else False}
