"""Configuration of the Ray Serve backend (no Ray needed) and its lazy import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xiaozhi_core.errors import ConfigError
from xiaozhi_core.testing import fake_config


def test_ray_placement_config() -> None:
    cfg = fake_config(
        executor={"kind": "ray"},
        asr={"provider": "fake", "executor": "local"},
        tts={
            "provider": "fake",
            "ray": {"replicas": 2, "num_cpus": 0.25, "resources": {"tts_node": 1}},
        },
    )
    assert cfg.vad.placement is None and cfg.asr.placement is None
    assert cfg.llm.placement is not None and cfg.tts.placement is not None
    assert cfg.tts.placement.replicas == 2 and cfg.tts.placement.resources == {"tts_node": 1}
    assert fake_config(llm={"provider": "fake", "executor": "ray"}).llm.placement is not None
    assert fake_config().llm.placement is None
    with pytest.raises(ConfigError, match="vad.executor"):
        fake_config(vad={"provider": "fake", "executor": "ray"})
    with pytest.raises(ConfigError, match="only 'cpu' providers run on Ray"):
        fake_config(llm={"provider": "fake_io", "executor": "ray"})
    with pytest.raises(ConfigError, match="asr.ray.replica"):
        fake_config(asr={"provider": "fake", "ray": {"replica": 2}})


def test_nothing_imports_ray_unless_configured() -> None:
    code = (
        "import sys, asyncio\n"
        "from xiaozhi_core.gateway import XiaozhiServer\n"
        "from xiaozhi_core.testing import fake_config\n"
        "async def main():\n"
        "    s = await XiaozhiServer.create(fake_config())\n"
        "    await s.start(port=0, http_port=0); await s.stop()\n"
        "asyncio.run(main())\n"
        "print('ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_workers_with_ray_need_a_cluster_address() -> None:
    import asyncio

    from xiaozhi_core.gateway.workers import run_workers

    config = fake_config(executor={"kind": "ray"})
    with pytest.raises(ConfigError, match="executor.ray.address: 2 workers cannot each start"):
        asyncio.run(run_workers(config, [], False, 2))
