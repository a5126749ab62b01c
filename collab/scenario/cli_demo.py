"""``collab demo``: the README's main command — one scenario, about a minute, no setup."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from collab.scenario.cli import add_no_fail
from collab.signals import terminate_as_interrupt

DEMO = "demo"


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument(
        "--out", default="runs/demo", help="output directory (default: ./runs/demo)"
    )
    parser.add_argument(
        "--scenario", default=DEMO, help="shipped scenario name or YAML file (default: demo)"
    )
    add_no_fail(parser)

    def handler(args: argparse.Namespace) -> int:
        from collab.scenario.cli import exit_code, print_result, resolve
        from collab.scenario.runner import run_scenario
        from collab.scenario.schema import load_scenario

        sc = load_scenario(resolve(args.scenario))
        out = Path(args.out).resolve()
        print(f"edgecollab demo: scenario '{sc.name}' — {sc.description.strip()}")
        print(
            f"({len(sc.policies)} policies x {sc.duration_s:.0f} s through the link emulator; "
            "the first run also builds and calibrates the example bundle)"
        )
        with terminate_as_interrupt():
            report = run_scenario(sc, out)
        print_result(report, out)
        return exit_code(report, no_fail=args.no_fail)

    return handler
