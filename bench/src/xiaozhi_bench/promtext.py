"""Reading a server's ``/metrics`` (Prometheus text) for the load test: samples by name
and labels, differences between two scrapes, and quantiles of histograms.

Example:
    >>> text = '''
    ... # TYPE lag_seconds histogram
    ... lag_seconds_bucket{le="0.01"} 50.0
    ... lag_seconds_bucket{le="0.05"} 99.0
    ... lag_seconds_bucket{le="+Inf"} 100.0
    ... lag_seconds_count 100.0
    ... lag_seconds_sum 1.0
    ... '''
    >>> s = Scrape.parse(text, at=0.0)
    >>> round(s.quantile("lag_seconds", 0.5) * 1000, 1), s.share_le("lag_seconds", 0.05)
    (10.0, 0.99)
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Scrape", "scrape"]

_Key = tuple[str, tuple[tuple[str, str], ...]]


def _key(name: str, labels: Mapping[str, str]) -> _Key:
    return name, tuple(sorted(labels.items()))


@dataclass
class Scrape:
    """One scrape: ``values[(sample_name, sorted_labels)] = value``; ``at`` its time."""

    at: float
    values: dict[_Key, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, at: float | None = None) -> Scrape:
        out = cls(time.time() if at is None else at)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.values[_key(s.name, s.labels)] = float(s.value)
        return out

    def get(self, name: str, default: float = 0.0, **labels: str) -> float:
        return self.values.get(_key(name, labels), default)

    def __sub__(self, other: Scrape) -> Scrape:
        """Counters/histograms minus an earlier scrape (gauges too: use with care)."""
        out = Scrape(self.at)
        for k, v in self.values.items():
            out.values[k] = v - other.values.get(k, 0.0)
        return out

    def buckets(self, name: str, **labels: str) -> list[tuple[float, float]]:
        """``[(upper_bound, cumulative_count)]`` of histogram ``name``, sorted."""
        want = tuple(sorted(labels.items()))
        out = []
        for (sample, lbl), v in self.values.items():
            if sample != f"{name}_bucket":
                continue
            d = dict(lbl)
            le = d.pop("le", None)
            if le is None or tuple(sorted(d.items())) != want:
                continue
            out.append((math.inf if le == "+Inf" else float(le), v))
        return sorted(out)

    def count(self, name: str, **labels: str) -> float:
        b = self.buckets(name, **labels)
        return b[-1][1] if b else 0.0

    def quantile(self, name: str, q: float, **labels: str) -> float | None:
        """Quantile ``q`` of a histogram, linearly interpolated inside its bucket (as
        Prometheus' ``histogram_quantile``); None without observations. A quantile in
        the ``+Inf`` bucket is reported as the largest finite bound."""
        b = self.buckets(name, **labels)
        if not b or b[-1][1] <= 0:
            return None
        rank = q * b[-1][1]
        prev_bound, prev_count = 0.0, 0.0
        for bound, cum in b:
            if cum >= rank:
                if math.isinf(bound):
                    return prev_bound
                if cum == prev_count:
                    return bound
                return prev_bound + (bound - prev_bound) * (rank - prev_count) / (cum - prev_count)
            prev_bound, prev_count = bound, cum
        return prev_bound

    def share_le(self, name: str, bound: float, **labels: str) -> float | None:
        """Fraction of observations ``<= bound`` (exact when ``bound`` is a bucket bound)."""
        b = self.buckets(name, **labels)
        if not b or b[-1][1] <= 0:
            return None
        below = [c for ub, c in b if ub <= bound + 1e-12]
        return round((below[-1] if below else 0.0) / b[-1][1], 6)


def scrape(url: str, timeout: float = 10.0) -> Scrape:
    """GET ``url`` (a ``/metrics`` endpoint) and parse it."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode("utf-8")
    return Scrape.parse(text)
