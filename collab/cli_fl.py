"""`collab fl ...`: run a local federation, or one role of a real fleet.

  collab fl run --config FILE            aggregator + N client processes + key holder
  collab fl run --config FILE --in-process   the same protocol in one process (many clients)
  collab fl keygen --config FILE --out DIR   per-federation CKKS keys (key holder)
  collab fl aggregator --config FILE --broker URL --listen HOST:PORT [--public-context F]
                        [--tls-cert F --tls-key F --tls-client-ca F | --insecure]
  collab fl client --config FILE --broker URL --index K [--secret-context F]
                    [--tls-ca F --tls-cert F --tls-key F]

It fronts collab.fl and both fleet roles (coordinator.fl_server, edge_node.fl_client),
so it sits above them, next to :mod:`collab.cli`, rather than inside collab.fl.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from collab.errors import ConfigError
from collab.fl.endpoint import AggregatorEndpoint, ParticipantTls
from collab.settings import add_flags, from_args, settings

_ENDPOINT = settings(AggregatorEndpoint)
_PARTICIPANT_TLS = settings(ParticipantTls)

INSECURE_HELP = (
    "seed DP noise and client sampling from the config's seed (config field "
    "insecure_deterministic): reproducible research runs with NO privacy guarantee"
)


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    from collab.control.mqtt import add_mqtt_args

    sub = parser.add_subparsers(dest="fl_command", required=True)
    run = sub.add_parser(
        "run", help="local federation: aggregator + N simulated clients as processes"
    )
    run.add_argument("--config", type=Path, required=True, help="YAML config (see docs/fl.md)")
    run.add_argument("--broker", default=None, help="use this broker instead of starting Mosquitto")
    run.add_argument("--out", default=None, help="output directory (overrides config 'out')")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument(
        "--in-process",
        action="store_true",
        help="run the same protocol in this one process (no broker/network): many simulated clients",
    )
    run.add_argument("--insecure-deterministic", action="store_true", help=INSECURE_HELP)

    kg = sub.add_parser("keygen", help="generate a federation's CKKS keys (key holder only)")
    kg.add_argument("--config", type=Path, required=True)
    kg.add_argument(
        "--out", type=Path, required=True, help="writes secret.ctx (0600) and public.ctx"
    )

    ag = sub.add_parser(
        "aggregator", help="run the aggregator role (holds the PUBLIC context only)"
    )
    ag.add_argument("--config", type=Path, required=True)
    add_flags(ag.add_argument_group("gRPC endpoint (TLS, limits)"), _ENDPOINT)
    ag.add_argument(
        "--mode",
        default=None,
        help="pick one of the config's modes (federation gets a -MODE suffix)",
    )
    ag.add_argument(
        "--public-context", type=Path, default=None, help="public.ctx from keygen (HE modes)"
    )
    ag.add_argument(
        "--wait-clients", type=float, default=60.0, help="seconds to wait for the roster"
    )
    ag.add_argument("--exit-when-done", action="store_true")
    ag.add_argument("--insecure-deterministic", action="store_true", help=INSECURE_HELP)
    add_mqtt_args(ag, broker_required=True)

    cl = sub.add_parser("client", help="run the client role (trains on local data when sampled)")
    cl.add_argument("--config", type=Path, required=True)
    cl.add_argument(
        "--index",
        type=_indices,
        required=True,
        help="Dirichlet shard(s) of the digits set: K, K,L,... or K-L (several = forked processes)",
    )
    cl.add_argument("--client-id", default="")
    cl.add_argument(
        "--mode", default=None, help="pick one of the config's modes (as the aggregator does)"
    )
    cl.add_argument("--secret-context", type=Path, default=None, help="secret.ctx (HE modes)")
    cl.add_argument("--compression", choices=["", "zstd"], default="")
    cl.add_argument("--insecure-deterministic", action="store_true", help=INSECURE_HELP)
    add_flags(cl.add_argument_group("gRPC to the aggregator (TLS)"), _PARTICIPANT_TLS)
    add_mqtt_args(cl, broker_required=True)
    return _handle


def _load(path: Path, insecure_deterministic: bool):  # type: ignore[no-untyped-def]
    """The config, with ``--insecure-deterministic`` switching its field on (never off)."""
    import dataclasses

    from collab.fl.config import load_config

    cfg = load_config(path)
    if insecure_deterministic:
        cfg = dataclasses.replace(cfg, insecure_deterministic=True)
    return cfg


def _mode_config(path: Path, mode: str | None, insecure_deterministic: bool):  # type: ignore[no-untyped-def]
    cfg = _load(path, insecure_deterministic)
    if mode is not None:
        if mode not in cfg.modes:
            raise ConfigError(f"--mode {mode!r} is not one of the config's modes {cfg.modes}")
        return cfg.for_mode(mode)
    if len(cfg.modes) != 1:
        raise ConfigError(
            f"{path}: a fleet role runs exactly one mode, config lists {cfg.modes} (use --mode)"
        )
    return cfg


def _handle(args: argparse.Namespace) -> int:
    import dataclasses

    from collab.fl.config import load_config

    if args.fl_command == "run":
        # fail on a bad config before importing torch or starting anything
        cfg = _load(args.config, args.insecure_deterministic)
        cfg = dataclasses.replace(cfg, broker=args.broker or cfg.broker, out=args.out or cfg.out)
        from collab.fl.local import run_local

        results = run_local(cfg, progress=not args.no_progress, in_process=args.in_process)
        for mode, pts in results.items():
            if not pts:
                print(f"{mode:>6}: no round aggregated")
                continue
            best = max(p.accuracy for p in pts)
            hit = next((p.round for p in pts if p.accuracy >= 0.95), None)
            eps = pts[-1].epsilon
            print(
                f"{mode:>6}: final acc {pts[-1].accuracy:.4f}  best {best:.4f}  rounds to 95%: {hit}  "
                f"epsilon: {'-' if eps is None else f'{eps:.3f}'}"
                + (f"  [{cfg.privacy_note}]" if cfg.privacy_note else "")
            )
        print(f"plot: {Path(cfg.out) / 'accuracy.png'}")
        return 0
    if args.fl_command == "keygen":
        from collab.fl import he

        cfg = load_config(args.config)
        sec, pub = he.write_keys(he.generate_keys(cfg.he.params()), args.out)
        print(
            f"secret context (keep on key holder / clients only): {sec}\npublic context (aggregator): {pub}"
        )
        return 0
    from collab.control.mqtt import mqtt_config_from_args

    if args.fl_command == "aggregator":
        endpoint = AggregatorEndpoint(**from_args(args, _ENDPOINT))  # refuse before loading
    else:
        tls = ParticipantTls(**from_args(args, _PARTICIPANT_TLS))
    cfg = _mode_config(args.config, args.mode, args.insecure_deterministic)
    mqtt = mqtt_config_from_args(args)
    if args.fl_command == "aggregator":
        from coordinator.fl_server import run_aggregator

        return run_aggregator(
            cfg,
            mqtt=mqtt,
            endpoint=endpoint,
            public_context=args.public_context,
            wait_clients_s=args.wait_clients,
            exit_when_done=args.exit_when_done,
        )
    if len(args.index) == 1 or args.client_id:
        from edge_node.fl_client import run_client

        return run_client(
            cfg,
            index=args.index[0],
            mqtt=mqtt,
            client_id=args.client_id,
            secret_context=args.secret_context,
            compression=args.compression,
            tls=tls,
        )
    from edge_node.fl_client import run_clients

    return run_clients(
        cfg,
        indices=args.index,
        mqtt=mqtt,
        secret_context=args.secret_context,
        compression=args.compression,
        tls=tls,
    )


def _indices(text: str) -> list[int]:
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad index list {text!r}: use K, K,L or K-L") from None
    if not out or min(out) < 0 or len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"bad index list {text!r}")
    return out
