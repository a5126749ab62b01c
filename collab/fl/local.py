"""`collab fl run`: a local federation of real processes (aggregator + N clients) over a
real broker, with this process acting as KEY HOLDER and evaluator: it generates the
per-federation keys, hands the public context to the aggregator only, follows the
published model versions, decrypts the aggregates and measures test accuracy."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from tqdm import tqdm

from collab.control import topics
from collab.control.messages import MalformedMessage
from collab.control.mqtt import MqttClient, MqttConfig
from collab.errors import FLError, PrivacyBudgetExceeded
from collab.fl import he
from collab.fl import messages as msg
from collab.fl.config import FLConfig, config_to_dict
from collab.fl.data import test_data
from collab.fl.member import ModelHolder
from collab.fl.participant import AggregatorStub, catch_up
from collab.log import logger
from collab.procs import collab_process, free_port, mosquitto


@dataclass(frozen=True, kw_only=True)
class RoundPoint:
    round: int
    accuracy: float
    epsilon: float | None
    reporters: int
    sampled: int
    seconds: float
    #: FLConfig.privacy_note of the run ("no privacy guarantee ..." when insecure deterministic)
    privacy: str = ""
    #: seconds since start when the round's model announcement arrived (before the key
    #: holder's own decrypt/evaluate): consecutive differences are real round times
    published_s: float = 0.0


@contextlib.contextmanager
def _broker(url: str | None) -> Iterator[str]:
    if url:
        yield url
    else:
        with mosquitto() as b:
            yield b.url


def run_mode(
    cfg: FLConfig,
    broker_url: str,
    workdir: Path,
    *,
    progress: bool = True,
    wait_s: float = 120.0,
    observe: Callable[[int, ModelHolder], None] | None = None,
) -> list[RoundPoint]:
    """One federation (one mode) to completion; returns accuracy per aggregated round.
    ``observe(round, holder)`` sees the key holder's model after each round (benchmarks)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    secret_path = pub_path = None
    secret = None
    if cfg.he_enabled:
        keys = he.generate_keys(cfg.he.params())
        secret_path, pub_path = he.write_keys(keys, workdir / "keys")
        secret = keys.secret
    holder = ModelHolder(cfg, secret_context=secret)
    xt, yt = test_data()
    port = free_port()
    agg_args = [
        "fl",
        "aggregator",
        "--config",
        str(cfg_path),
        "--broker",
        broker_url,
        "--listen",
        f"127.0.0.1:{port}",
    ]
    if pub_path is not None:
        agg_args += ["--public-context", str(pub_path)]
    published: list[msg.ModelPublished] = []
    arrived: list[float] = []
    status: list[msg.FederationStatus] = []
    changed = threading.Event()

    def on_model(topic: str, payload: bytes, retained: bool) -> None:
        try:
            m = msg.model_from_bytes(payload)
        except MalformedMessage as e:
            logger.warning("ignoring model message on %s: %s", topic, e)
            return
        arrived.append(time.monotonic() - t0)
        published.append(m)
        changed.set()

    def on_status(topic: str, payload: bytes, retained: bool) -> None:
        try:
            status.append(msg.status_from_bytes(payload))
        except MalformedMessage as e:
            logger.warning("ignoring federation status on %s: %s", topic, e)
            return
        if status[-1].detail:
            logger.warning("%s: %s", cfg.federation, status[-1].detail)
        changed.set()

    points: list[RoundPoint] = []
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        mq = stack.enter_context(
            MqttClient(MqttConfig(url=broker_url, client_id=f"fl-keyholder-{cfg.federation}"))
        )
        mq.subscribe(topics.fl_topic(cfg.federation, topics.FL_MODEL), on_model)
        mq.subscribe(topics.fl_topic(cfg.federation, topics.FL_STATUS), on_status)
        stack.enter_context(collab_process(agg_args, port=port, log=workdir / "aggregator.log"))
        args = [
            "fl",
            "client",
            "--config",
            str(cfg_path),
            "--broker",
            broker_url,
            "--index",
            f"0-{cfg.clients - 1}",
        ]
        if secret_path is not None:
            args += ["--secret-context", str(secret_path)]
        stack.enter_context(collab_process(args, log=workdir / "clients.log"))
        stub = AggregatorStub(f"127.0.0.1:{port}")
        stack.callback(stub.close)
        bar = stack.enter_context(
            tqdm(total=cfg.rounds, desc=f"fl {cfg.mode}", disable=not progress)
        )
        seen = seen_status = 0
        last = time.monotonic()
        while True:
            changed.wait(1.0)
            changed.clear()
            while seen < len(published):
                p = published[seen]
                seen += 1
                catch_up(holder, stub, cfg.federation, p.version)
                if observe is not None:
                    observe(p.round, holder)
                acc = holder.evaluate(xt, yt)
                points.append(
                    RoundPoint(
                        round=p.round,
                        accuracy=acc,
                        epsilon=p.epsilon,
                        reporters=p.reporters,
                        sampled=p.sampled,
                        seconds=time.monotonic() - t0,
                        privacy=cfg.privacy_note,
                        published_s=arrived[seen - 1],
                    )
                )
                bar.update(p.round - bar.n)
                bar.set_postfix(
                    acc=f"{acc:.3f}",
                    eps="-" if p.epsilon is None else f"{p.epsilon:.2f}",
                    rep=f"{p.reporters}/{p.sampled}",
                )
                last = time.monotonic()
            if len(status) > seen_status:  # a failed round is progress too
                seen_status = len(status)
                last = time.monotonic()
            done = [s for s in status if s.state in ("done", "budget_exhausted", "failed")]
            if done and seen == len(published):
                if done[-1].state == "budget_exhausted":
                    logger.warning("%s stopped early: %s", cfg.federation, done[-1].detail)
                break
            if time.monotonic() - last > wait_s + cfg.round.deadline_s:
                raise FLError(
                    f"{cfg.federation}: no progress for {wait_s + cfg.round.deadline_s:.0f}s; "
                    f"see logs in {workdir}"
                )
    (workdir / "rounds.json").write_text(json.dumps([asdict(p) for p in points], indent=1))
    return points


