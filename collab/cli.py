"""The ``collab`` console script: one subcommand per job.

Subcommand modules are imported lazily, so ``collab edge`` never imports torch.
Each module named in :data:`COMMANDS` exposes ``configure(parser) -> handler`` where
``handler(args) -> int`` is the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from collab.errors import CollabError
from collab.log import logger, setup_logging

# name -> (module, one-line help). The module's configure() adds the flags.
COMMANDS: dict[str, tuple[str, str]] = {
    "split": ("collab.split.cli_split", "split a PyTorch model into head/tail ONNX bundles"),
    "inspect": ("collab.split.cli_inspect", "print the split table of a bundle"),
    "train-example": ("collab.models.cli_train", "train an example model (digits CNN) and save weights"),
    "calibrate": ("collab.codec.cli_calibrate", "measure every split point x codec on sample inputs"),
    "cloud": ("cloud_node.cli", "run a cloud node (gRPC decoder service)"),
    "edge": ("edge_node.cli", "run an edge node daemon"),
    "coordinator": ("coordinator.cli", "run the fleet coordinator (MQTT control plane)"),
    "status": ("coordinator.cli_status", "print the fleet table"),
    "rollout": ("coordinator.cli_rollout", "publish, inspect or roll back a model rollout"),
    "mqtt-auth": ("coordinator.cli_auth", "write a Mosquitto password file + ACL for a fleet"),
    "fl": ("collab.fl.cli", "federated learning: run a local federation or a fleet round"),
    "scenario": ("collab.scenario.cli", "run simulated network scenarios"),
    "demo": ("collab.scenario.cli_demo", "run the default demo scenario"),
    "optimize": ("collab.optimize.cli", "INT8 / pruning / distillation variants per device tier"),
}

Handler = Callable[[argparse.Namespace], int]


def _top_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="collab",
        description="edgecollab: edge-cloud collaborative inference.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {n:<14} {h}" for n, (_, h) in COMMANDS.items()),
    )
    ap.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ...")
    ap.add_argument("command", nargs="?", choices=sorted(COMMANDS), metavar="COMMAND")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    # Global options may precede the command: everything up to the first bare word.
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] == "--log-level" else 1
    ns = top.parse_args(argv[: i + 1])
    if ns.command is None:
        top.print_help()
        return 0
    rest = argv[i + 1 :]
    module, help_ = COMMANDS[ns.command]
    parser = argparse.ArgumentParser(prog=f"collab {ns.command}", description=help_)
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ...")
    try:
        configure = importlib.import_module(module).configure
    except ModuleNotFoundError as e:
        print(f"collab {ns.command}: not available in this installation ({e})", file=sys.stderr)
        return 2
    handler: Handler = configure(parser)
    args = parser.parse_args(rest)
    setup_logging(args.log_level or ns.log_level)
    try:
        return int(handler(args) or 0)
    except CollabError as e:
        logger.debug("command failed", exc_info=True)
        print(f"collab {ns.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
