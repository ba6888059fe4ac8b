"""Merging the Prometheus text of several worker processes into one exposition.

Each worker keeps its own registry (as a single server does); the worker that answers
``GET /metrics`` scrapes its siblings over their private sockets and merges:

* counters, histograms, summaries (``_total``, ``_bucket``, ``_sum``, ``_count``): summed;
* ``_created`` timestamps: the earliest;
* gauges: summed (sessions, executor jobs, RSS, CPU seconds, threads...), except those
  where a sum means nothing: maxima and lags take the max, start times the min.

So ``process_cpu_seconds_total`` is the CPU of all workers and
``xiaozhi_sessions_active`` the server's sessions.

Example:
    >>> a = "# TYPE x_total counter\\nx_total 2.0\\n# TYPE lag gauge\\nlag{stat=\\"max\\"} 0.5\\n"
    >>> b = "# TYPE x_total counter\\nx_total 3.0\\n# TYPE lag gauge\\nlag{stat=\\"max\\"} 0.2\\n"
    >>> text = merge_expositions([a, b]).decode()
    >>> "x_total 5.0" in text, 'lag{stat="max"} 0.5' in text
    (True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

__all__ = ["merge_expositions"]

#: Gauges (family names) merged by max or min instead of a sum.
_MAX_GAUGES = (
    "xiaozhi_loop_lag_seconds",
    "xiaozhi_audio_lane_lag_max_seconds",
    "xiaozhi_executor_workers_max",
)
_MIN_GAUGES = ("process_start_time_seconds",)


def _how(family: Metric, sample: Sample) -> Callable[[float, float], float]:
    if sample.name.endswith("_created") or family.name in _MIN_GAUGES:
        return min
    if family.type == "gauge" and (
        family.name in _MAX_GAUGES
        or family.name.endswith("_max")
        or "max" in sample.labels.values()
    ):
        return max
    return _add


def _add(a: float, b: float) -> float:
    return a + b


class _Merged:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def merge_expositions(texts: Sequence[str], extra: Iterable[Metric] = ()) -> bytes:
    """One exposition from several (same metric names), plus ``extra`` families."""
    order: list[str] = []
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                values[family.name] = {}
                order.append(family.name)
            slots = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key in slots:
                    slots[key] = _how(family, sample)(slots[key], sample.value)
                else:
                    slots[key] = sample.value
    out: list[Metric] = []
    for name in order:
        family = families[name]
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
        out.append(family)
    out.extend(extra)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(out))
    return generate_latest(registry)
