"""Everything a scenario needs before the clock starts: bundle (calibrated), inputs, references.

The calibrated bundle is cached by (bundle version, codecs, inputs, noise), so re-running a
scenario or the demo does not re-measure the codec table.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from collab.bundle import load_bundle
from collab.chain import BundleSessions
from collab.errors import ConfigError
from collab.log import logger
from collab.scenario.schema import Scenario


def image_workload(sc: Scenario) -> bool:
    """Whether the scenario's requests are camera frames: an example model fed from
    camera images (efficientnet). Then every request goes to ``Client.infer_image``
    and the cloud-only path sends the frame with the calibrated image codec."""
    if sc.model.example is None:
        return False
    from collab.models.registry import spec

    return spec(sc.model.example).images is not None


def _pick(total: int, n: int, held_out: bool) -> np.ndarray:
    """Indices of ``n`` items (cycled) of a set of ``total``: the runs take them from the
    start, the calibration (``held_out``) from the end, so the codec table's agreement is
    measured on other images than the ones it is judged on while both sets fit."""
    i = np.arange(n)
    return (total - 1 - i) % total if held_out else i % total


def scenario_frames(
    sc: Scenario, n: int, *, seed_offset: int = 0, held_out: bool = False
) -> np.ndarray:
    """``n`` uint8 camera frames (cycled) of an image workload with the workload's sensor
    noise, seeded (``held_out``: from the other end of the image set, see :func:`_pick`).
    ``input_noise`` keeps its meaning (the std the model input sees): in pixels it is
    ``input_noise x 255 x`` the preprocessing's std, then rounded and clipped as a
    sensor's output is."""
    from collab.models.registry import example_images, spec

    assert sc.model.example is not None
    pre = spec(sc.model.example).preprocessing
    assert pre is not None
    img = example_images(sc.model.example, None, "test")
    img = img[_pick(len(img), n, held_out)]
    if sc.workload.input_noise <= 0:
        return np.ascontiguousarray(img)
    rng = np.random.default_rng(sc.seed * 1000 + 17 + seed_offset)
    sigma = sc.workload.input_noise * 255.0 * np.asarray(pre.std, np.float32)
    noisy = img.astype(np.float32) + rng.normal(0.0, 1.0, img.shape).astype(np.float32) * sigma
    return np.ascontiguousarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def scenario_requests(
    sc: Scenario, n: int, *, seed_offset: int = 0, held_out: bool = False
) -> np.ndarray:
    """What the workload's ``n`` requests carry: camera frames (uint8 (N, H, W, 3)) for an
    image workload, else model inputs (float32); :func:`serve` sends either."""
    if image_workload(sc):
        return scenario_frames(sc, n, seed_offset=seed_offset, held_out=held_out)
    return scenario_inputs(sc, n, seed_offset=seed_offset, held_out=held_out)


def model_inputs(bundle_dir: Path, requests: np.ndarray) -> np.ndarray:
    """The model inputs of ``requests`` (frames preprocessed as the bundle records)."""
    if requests.dtype != np.uint8:
        return requests
    from collab.codec.image import preprocess

    pre = load_bundle(bundle_dir).manifest.preprocessing
    if pre is None:
        raise ConfigError(f"{bundle_dir}: camera frames need a bundle with preprocessing")
    return np.concatenate(
        [preprocess(requests[i : i + 64], pre) for i in range(0, len(requests), 64)]
    )


def serve(client: Any, item: np.ndarray, **kw: Any) -> Any:
    """One request of the workload: a frame to ``infer_image``, an input to ``infer``."""
    if item.dtype == np.uint8:
        return client.infer_image(item, **kw)
    return client.infer(item[None], **kw)


def scenario_inputs(
    sc: Scenario, n: int, *, seed_offset: int = 0, held_out: bool = False
) -> np.ndarray:
    """``n`` dataset inputs (cycled) plus the workload's sensor noise, seeded (model
    inputs; an image workload's are its frames preprocessed)."""
    if image_workload(sc):
        from collab.codec.image import preprocess
        from collab.models.registry import spec

        pre = spec(sc.model.example).preprocessing  # type: ignore[arg-type]
        assert pre is not None
        return preprocess(scenario_frames(sc, n, seed_offset=seed_offset, held_out=held_out), pre)
    if sc.model.example is not None:
        from collab.models.registry import example_inputs

        x, _ = example_inputs(sc.model.example, None, "test")
    else:
        m = load_bundle(sc.model.bundle).manifest  # type: ignore[arg-type]
        rng = np.random.default_rng(sc.seed + 7)
        x = rng.standard_normal((64, *m.input_shape[1:])).astype(np.float32)
    x = x[_pick(len(x), n, held_out)]
    if sc.workload.input_noise > 0:
        rng = np.random.default_rng(sc.seed * 1000 + 17 + seed_offset)
        x = x + rng.normal(0.0, sc.workload.input_noise, x.shape).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


#: the calibration's noise draws: one seed for every scenario, so scenarios on the same
#: model and noise share one (costly) calibration; the runs draw theirs from their seed
CALIBRATION_SEED = 1_000_003


def _cache_root() -> Path:
    from collab.split.examples import cache_root

    return cache_root().parent / "scenario-bundles"


def prepare_bundle(sc: Scenario, *, progress: bool = False) -> Path:
    """The scenario's bundle directory, with a codec calibration measured on its inputs
    (``progress``: a bar while building and calibrating)."""
    if sc.model.example is not None:
        from collab.split.examples import example_bundle

        src = example_bundle(sc.model.example, progress=progress)
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
                CALIBRATION_SEED,
                "frames" if image_workload(sc) else "inputs",
                "held-out",
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
    # the workload's own distribution, noise included (other draws than the run's): a
    # codec's agreement on clean images says little about noisy frames
    req = scenario_requests(
        replace(sc, seed=CALIBRATION_SEED), sc.model.calibration_inputs, held_out=True
    )
    frames = req if req.dtype == np.uint8 else None
    logger.info(
        "calibrating %d codecs on %d %s for %s",
        len(sc.model.codecs),
        len(req),
        "camera frames" if frames is not None else "inputs",
        final.name,
    )
    calibrate_bundle(
        tmp, model_inputs(src, req), None, codecs=sc.model.codecs, progress=progress, images=frames
    )
    try:
        tmp.rename(final)
    except OSError:  # a concurrent run won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def reference_top1(bundle_dir: Path, requests: np.ndarray) -> np.ndarray:
    """Top-1 of the full FP32 model on every request (a frame: on its preprocessing, what
    the edge runs): what 'agreement' is measured against."""
    x = model_inputs(bundle_dir, requests)
    b = load_bundle(bundle_dir)
    full = BundleSessions(b).full()
    out = np.concatenate([full(x[i : i + 64]) for i in range(0, len(x), 64)])
    if out.ndim != 2:
        raise ConfigError(f"model output shape {out.shape} is not (batch, classes)")
    return np.asarray(out.argmax(axis=1))
