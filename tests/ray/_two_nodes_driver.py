"""Run by test_two_nodes.py in its own process (a process joins one Ray cluster only):
a gateway joins the two-node cluster at ``argv[1]``, the ASR replica is pinned to the
node that has the ``asr_node`` resource, a device talks; prints a JSON report."""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np


async def main(address: str) -> dict[str, object]:
    import ray

    from xiaozhi_core.device import FakeDevice, encode_utterance
    from xiaozhi_core.gateway import XiaozhiServer
    from xiaozhi_core.testing import fake_config, tone
    from xiaozhi_core.types import Role

    config = fake_config(
        executor={"kind": "ray", "ray": {"address": address, "app_prefix": "twonodes"}},
        session={"silence_ms": 300, "min_speech_ms": 120},
        server={"limits": {"max_loop_lag_ms": 0}},
        asr={
            "provider": "fake",
            "options": {"text": "pinned"},
            "ray": {"resources": {"asr_node": 1}, "num_cpus": 0.5},
        },
        llm={"provider": "fake", "options": {"reply": "Two nodes."}},
    )
    server = await XiaozhiServer.create(config)
    await server.start(port=0, http_port=0)
    try:
        nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        placed = {
            r.value: (await getattr(server.providers, r.value).describe())["node_id"]
            for r in (Role.ASR, Role.LLM, Role.TTS)
        }
        pcm = np.concatenate([np.zeros(4800, np.int16), tone(0.6), np.zeros(9600, np.int16)])
        async with FakeDevice(server.ws_url) as dev:
            await dev.listen("start", "auto")
            await dev.stream(encode_utterance(pcm))
            await dev.wait_for("tts", "stop", timeout=60)
        stt = dev.messages("stt")[0]["text"]
    finally:
        await server.stop()
    asr_nodes = [n for n, res in nodes.items() if res.get("asr_node")]
    return {"nodes": len(nodes), "asr_nodes": asr_nodes, "placed": placed, "stt": stt}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
