"""Network monitoring for the edge: what the link to the cloud looks like right now.

``estimator`` turns samples (active probes and passive measurements of real
transfers) into smoothed RTT / bandwidth / loss estimates; ``monitor`` runs the
active probes in a background thread. No grpc here: the probe is a callable.
"""

from collab.net.breaker import CircuitBreaker
from collab.net.estimator import Ewma, LinkEstimator, NetState
from collab.net.monitor import NetworkMonitor, ProbeResult

__all__ = ["CircuitBreaker", "Ewma", "LinkEstimator", "NetState", "NetworkMonitor", "ProbeResult"]