def _check_first_round(mcfg: FLConfig) -> None:
    """Refuse up front if even the first round is over the DP budget."""
    if mcfg.dp_enabled:
        from collab.fl.rounds import RoundPlanner

        try:
            RoundPlanner(mcfg, 1).check_budget()
        except PrivacyBudgetExceeded as e:
            raise FLError(f"mode {mcfg.mode}: {e}") from e


def run_local(
    cfg: FLConfig, *, progress: bool = True, in_process: bool = False
) -> dict[str, list[RoundPoint]]:
    """Every mode in ``cfg.modes`` one after another; writes results + PNG under cfg.out.

    ``in_process``: the same protocol in this process (collab.fl.simulate), no broker or
    network — for federations with many simulated clients (e.g. 100 in the DP example)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[RoundPoint]] = {}
    if in_process:
        from collab.fl.simulate import simulate

        for mode in cfg.modes:
            mcfg = cfg.for_mode(mode)
            _check_first_round(mcfg)
            t0 = time.monotonic()
            pts, elapsed = [], 0.0
            for r in simulate(mcfg, progress=progress):
                elapsed += r.seconds
                if r.reporters >= mcfg.round.min_clients:  # a round that released an aggregate
                    pts.append(
                        RoundPoint(
                            round=r.round,
                            accuracy=float(r.accuracy or 0.0),
                            epsilon=r.epsilon,
                            reporters=r.reporters,
                            sampled=r.reporters,
                            seconds=elapsed,
                            privacy=mcfg.privacy_note,
                        )
                    )
            logger.info(
                "%s: %d rounds in %.1fs (in process)",
                mcfg.federation,
                len(pts),
                time.monotonic() - t0,
            )
            results[mode] = pts
            wd = out / mode.replace("+", "-")
            wd.mkdir(parents=True, exist_ok=True)
            (wd / "rounds.json").write_text(json.dumps([asdict(p) for p in pts], indent=1))
    else:
        with _broker(cfg.broker) as url:
            for mode in cfg.modes:
                mcfg = cfg.for_mode(mode)
                _check_first_round(mcfg)
                results[mode] = run_mode(mcfg, url, out / mode.replace("+", "-"), progress=progress)
    from collab.fl.plot import plot_accuracy

    plot_accuracy(
        results,
        out / "accuracy.png",
        title=f"{cfg.clients} clients, Dirichlet alpha={cfg.dirichlet_alpha}",
        note=cfg.privacy_note,
    )
    (out / "summary.json").write_text(
        json.dumps({m: [asdict(p) for p in pts] for m, pts in results.items()}, indent=1)
    )
    return results
