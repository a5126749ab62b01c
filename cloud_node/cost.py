"""What a batch of n samples costs to compute: ``a + b * n``, fitted online.

The EDF batcher predicts from it when a queued request will be answered (to refuse at
once one that cannot make its deadline) and how long a batch may grow before it makes
its most urgent request late. A weighted least-squares line over recent batches, with
exponential forgetting: ONNX Runtime's cost is close to affine in the batch size (a
fixed part that reads the weights, a per-sample part), and the node's load drifts.
Until two batch sizes were seen the line goes through the origin (proportional).
Updates come from several threads without a lock: a lost update of an average is
harmless, and the reads see consistent enough floats under the GIL.

The line predicts the mean; a deadline needs a high quantile. :attr:`BatchCost.margin`
is the 95th percentile of recent (actual / predicted) ratios, so on a noisy host (a
shared core, a throttled CPU) the scheduler refuses early the requests a slow batch
would make late, instead of computing them too late; on a quiet host it stays near 1.
"""

from __future__ import annotations

from collections import deque

import numpy as np

_DECAY = 0.1  # weight of the newest batch: about the last ten batches count
_RATIOS = 256  # recent actual/predicted ratios the margin is the quantile of
_QUANTILE = 0.95
_MIN_MARGIN = 1.2  # never trust the line closer than this
_MAX_MARGIN = 4.0  # a stall (GC, swap) must not refuse everything for the next 256 batches
_EVERY = 16  # recompute the quantile every this many batches (it sorts 256 floats)


class BatchCost:
    def __init__(self) -> None:
        self._w = 0.0  # sums of weights, n, t, n*n, n*t (exponentially forgotten)
        self._n = 0.0
        self._t = 0.0
        self._nn = 0.0
        self._nt = 0.0
        self._a = 0.0  # seconds per batch
        self._b = 0.0  # seconds per sample
        self._ratios: deque[float] = deque(maxlen=_RATIOS)
        self._since = 0
        self.margin = _MIN_MARGIN  # predicted x margin ~ the 95th percentile of the actual

    def observe(self, n: int, seconds: float) -> None:
        predicted = self(n)
        if predicted > 0 and self._w > 0.5:  # after ~7 batches the line means something
            self._ratios.append(seconds / predicted)
            self._since += 1
            if self._since >= _EVERY:
                self._since = 0
                q = float(np.quantile(np.fromiter(self._ratios, float), _QUANTILE))
                self.margin = min(_MAX_MARGIN, max(_MIN_MARGIN, q))
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
