"""Everything a scenario needs before the clock starts: bundle (calibrated), inputs, references.

The calibrated bundle is cached by (bundle version, codecs, inputs, noise), so re-running a
scenario or the demo does not re-measure the codec table.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from collab.bundle import load_bundle
from collab.chain import BundleSessions
from collab.errors import ConfigError
from collab.log import logger
from collab.scenario.schema import Scenario


def scenario_inputs(sc: Scenario, n: int, *, seed_offset: int = 0) -> np.ndarray:
    """``n`` dataset inputs (cycled) plus the workload's sensor noise, seeded."""
    if sc.model.example is not None:
        from collab.models.registry import example_inputs

        x, _ = example_inputs(sc.model.example, None, "test")
    else:
        m = load_bundle(sc.model.bundle).manifest  # type: ignore[arg-type]
        rng = np.random.default_rng(sc.seed + 7)
        x = rng.standard_normal((64, *m.input_shape[1:])).astype(np.float32)
    x = x[np.arange(n) % len(x)]
    if sc.workload.input_noise > 0:
        rng = np.random.default_rng(sc.seed * 1000 + 17 + seed_offset)
        x = x + rng.normal(0.0, sc.workload.input_noise, x.shape).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def _cache_root() -> Path:
    from collab.split.examples import cache_root

    return cache_root().parent / "scenario-bundles"


def prepare_bundle(sc: Scenario) -> Path:
    """The scenario's bundle directory, with a codec calibration measured on its inputs."""
    if sc.model.example is not None:
        from collab.split.examples import example_bundle

        src = example_bundle(sc.model.example)
    else:
        assert sc.model.bundle is not None
        src = sc.model.bundle
    bundle = load_bundle(src)
    if not sc.model.calibrate:
        return src
    key = hashlib.sha256(
        json.dumps(
            [
                bundle.version,
                list(sc.model.codecs),
                sc.model.calibration_inputs,
                sc.workload.input_noise,
                sc.seed,
            ]
        ).encode()
    ).hexdigest()[:16]
    root = _cache_root()
    final = root / f"{bundle.manifest.model_name}-{key}"
    if final.is_dir():
        try:
            load_bundle(final)
            return final
        except Exception as e:  # damaged cache: rebuild
            logger.warning("cached scenario bundle %s unusable (%s); rebuilding", final, e)
            shutil.rmtree(final, ignore_errors=True)
    from collab.codec.calibrate import calibrate_bundle

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{final.name}.{time.time_ns()}"
    shutil.copytree(src, tmp)
    x = scenario_inputs(sc, sc.model.calibration_inputs, seed_offset=1)
    logger.info(
        "calibrating %d codecs on %d inputs for %s", len(sc.model.codecs), len(x), final.name
    )
    calibrate_bundle(tmp, x, None, codecs=sc.model.codecs, progress=False)
    try:
        tmp.rename(final)
    except OSError:  # a concurrent run won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def reference_top1(bundle_dir: Path, x: np.ndarray) -> np.ndarray:
    """Top-1 of the full FP32 model on every input: what 'agreement' is measured against."""
    b = load_bundle(bundle_dir)
    full = BundleSessions(b).full()
    out = np.concatenate([full(x[i : i + 64]) for i in range(0, len(x), 64)])
    if out.ndim != 2:
        raise ConfigError(f"model output shape {out.shape} is not (batch, classes)")
    return np.asarray(out.argmax(axis=1))
