#!/usr/bin/env python3
"""DP-FedAvg utility: test accuracy versus ε for the shipped DP configuration.

Runs the in-process federation (collab.fl.simulate: the same planner, round state,
client code and RDP accountant as the networked one) on the config in
``collab/fl/example_digits_dp.yaml``: public pretraining of the digits CNN on a held-out
PUBLIC share of the training split, then DP-FedAvg of the classifier over many non-IID
clients holding the rest. For every target ε the noise multiplier sigma is calibrated with
the project's accountant so that even the worst round the planner accepts (only
``min_clients`` report) keeps the total within ε; the ε printed is the accountant's own
after the last aggregated round (δ from the config).

Rows, all in one run:
  public only        the pretrained model before any federated round (no private data)
  no DP              the same federation without clipping/noise (plain FedAvg)
  DP ε=...           DP-FedAvg at each target ε
  DP ε=8, no public  ablation: same DP federation from the seeded random init (no public data)
  DP ε=8, head from scratch   ablation: public features, but the federated classifier starts
                     from its random init, so everything it knows is learnt under DP

Accuracy is the FINAL round's test accuracy (no best-round picking on the test set).

    .venv/bin/python benchmarks/fl_dp.py [--eps 1,2,4,8] [--rounds N] [--jobs 2] [--out fl-dp-out]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from collab.fl.accountant import noise_for_epsilon
from collab.fl.config import FLConfig, load_config
from collab.fl.data import member_data, private_indices, public_indices, test_data
from collab.fl.member import ModelHolder
from collab.fl.simulate import simulate

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "collab" / "fl" / "example_digits_dp.yaml"


def calibrated(cfg: FLConfig, epsilon: float) -> FLConfig:
    """``cfg`` in DP mode with sigma such that ``cfg.rounds`` worst-case rounds stay ≤ ε."""
    worst = (cfg.round.min_clients - cfg.dp.assumed_colluders) / cfg.expected_clients
    sigma = noise_for_epsilon(
        epsilon,
        q=1.0,  # the sample is public: ε is accounted without amplification
        rounds=cfg.rounds,
        delta=cfg.dp.delta,
        worst_fraction=min(1.0, worst),
    )
    dp = dataclasses.replace(cfg.dp, noise_multiplier=sigma, epsilon_budget=epsilon)
    return dataclasses.replace(cfg, dp=dp, modes=["dp"])


def run(job: tuple[str, FLConfig]) -> dict[str, Any]:
    name, cfg = job
    t0 = time.perf_counter()
    res = simulate(cfg, progress=False)
    accs = [float(r.accuracy or 0.0) for r in res]
    return {
        "setting": name,
        "sigma": cfg.dp.noise_multiplier if cfg.dp_enabled else None,
        "epsilon": res[-1].epsilon if res else None,
        "rounds": len(res),
        "final": accs[-1] if accs else None,
        "best": max(accs) if accs else None,
        "curve": accs,
        "seconds": time.perf_counter() - t0,
    }


def plot(rows: list[dict[str, Any]], public_only: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    dp = [r for r in rows if r["setting"].startswith("DP ε=") and "," not in r["setting"]]
    a1.plot(
        [r["epsilon"] for r in dp],
        [100 * r["final"] for r in dp],
        "o-",
        label="DP-FedAvg (final round)",
    )
    for r in rows:
        if r["setting"] == "no DP":
            a1.axhline(
                100 * r["final"],
                color="g",
                ls="--",
                label=f"no DP, same config ({100 * r['final']:.1f}%)",
            )
        if "no public" in r["setting"]:
            a1.plot(
                [r["epsilon"]],
                [100 * r["final"]],
                "rx",
                ms=9,
                label="DP ε≈8 without public pretraining",
            )
        if "scratch" in r["setting"]:
            a1.plot(
                [r["epsilon"]],
                [100 * r["final"]],
                "m^",
                ms=8,
                label="DP ε≈8, classifier from random init",
            )
    a1.axhline(
        100 * public_only,
        color="gray",
        ls=":",
        label=f"public data only ({100 * public_only:.1f}%)",
    )
    a1.axhline(10, color="k", lw=0.5, ls=":", label="chance")
    a1.set_xscale("log", base=2)
    a1.set_xlabel("ε (δ=1e-5, accountant after the last round)")
    a1.set_ylabel("test accuracy (%)")
    a1.set_ylim(0, 100)
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8, loc="center right")
    a1.set_title("accuracy vs ε")
    for r in rows:
        if "no public" in r["setting"]:  # at chance: shown in the left panel, would squash this one
            continue
        a2.plot(
            range(0, len(r["curve"]) + 1),
            [100 * r["start"]] + [100 * a for a in r["curve"]],
            label=r["setting"],
        )
    a2.axhline(100 * public_only, color="gray", ls=":", label="public data only")
    a2.set_xlabel("round (0 = initial model)")
    a2.set_ylabel("test accuracy (%)")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8, loc="lower right")
    a2.set_title("accuracy per round")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument("--eps", default="1,2,4,8", help="target ε values (comma-separated)")
    ap.add_argument("--rounds", type=int, default=None, help="override the config's rounds")
    ap.add_argument("--jobs", type=int, default=2, help="settings run in parallel processes")
    ap.add_argument("--no-ablation", action="store_true", help="skip the no-public-data ablation")
    ap.add_argument("--out", type=Path, default=Path("fl-dp-out"))
    args = ap.parse_args()

    base = load_config(args.config)
    if args.rounds:
        base = dataclasses.replace(base, rounds=args.rounds)
    xt, yt = test_data()
    p = base.public
    n_pub, n_priv = (
        len(public_indices(p.fraction, base.seed)),
        len(private_indices(p.fraction, base.seed)),
    )
    sizes = sorted(len(member_data(base, k)[1]) for k in range(base.clients))
    public_only = ModelHolder(dataclasses.replace(base, modes=["plain"])).evaluate(
        xt, yt
    )  # also warms the cache
    print(
        f"config {args.config}: {base.clients} clients (Dirichlet alpha={base.dirichlet_alpha}, "
        f"{sizes[0]}..{sizes[-1]} examples each), federated {base.model.federated}, {base.rounds} rounds, "
        f"q={base.round.sample_rate}, min_clients={base.round.min_clients}, clip S={base.dp.clip}"
    )
    print(
        f"data: {n_pub} PUBLIC examples (fraction {p.fraction} of the digits training split, pretraining), "
        f"{n_priv} PRIVATE examples (clients), {len(yt)} TEST examples (separate split)"
    )

    jobs: list[tuple[str, FLConfig]] = [("no DP", dataclasses.replace(base, modes=["plain"]))]
    for e in (float(x) for x in args.eps.split(",")):
        jobs.append((f"DP ε={e:g}", calibrated(base, e)))
    starts: dict[str, float] = {}
    if not args.no_ablation:
        nopub = dataclasses.replace(base, public=dataclasses.replace(base.public, fraction=0.0))
        jobs.append(("DP ε=8, no public", calibrated(nopub, 8.0)))
        starts["DP ε=8, no public"] = ModelHolder(
            dataclasses.replace(nopub, modes=["plain"])
        ).evaluate(xt, yt)
        scratch = dataclasses.replace(
            base, public=dataclasses.replace(base.public, reset_federated=True)
        )
        jobs.append(("DP ε=8, head from scratch", calibrated(scratch, 8.0)))
        starts["DP ε=8, head from scratch"] = ModelHolder(
            dataclasses.replace(scratch, modes=["plain"])
        ).evaluate(xt, yt)
    t0 = time.perf_counter()
    ctx = mp.get_context("fork")
    with ctx.Pool(max(1, args.jobs)) as pool:
        rows = []
        from tqdm import tqdm

        for r in tqdm(pool.imap(run, jobs), total=len(jobs), desc="settings"):
            r["start"] = starts.get(r["setting"], public_only)
            rows.append(r)
    print(
        f"\n{'setting':<20} {'sigma':>7} {'epsilon':>8} {'rounds':>6} {'final acc':>9} {'best':>6} {'s':>6}"
    )
    print(f"{'public only':<20} {'-':>7} {'0':>8} {0:>6} {public_only:>9.3f} {'-':>6} {'-':>6}")
    for r in rows:
        sig = "-" if r["sigma"] is None else f"{r['sigma']:.3f}"
        eps = "-" if r["epsilon"] is None else f"{r['epsilon']:.3f}"
        print(
            f"{r['setting']:<20} {sig:>7} {eps:>8} {r['rounds']:>6} {r['final']:>9.3f} {r['best']:>6.3f} "
            f"{r['seconds']:>6.0f}"
        )
    print(f"(wall {time.perf_counter() - t0:.0f}s for all settings, {args.jobs} parallel)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fl_dp.json").write_text(
        json.dumps(
            {
                "public_only": public_only,
                "rows": rows,
                "public_examples": n_pub,
                "private_examples": n_priv,
                "test_examples": len(yt),
            },
            indent=1,
        )
    )
    png = args.out / "fl_dp.png"
    plot(
        rows,
        public_only,
        png,
        title=f"DP-FedAvg of {base.model.federated} on digits: {base.clients} non-IID "
        f"clients, {n_pub} public / {n_priv} private / {len(yt)} test examples",
    )
    print(f"wrote {png} and {args.out / 'fl_dp.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
