"""The ``collab`` console script: one subcommand per job.

Subcommand modules are imported lazily, so ``collab edge`` never imports torch.
Each module named in :data:`COMMANDS` exposes ``configure(parser) -> handler`` where
``handler(args) -> int`` is the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from collab.errors import CollabError
from collab.extras import extra_for
from collab.log import logger, setup_logging

# name -> (module, one-line help). The module's configure() adds the flags.
COMMANDS: dict[str, tuple[str, str]] = {
    "split": ("collab.split.cli_split", "split a PyTorch model into head/tail ONNX bundles"),
    "inspect": ("collab.split.cli_inspect", "print the split table of a bundle"),
    "train-example": (
        "collab.models.cli_train",
        "train an example model (digits CNN) and save weights",
    ),
    "calibrate": (
        "collab.codec.cli_calibrate",
        "measure every split point x codec on sample inputs",
    ),
    "cloud": ("cloud_node.cli", "run a cloud node (gRPC decoder service)"),
    "export-triton": (
        "cloud_node.cli_triton",
        "write a Triton model repository for a bundle's tails and full model",
    ),
    "edge": ("edge_node.cli", "run an edge node daemon"),
    "coordinator": ("coordinator.cli", "run the fleet coordinator (MQTT control plane)"),
    "status": ("coordinator.cli_status", "print the fleet table"),
    "rollout": (
        "coordinator.cli_rollout",
        "publish (at once, staged, or as a canary judged by a significance test), inspect or roll back a model rollout",
    ),
    "mqtt-auth": ("coordinator.cli_auth", "write a Mosquitto password file + ACL for a fleet"),
    "fl": ("collab.cli_fl", "federated learning: run a local federation or a fleet round"),
    "scenario": ("collab.scenario.cli", "run simulated network scenarios"),
    "demo": ("collab.scenario.cli_demo", "run the default demo scenario"),
    "optimize": ("collab.optimize.cli", "INT8 / pruning / distillation variants per device tier"),
    "bottleneck": (
        "collab.optimize.cli_bottleneck",
        "train a learned bottleneck or an early exit at a cut and add it to a bundle",
    ),
    "deploy": ("collab.deploy.cli", "render Kubernetes/KubeEdge manifests from a values file"),
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


# commands whose optional libraries come with one extra (else: the missing module's extra)
COMMAND_EXTRA: dict[str, str] = {
    "split": "split",
    "train-example": "split",
    "calibrate": "scenario",
    "fl": "fl",
    "scenario": "scenario",
    "demo": "scenario",
}


def _missing_extra(command: str, e: ImportError) -> int:
    """One line naming the extra to install (exit 2); unknown import errors propagate."""
    err = extra_for(e)
    if err is None:
        raise e
    extra = COMMAND_EXTRA.get(command)
    if extra is None:
        print(f"collab {command}: {err}", file=sys.stderr)
    else:
        print(
            f"collab {command}: needs the '{extra}' extra ({err.module!r} is not installed): "
            f"pip install 'edgecollab[{extra}]'",
            file=sys.stderr,
        )
    return 2


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
    # "@FILE" reads arguments from FILE, one per line: how a Kubernetes ConfigMap configures
    # a daemon (collab.deploy.render)
    parser = argparse.ArgumentParser(
        prog=f"collab {ns.command}", description=help_, fromfile_prefix_chars="@"
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ...")
    try:
        handler: Handler = importlib.import_module(module).configure(parser)
    except ImportError as e:
        return _missing_extra(ns.command, e)
    args = parser.parse_args(rest)
    setup_logging(args.log_level or ns.log_level)
    try:
        return int(handler(args) or 0)
    except ImportError as e:  # a lazily imported part of the command
        return _missing_extra(ns.command, e)
    except CollabError as e:
        logger.debug("command failed", exc_info=True)
        print(f"collab {ns.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `collab ... | head`: the reader left, which is not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
