"""One local Ray instance (2 CPUs, loopback) shared by every Ray test of the session.

Starting Ray costs seconds and ~800 MB of RSS over its daemons: the tests share one
instance, and each test's server deploys (and deletes) its own Serve applications.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    ray.init(
        num_cpus=2,
        namespace="xiaozhi-test",
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    serve.start(proxy_location="Disabled")
    yield
    serve.shutdown()
    ray.shutdown()
