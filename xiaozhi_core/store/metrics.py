"""The store's counters as Prometheus metrics: a collector that reads
:class:`~xiaozhi_core.store.records.StoreStats` at scrape time (no bookkeeping on the
recording path).

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> from xiaozhi_core.store.records import StoreStats
>>> registry = CollectorRegistry()
>>> registry.register(StoreCollector(StoreStats(recorded=5, written=4, dropped=1)))
>>> text = generate_latest(registry).decode()
>>> "xiaozhi_store_events_total{outcome=\\"dropped\\"} 1.0" in text
True
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .records import StoreStats

__all__ = ["StoreCollector"]


class StoreCollector(Collector):
    """Exports ``store.stats``: register with ``registry.register(StoreCollector(
    store.stats))``."""

    def __init__(self, stats: StoreStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        events = CounterMetricFamily(
            "xiaozhi_store_events",
            "Store events by outcome: recorded (queued), written, "
            "dropped (queue full or store closed), failed (refused by the database), "
            "lost_on_close",
            labels=["outcome"],
        )
        for outcome in ("recorded", "written", "dropped", "failed", "lost_on_close"):
            events.add_metric([outcome], getattr(s, outcome))
        yield events
        yield CounterMetricFamily(
            "xiaozhi_store_write_retries",
            "Batch writes retried (database down, restarting or locked)",
            value=s.retries,
        )
        yield CounterMetricFamily("xiaozhi_store_batches", "Batches written", value=s.batches)
        yield CounterMetricFamily(
            "xiaozhi_store_batch_seconds", "Time spent writing batches", value=s.batch_seconds_total
        )
        yield GaugeMetricFamily(
            "xiaozhi_store_batch_seconds_max",
            "Longest batch write so far",
            value=s.batch_seconds_max,
        )
        yield CounterMetricFamily(
            "xiaozhi_store_read_failures",
            "Reads for a turn that failed or timed out (answered empty)",
            value=s.read_failures,
        )
        yield GaugeMetricFamily(
            "xiaozhi_store_queue_depth", "Events waiting to be written", value=s.queue_depth
        )
