"""``collab export-triton BUNDLE OUT``: a Triton model repository for the cloud side
(the tails and the full model) of a bundle; see :mod:`cloud_node.triton`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from cloud_node.triton import export
from collab.bundle import load_bundle

# the cloud node's defaults: 16 samples a batch, 2 ms (cloud_node.config)
_MAX_BATCH = 16
_DELAY_US = 2000


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle directory")
    parser.add_argument("out", type=Path, metavar="OUT", help="repository to write (new or empty)")
    parser.add_argument(
        "--max-batch-size", type=int, default=_MAX_BATCH, metavar="N", help="samples per batch"
    )
    parser.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=_DELAY_US,
        metavar="US",
        help="longest a request waits for its batch to fill",
    )
    return run


def run(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle)
    names = export(
        bundle,
        args.out,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
    )
    print(f"collab export-triton: {len(names)} models in {args.out}: {', '.join(names)}")
    return 0
