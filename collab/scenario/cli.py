"""``collab scenario run FILE --out DIR [--policies ...]`` and ``collab scenario list``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from collab.errors import ConfigError


def scenarios_dir() -> Path:
    """The shipped scenarios (``<repo>/scenarios``)."""
    return Path(__file__).resolve().parents[2] / "scenarios"


def resolve(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = scenarios_dir() / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"scenario file not found: {name_or_path} (see `collab scenario list`)")


def print_result(report: dict[str, object], out: Path) -> None:
    from collab.scenario.report import markdown_table, summary_lines

    print()
    print(markdown_table(report))  # type: ignore[arg-type]
    for line in summary_lines(report):  # type: ignore[arg-type]
        print(line)
    print(f"\nreport: {out / 'report.md'} , {out / 'report.json'}")
    print(f"plots:  {out / 'latency_cdf.png'} , {out / 'timeline.png'} , {out / 'bytes.png'}")
    print(f"every request: {out / 'requests.jsonl'}")


def _run(args: argparse.Namespace) -> int:
    from collab.scenario.runner import run_scenario
    from collab.scenario.schema import load_scenario

    sc = load_scenario(resolve(args.file))
    pols = tuple(args.policies) if args.policies else None
    if pols:
        from dataclasses import replace

        from collab.scenario.schema import parse_policy

        for p in pols:
            parse_policy(p)
        sc = replace(sc, policies=pols)
    if args.seed is not None:
        from dataclasses import replace

        sc = replace(sc, seed=args.seed)
    out = Path(args.out)
    report = run_scenario(sc, out, progress=not args.no_progress)
    print_result(report, out)
    return 0


def _list(args: argparse.Namespace) -> int:
    from collab.scenario.schema import load_scenario

    for f in sorted(scenarios_dir().glob("*.yaml")):
        sc = load_scenario(f)
        print(f"{f.stem:<22} {sc.edge.count} edge(s), {sc.workload.requests * sc.edge.count} req x "
              f"{len(sc.policies)} policies, ~{sc.duration_s:.0f} s each  {sc.description.splitlines()[0] if sc.description else ''}")
    return 0


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run a scenario file (or a shipped scenario by name)")
    run.add_argument("file", help="scenario YAML file, or the name of a shipped scenario")
    run.add_argument("--out", required=True, help="directory for report.json/md, plots and records")
    run.add_argument("--policies", nargs="+", default=None,
                     help="override the file's policies (auto, edge_only, cloud_only, split:<name>)")
    run.add_argument("--seed", type=int, default=None, help="override the file's seed")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_parser("list", help="list the shipped scenarios")

    def handler(args: argparse.Namespace) -> int:
        return _run(args) if args.action == "run" else _list(args)

    return handler
