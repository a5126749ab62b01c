"""The whole round protocol in one process (no network): same planner, round state,
member and accountant code as the real federation; used by tests and benchmarks."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tqdm import tqdm

from collab.fl import he
from collab.fl.config import FLConfig
from collab.fl.data import member_data, test_data
from collab.fl.member import ModelHolder, Trainer
from collab.fl.round_sum import RoundState, UpdateRejected, make_summer, upload_header
from collab.fl.rounds import RoundPlanner
from collab.log import logger


@dataclass(frozen=True, kw_only=True)
class RoundResult:
    round: int
    reporters: int
    accuracy: float | None
    epsilon: float | None
    sigma_eff: float | None
    upload_bytes: int
    seconds: float


def simulate(cfg: FLConfig, *, progress: bool = True, drop: int = 0) -> list[RoundResult]:
    """Run ``cfg.rounds`` rounds; ``drop`` sampled clients per round never report."""
    keys = he.generate_keys(cfg.he.params()) if cfg.he_enabled else None
    secret = keys.secret if keys else None
    evaluator = ModelHolder(cfg, secret_context=secret)
    trainers = {}
    for k in range(cfg.clients):
        x, y = member_data(cfg, k)
        trainers[f"c{k:03d}"] = Trainer(
            ModelHolder(cfg, secret_context=secret), x, y, seed=cfg.seed * 1000 + k
        )
    planner = RoundPlanner(cfg, evaluator.dim, context_id=keys.context_id if keys else "")
    xt, yt = test_data()
    slots = cfg.he.params().slots
    results: list[RoundResult] = []
    bar = tqdm(range(cfg.rounds), desc=f"fl {cfg.mode}", disable=not progress)
    for _ in bar:
        t0 = time.perf_counter()
        planner.check_budget()
        sampled = planner.sample(list(trainers))
        spec = planner.next_spec(
            evaluator.state.version,
            sampled,
            max_examples=max((len(trainers[c].y) for c in sampled), default=1),
        )
        st = RoundState(spec, make_summer(spec.encoding, keys.public if keys else None), slots)
        sent = 0
        for cid in spec.sampled[drop:]:
            t = trainers[cid]
            chunks = list(t.update(spec.round, packing=spec.packing))
            sent += sum(map(len, chunks))
            header = upload_header(spec, cid, len(chunks))
            try:
                st.submit(header, chunks)
            except UpdateRejected as e:  # the round continues without this client
                logger.warning("round %d: %s rejected: %s", spec.round, cid, e)
        agg = st.close()
        eps = s_eff = None
        if agg is not None:
            eps, s_eff = planner.account(agg)
            for h in [evaluator, *(t.holder for t in trainers.values())]:
                h.apply(agg)
        acc = evaluator.evaluate(xt, yt) if cfg.simulate.evaluate else None
        results.append(
            RoundResult(
                round=spec.round,
                reporters=len(st.reporters),
                accuracy=acc,
                epsilon=eps,
                sigma_eff=s_eff,
                upload_bytes=sent,
                seconds=time.perf_counter() - t0,
            )
        )
        bar.set_postfix(
            acc=f"{acc:.3f}" if acc is not None else "-",
            eps=f"{eps:.2f}" if eps is not None else "-",
        )
    return results
