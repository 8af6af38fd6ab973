"""The `quranft` command: one entry point that dispatches to each component's own CLI.

Sub-commands import their component lazily, so `quranft cluster ...` never imports torch.
"""
from __future__ import annotations

import importlib
import sys

# sub-command -> module exposing main(argv: list[str]) -> int
COMMANDS = {
    "trainer": ("quranft.trainer.cli", "prepare, train, doctor, tiny-model and synth-data"),
    "benchmark": ("quranft.benchmark.cli", "run the verse-recognition benchmark, re-score results"),
    "campaign": ("quranft.benchmark.campaign_show", "show a campaign's ranked variants (campaign show NAME)"),
    "cluster": ("quranft.cluster.cli", "embedded Kubernetes: up, down, status, env"),
    "operator": ("quranft.operator.cli", "run the QuranFineTune controller"),
    "demo": ("quranft.cluster.demo", "embedded cluster + operator + CPU-stub run to a verdict"),
}


def usage() -> str:
    lines = ["usage: quranft <command> [args...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"quranft: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
