"""``xiaozhi bench``: a load generator that measures a xiaozhi-core server from outside.

Its own distribution (``xiaozhi-bench``), so production installs of the server carry no
load generator; the dev set-up installs it and ``xiaozhi bench`` is found through the
``xiaozhi_core.commands`` entry point. ``bench/benchmarks/`` holds the hot-path
benchmarks (lane lag, Opus, VAD batching, executor).
"""
