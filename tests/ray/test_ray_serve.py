"""Ray Serve as the execution backend: the providers run in Serve replicas (other PIDs)
of a real local Ray instance, calls and streams go through deployment handles."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.harness import ServerFactory, fake_servers, utterance
from xiaozhi_core.config import load_config
from xiaozhi_core.device import FakeDevice, encode_utterance
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.registry import default_registry
from xiaozhi_core.types import Message, Role

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]
ROOT = Path(__file__).resolve().parents[2]


async def speak_and_wait(dev: FakeDevice, timeout: float = 30) -> None:  # noqa: ASYNC109
    after = len(dev.received)
    await dev.listen("start", "auto")
    await dev.stream(utterance())
    await dev.wait_for("tts", "stop", timeout=timeout, after=after)


def delete_apps(prefix: str) -> None:
    """Serve applications outlive a gateway on a shared Ray: each test removes its own."""
    from ray import serve

    for app in list(serve.status().applications):
        if app.startswith(prefix + "-"):
            serve.delete(app)


@pytest.fixture
async def ray_server(request: pytest.FixtureRequest) -> AsyncIterator[ServerFactory]:
    prefix = "t-" + request.node.name.removeprefix("test_")[:20].replace("_", "-")
    base = {
        "executor": {"kind": "ray", "ray": {"app_prefix": prefix}},
        "session": {"silence_ms": 300, "min_speech_ms": 120},
        "server": {"limits": {"max_loop_lag_ms": 0}, "timeouts": {"provider": 20}},
    }
    async with fake_servers(base) as make:
        yield make
    delete_apps(prefix)


async def test_conversation_with_fakes_on_serve_replicas(ray_server: Any) -> None:
    server = await ray_server(
        llm={
            "provider": "fake",
            "options": {"reply": "Hi. From Ray."},
            "ray": {"replicas": 2, "num_cpus": 0.25},
        },
        tts={"provider": "fake", "ray": {"autoscaling": {"min_replicas": 1, "max_replicas": 2}}},
    )
    asr, llm, tts = (getattr(server.providers, r.value) for r in (Role.ASR, Role.LLM, Role.TTS))
    pids = {(await b.describe())["pid"] for b in (asr, llm, tts)}
    assert os.getpid() not in pids
    llm_pids = set()
    for _ in range(40):  # Serve routes each request to one of the two LLM replicas
        llm_pids.add((await llm.describe())["pid"])
        if len(llm_pids) == 2:
            break
    assert len(llm_pids) == 2
    # another gateway (or worker) with the same config attaches to the running
    # application instead of deploying it again (which would restart its replicas)
    from xiaozhi_core.ray_serve import deploy

    choice = server.config.asr
    assert choice.placement is not None
    again = await deploy(choice.spec, choice.options, choice.placement, server.executor)
    assert (await again.describe())["pid"] == (await asr.describe())["pid"] in pids
    assert type(server.providers.vad).__name__ == "BoundProvider"  # VAD stays local
    async with FakeDevice(server.ws_url) as dev:
        await speak_and_wait(dev)
    assert dev.messages("stt")[0]["text"] == "hello"
    subtitles = [m["text"] for m in dev.messages("tts") if m["state"] == "sentence_start"]
    assert subtitles == ["Hi.", "From Ray."]
    assert dev.audio_frames()
    assert (await asr.describe())["calls"] >= 1
    assert (await tts.describe())["items_streamed"] >= 2  # one replica: it spoke both


async def test_cancelling_a_remote_stream_stops_the_replica_generator(ray_server: Any) -> None:
    reply = " ".join(f"w{i}" for i in range(60))
    server = await ray_server(
        llm={"provider": "fake", "options": {"reply": reply, "token_delay": 0.1}}
    )
    llm = server.providers.llm
    got: list[str] = []

    async def consume() -> None:
        async for token in llm.chat([Message("user", "go")]):
            got.append(token)

    task = asyncio.ensure_future(consume())
    async with asyncio.timeout(20):
        while len(got) < 3:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert (await llm.describe())["streams_open"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(10):
        while (info := await llm.describe())["streams_open"]:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert info["streams_cancelled"] == 1
    assert info["items_streamed"] < 20  # 60 tokens at 0.1 s: stopped early


async def test_killed_replica_alert_apology_then_next_turn_works(ray_server: Any) -> None:
    server = await ray_server(
        llm={"provider": "fake", "options": {"reply": "Fine.", "first_token_delay": 3}}
    )
    llm = server.providers.llm
    victim = (await llm.describe())["pid"]
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("start", "auto")
        await dev.stream(utterance())
        await dev.wait_for("stt", timeout=20)
        os.kill(victim, signal.SIGKILL)
        alert = await dev.wait_for("alert", timeout=20)
        apology = server.session_host.profiles.current.default.apology_for(None)
        assert alert["message"] == apology
        await dev.wait_for("tts", "stop", timeout=20)
        assert dev.audio_frames()  # the pre-synthesised apology
        assert [m["text"] for m in dev.messages("tts") if m["state"] == "sentence_start"] == [
            apology
        ]
        # Serve replaces the replica; the next turn is answered by the new one
        async with asyncio.timeout(60):
            while True:
                try:
                    if (await llm.describe())["pid"] != victim:
                        break
                except Exception:
                    pass
                await asyncio.sleep(0.5)
        n = len(dev.messages("alert"))
        await speak_and_wait(dev)
        assert len(dev.messages("alert")) == n
        assert [m["text"] for m in dev.messages("tts") if m["state"] == "sentence_start"][
            -1
        ] == "Fine."


async def test_offline_default_on_serve_replicas(tmp_path: Path) -> None:
    """configs/default.yaml with whisper, llama.cpp and espeak as Serve replicas."""
    from xiaozhi_espeak.plugin import EspeakOptions
    from xiaozhi_espeak.tts import EspeakTTS

    speech = EspeakTTS(EspeakOptions(voice="en-us", rate=150, sample_rate=16000))
    pcm = np.frombuffer(b"".join(speech.synthesize("What is the capital of France?")), np.int16)
    audio = np.concatenate([np.zeros(8000, np.int16), pcm, np.zeros(24000, np.int16)])
    override = tmp_path / "ray.yaml"
    override.write_text(
        "server: {port: 0, http_port: 0, limits: {max_loop_lag_ms: 0}}\n"
        "executor: {kind: ray, ray: {app_prefix: offline}}\n"
    )
    config = load_config(
        [ROOT / "configs" / "default.yaml", override], default_registry(), auto_local=False
    )
    assert {r.value for r, c in config.choices().items() if c.placement} == {"asr", "llm", "tts"}
    server = await XiaozhiServer.create(config)
    await server.start()
    try:
        infos = {
            r.value: await getattr(server.providers, r.value).describe()
            for r in (Role.ASR, Role.LLM, Role.TTS)
        }
        assert all(i["pid"] != os.getpid() for i in infos.values())
        async with FakeDevice(server.ws_url) as dev:
            await dev.listen("start", "auto")
            await dev.stream(encode_utterance(audio), realtime=True)
            await dev.wait_for("tts", "stop", timeout=120)
        # whisper declares 'batch': concurrent utterances meet in one @serve.batch call
        asr = server.providers.asr
        assert infos["asr"]["batch"] == ["transcribe"]
        texts = await asyncio.gather(*(asr.transcribe(audio) for _ in range(4)))
        assert len({t.text for t in texts}) == 1
        assert max((await asr.describe())["batches"]) > 1
    finally:
        await server.stop()
        delete_apps("offline")
    stt = dev.messages("stt")[0]["text"].lower()
    assert "capital" in stt and "france" in stt, stt
    assert len(dev.decode_reply_audio()) > 24000 * 0.5
    print("replica pids:", {k: v["pid"] for k, v in infos.items()}, "server", os.getpid())
