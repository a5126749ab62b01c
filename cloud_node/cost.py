"""What a batch of n samples costs to compute: ``a + b * n``, fitted online.

The EDF batcher predicts from it when a queued request will be answered (to refuse at
once one that cannot make its deadline) and how long a batch may grow before it makes
its most urgent request late. A weighted least-squares line over recent batches, with
exponential forgetting: ONNX Runtime's cost is close to affine in the batch size (a
fixed part that reads the weights, a per-sample part), and the node's load drifts.
Until two batch sizes were seen the line goes through the origin (proportional).
Updates come from several threads without a lock: a lost update of an average is
harmless, and the reads see consistent enough floats under the GIL.
"""

from __future__ import annotations

_DECAY = 0.1  # weight of the newest batch: about the last ten batches count


class BatchCost:
    def __init__(self) -> None:
        self._w = 0.0  # sums of weights, n, t, n*n, n*t (exponentially forgotten)
        self._n = 0.0
        self._t = 0.0
        self._nn = 0.0
        self._nt = 0.0
        self._a = 0.0  # seconds per batch
        self._b = 0.0  # seconds per sample

    def observe(self, n: int, seconds: float) -> None:
        keep = 1.0 - _DECAY
        self._w = keep * self._w + _DECAY
        self._n = keep * self._n + _DECAY * n
        self._t = keep * self._t + _DECAY * seconds
        self._nn = keep * self._nn + _DECAY * n * n
        self._nt = keep * self._nt + _DECAY * n * seconds
        mean_n, mean_t = self._n / self._w, self._t / self._w
        var = self._nn / self._w - mean_n * mean_n
        b = (self._nt / self._w - mean_n * mean_t) / var if var > 1e-6 else -1.0
        if b < 0 or mean_t - b * mean_n < 0:  # one size seen, or noise: proportional
            self._a, self._b = 0.0, mean_t / mean_n if mean_n > 0 else 0.0
        else:
            self._a, self._b = mean_t - b * mean_n, b

    def __call__(self, n: int) -> float:
        """Predicted seconds for a batch of ``n`` samples (0 before any observation)."""
        return self._a + self._b * n if n > 0 else 0.0

    @property
    def known(self) -> bool:
        return self._w > 0
