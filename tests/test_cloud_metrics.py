"""The cloud node's batch histograms (plain counts turned into Prometheus samples on
scrape) expose the same series a prometheus_client Histogram would."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cloud_node.metrics import Metrics


def test_batch_histograms_are_cumulative_and_parse() -> None:
    m = Metrics()
    obs = m.observer("m", "s")
    m.observer("m", "other")  # a second series, never observed: exported at zero
    obs.batch(3, [0.0004, 0.001, 7.0], 0.002)
    obs.batch(16, [0.03], 0.0005)
    labels = {"model": "m", "split": "s"}
    assert m.value("collab_cloud_batch_size_count", labels) == 2
    assert m.value("collab_cloud_batch_size_sum", labels) == 19
    assert m.value("collab_cloud_batch_size_bucket", {**labels, "le": "2.0"}) == 0
    assert m.value("collab_cloud_batch_size_bucket", {**labels, "le": "4.0"}) == 1
    assert m.value("collab_cloud_batch_size_bucket", {**labels, "le": "16.0"}) == 2
    # bounds are inclusive (le), like prometheus_client: 0.001 lands in le="0.001"
    assert m.value("collab_cloud_queue_seconds_bucket", {**labels, "le": "0.0005"}) == 1
    assert m.value("collab_cloud_queue_seconds_bucket", {**labels, "le": "0.001"}) == 2
    assert m.value("collab_cloud_queue_seconds_bucket", {**labels, "le": "5.0"}) == 3
    assert m.value("collab_cloud_queue_seconds_bucket", {**labels, "le": "+Inf"}) == 4
    assert m.value("collab_cloud_compute_seconds_count", labels) == 2
    assert m.value("collab_cloud_batch_size_count", {"model": "m", "split": "other"}) == 0

    text = generate_latest(m.registry).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["collab_cloud_batch_size"].type == "histogram"
    counts = [
        s.value
        for s in fams["collab_cloud_queue_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["split"] == "s"
    ]
    assert counts == sorted(counts) and counts[-1] == 4  # cumulative, ends at the count


def test_drops_are_counted_per_reason() -> None:
    m = Metrics()
    obs = m.observer("m", "s")
    obs.dropped("deadline", 2)
    obs.dropped("deadline", 1)
    obs.dropped("cancelled", 1)
    base = {"model": "m", "split": "s"}
    assert m.value("collab_cloud_dropped_total", {**base, "reason": "deadline"}) == 3
    assert m.value("collab_cloud_dropped_total", {**base, "reason": "cancelled"}) == 1
