"""The models a cloud node serves: for every bundle, the full model and every tail.

Each is a chain of the bundle's segment sessions (:mod:`collab.chain`), shared by every
chain that contains the segment, so a bundle's weights are in memory once per set of
sessions: one set, or one per core in the "sessions" execution mode
(:mod:`cloud_node.execution`), each slot of the batcher running its own. Sessions are
created once at start-up, from the bytes verified against the manifest, so the first
request pays no load time and a broken bundle stops the node before it announces itself.
The cloud keeps ONNX Runtime's memory arenas (``lean=False``): dynamic batching reruns
the same shapes, and memory is not what a cloud node is short of.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cloud_node.execution import plan
from collab.bundle import Bundle, Preprocessing
from collab.chain import Chain
from collab.errors import NotFoundError

FULL = "full"  # split label of the whole model (Infer) in metrics and batcher keys


@dataclass(frozen=True)
class Runnable:
    """One chain of ONNX graphs with a dynamic batch dimension and its expected
    per-sample shape; ``chains`` holds it once per set of sessions (one per batch slot)."""

    model: str
    version: str
    split: str  # split point name, or FULL
    chains: tuple[Chain, ...]
    sample_shape: tuple[int, ...]  # without the batch dimension
    preprocessing: Preprocessing | None = None  # the full model of an image bundle: images -> input
    cores: tuple[int, ...] | None = None  # the core of each chain's slot; None: not pinned

    @property
    def sample_bytes(self) -> int:
        return 4 * math.prod(self.sample_shape)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model, self.version, self.split)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.chains[0](x)


@dataclass(frozen=True)
class ServedModel:
    bundle: Bundle
    full: Runnable
    tails: dict[str, Runnable]
    execution: str  # "threads" or "sessions" (cloud_node.execution)

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version


class ModelRegistry:
    """Resolves (model name, version, split) to a Runnable; NotFoundError otherwise."""

    def __init__(
        self,
        bundles: Sequence[Bundle],
        *,
        intra_threads: int = 1,
        execution: str = "sessions",
        workers: int = 1,
        batch: int = 1,
    ) -> None:
        """``execution``, ``workers`` (cores), ``intra_threads``, ``batch`` (the timed
        batch of ``auto``): see :func:`cloud_node.execution.plan`."""
        self._models: dict[str, list[ServedModel]] = {}
        for b in bundles:
            m = b.manifest
            ex = plan(b, execution, workers=workers, intra_threads=intra_threads, batch=batch)
            full = Runnable(
                m.model_name,
                b.version,
                FULL,
                tuple(s.full() for s in ex.sessions),
                tuple(m.input_shape[1:]),
                m.preprocessing,
                ex.cores,
            )
            tails = {
                sp.name: Runnable(
                    m.model_name,
                    b.version,
                    sp.name,
                    tuple(s.tail(sp.name) for s in ex.sessions),
                    tuple(sp.feature_shape[1:]),
                    cores=ex.cores,
                )
                for sp in m.split_points
            }
            self._models.setdefault(m.model_name, []).append(ServedModel(b, full, tails, ex.mode))

    @property
    def models(self) -> list[ServedModel]:
        return [m for ms in self._models.values() for m in ms]

    def resolve(self, name: str, version: str, split: str | None) -> Runnable:
        """``version`` empty = the first bundle loaded under that name."""
        candidates = self._models.get(name)
        if not candidates:
            served = ", ".join(sorted(self._models)) or "none"
            raise NotFoundError(f"model {name!r} is not served here (serving: {served})")
        model = next((m for m in candidates if not version or m.version == version), None)
        if model is None:
            have = ", ".join(m.version[:12] for m in candidates)
            raise NotFoundError(
                f"model {name!r} version {version[:12]!r} is not served (have: {have})"
            )
        if split is None:
            return model.full
        tail = model.tails.get(split)
        if tail is None:
            known = ", ".join(model.tails) or "none"
            raise NotFoundError(f"model {name!r} has no split point {split!r} (known: {known})")
        return tail

    def runnables(self) -> list[Runnable]:
        return [r for m in self.models for r in (m.full, *m.tails.values())]

    def warmup(self) -> None:
        """Run every model once per set of sessions: the first ONNX Runtime call of a
        session allocates and is slow, and the full chain runs every segment session,
        which the tails share."""
        for m in self.models:
            for chain in m.full.chains:
                chain(np.zeros((1, *m.full.sample_shape), dtype=np.float32))

    def largest_sample_bytes(self) -> int:
        """float32 bytes of the largest single-sample input or feature served."""
        return max((r.sample_bytes for r in self.runnables()), default=0)
