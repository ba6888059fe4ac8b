"""The device store, profiles, reload and memory, end to end: real servers on the fake
providers, real WebSockets, a real SQLite file or a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.store.pgserver import PostgresServer
from xiaozhi_core.config import _validate, load_config, merge
from xiaozhi_core.device import FakeDevice
from xiaozhi_core.errors import ConfigError
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.hookspecs import hookimpl
from xiaozhi_core.providers import ProviderSpec
from xiaozhi_core.registry import default_registry
from xiaozhi_core.store import Store, StoreSettings
from xiaozhi_core.types import Message, Recall

DEV = "aa:bb:cc:00:00:01"
BASE: dict[str, Any] = {
    "server": {"limits": {"max_loop_lag_ms": 0}},
    "llm": {"provider": "fake", "options": {"reply": "Nice to meet you."}},
}


def store_section(backend: str, tmp_path: Path, pg: PostgresServer | None) -> dict[str, Any]:
    if backend == "sqlite":
        return {"data_dir": str(tmp_path / "data"), "flush_interval": 0.05}
    assert pg is not None
    return {"url": pg.create_database(), "flush_interval": 0.05, "read_timeout": 1.0}


_REGISTRY: list[Any] = []


def config(**sections: Any) -> Any:
    """fake_config with every installed plugin (the memory providers too)."""
    if not _REGISTRY:
        _REGISTRY.append(default_registry())
    raw = merge(
        {
            "server": {"host": "127.0.0.1", "port": 0, "http_port": 0},
            "vad": {"provider": "fake"},
            "asr": {"provider": "fake"},
            "llm": {"provider": "fake"},
            "tts": {"provider": "fake"},
        },
        BASE,
    )
    return _validate(merge(raw, sections), _REGISTRY[0], ["<test>"])


async def start(**sections: Any) -> XiaozhiServer:
    server = await XiaozhiServer.create(config(**sections))
    await server.start(port=0, http_port=0)
    return server


async def say(server: XiaozhiServer, text: str, device: str = DEV) -> FakeDevice:
    """One text turn, answered to the end; returns the (closed) device."""
    dev = FakeDevice(server.ws_url, device_id=device)
    await dev.connect()
    try:
        await dev.listen("detect", text=text)
        await dev.wait_for("tts", "stop", timeout=20)
    finally:
        await dev.close()
    for _ in range(200):  # the server records the session's end after the close
        if not server.sessions:
            break
        await asyncio.sleep(0.02)
    return dev


def llm_requests(server: XiaozhiServer) -> list[Any]:
    return server.providers.llm.instance.requests


def last_prompt(server: XiaozhiServer) -> str:
    messages = llm_requests(server)[-1][0]
    return "\n".join(f"{m.role}: {m.content}" for m in messages)


async def read_store(section: dict[str, Any]) -> Store:
    store = Store(StoreSettings(**section))
    await store.open()
    return store


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pg(backend: str, request: pytest.FixtureRequest) -> PostgresServer | None:
    return request.getfixturevalue("pg_server") if backend == "postgresql" else None


@pytest.mark.slow
async def test_rows_survive_a_restart_and_the_next_session_gets_its_history(
    backend: str, pg: PostgresServer | None, tmp_path: Path
) -> None:
    section = store_section(backend, tmp_path, pg)
    server = await start(store=section, memory={"provider": "history"})
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{server.http_port}/xiaozhi/ota/",
                json={"application": {"version": "1.6.3"}, "board": {"type": "esp-box"}},
                headers={"Device-Id": DEV.upper()},
            ) as r,
        ):
            assert r.status == 200
        await say(server, "my name is Ann")
    finally:
        await server.stop()

    store = await read_store(section)
    try:
        device = await store.get_device(DEV)
        assert device is not None and (device.board, device.firmware) == ("esp-box", "1.6.3")
        sessions = await store.device_sessions(DEV)
        assert len(sessions) == 1 and sessions[0].ended is not None
        assert sessions[0].transport == "websocket" and sessions[0].close_reason
        turns = await store.device_turns(DEV)
        assert [(t.kind, t.text, t.reply, t.outcome) for t in turns] == [
            ("text", "my name is Ann", "Nice to meet you.", "ok")
        ]
        assert turns[0].latency is not None and "total_ms" in turns[0].latency
    finally:
        await store.close()

    server = await start(store=section, memory={"provider": "history"})  # "restarted"
    try:
        await say(server, "what is my name?")
        prompt = last_prompt(server)
        assert "user: my name is Ann\nassistant: Nice to meet you." in prompt
        assert prompt.endswith("user: what is my name?")
    finally:
        await server.stop()


@pytest.mark.slow
async def test_summary_written_after_a_session_is_used_in_the_next(tmp_path: Path) -> None:
    section = store_section("sqlite", tmp_path, None)
    memory = {"provider": "summary", "options": {"history_chars": 0}}
    server = await start(
        store=section,
        memory=memory,
        llm={"options": {"reply": "The user is Ann and likes green tea."}},
    )
    try:
        await say(server, "I am Ann and I like green tea")
        assert server.store is not None
        for _ in range(300):
            note = await server.store.get_memory(DEV, "summary")
            if note:
                break
            await asyncio.sleep(0.05)
        assert note == "The user is Ann and likes green tea."
        # the summary request saw the conversation
        summary_request = "\n".join(m.content for m in llm_requests(server)[-1][0])
        assert "User: I am Ann and I like green tea" in summary_request
        before = len(llm_requests(server))
        await say(server, "what do I like?")
        turn_request = llm_requests(server)[before][0]  # (then comes this session's summary)
        system = turn_request[0]
        assert system.role == "system"
        assert "remember about this user" in system.content
        assert "likes green tea" in system.content
        # history_chars 0: the note only, no earlier turns in the messages
        assert [m.role for m in turn_request] == ["system", "user"]
    finally:
        await server.stop()


@pytest.mark.slow
async def test_a_failing_summary_never_touches_the_session(tmp_path: Path) -> None:
    section = store_section("sqlite", tmp_path, None)
    server = await start(
        store=section, memory={"provider": "summary"}, llm={"options": {"fail_after": 3}}
    )
    try:
        dev = await say(server, "hello there")  # the turn itself fails after 3 tokens...
        assert dev.wait_for  # the session ended normally
        await asyncio.sleep(0.5)  # ...and so does the summary: logged only
        assert server.store is not None
        assert await server.store.get_memory(DEV, "summary") is None
        assert not server._background
    finally:
        await server.stop()


@pytest.mark.slow
async def test_two_servers_sharing_one_store_see_the_same_devices(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    section = store_section("postgresql", tmp_path, pg_server)
    one, two = await start(store=section), await start(store=section)
    try:
        await asyncio.gather(
            say(one, "hi from one", "aa:00:00:00:00:01"),
            say(two, "hi from two", "aa:00:00:00:00:02"),
        )
        for server in (one, two):
            assert server.store is not None
            await server.store.flush()
        for server in (one, two):
            assert server.store is not None
            ids = {d.device_id for d in await server.store.list_devices()}
            assert ids == {"aa:00:00:00:00:01", "aa:00:00:00:00:02"}
        # a profile set through one server reaches a session on the other
        await one.set_device_profile("aa:00:00:00:00:02", None)
    finally:
        await one.stop()
        await two.stop()


def write(path: Path, text: str, extra: str = "") -> Path:
    path.write_text(textwrap.dedent(text) + extra)
    return path


DEPLOYMENT = """\
    server: {{host: 127.0.0.1, port: 0, http_port: 0, limits: {{max_loop_lag_ms: 0}}}}
    store: {{data_dir: "{data}", flush_interval: 0.05}}
    vad: {{provider: fake}}
    asr: {{provider: fake}}
    llm: {{provider: fake}}
    tts: {{provider: fake}}
    session: {{system_prompt: "DEFAULT PROMPT"}}
    profiles:
      kids:
        system_prompt: "{kids}"
        voice: soft
        reply_chars: 10
        llm: {{temperature: 0.1}}
        tts: {{speed: 0.8}}
    devices:
      "ff:ff:00:00:00:09": kids
"""


@pytest.mark.slow
async def test_profile_mapping_and_reload_change_the_next_turn(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = write(tmp_path / "x.yaml", DEPLOYMENT.format(data=data, kids="KIDS ONE"))
    registry = default_registry()
    server = await XiaozhiServer.create(load_config([path], registry, auto_local=False), registry)
    await server.start()
    tts = server.providers.tts.instance
    llm = server.providers.llm.instance
    try:
        await say(server, "hello")
        assert "DEFAULT PROMPT" in last_prompt(server)
        assert llm.request_options[-1] is None and tts.requests[-1] == (None, None)

        with pytest.raises(ConfigError, match="unknown profile 'nope'"):
            await server.set_device_profile(DEV, "nope")
        await server.set_device_profile(DEV, "kids")
        assert server.store is not None
        assert await server.store.device_profile(DEV) == "kids"
        await say(server, "hello again")
        assert "KIDS ONE" in last_prompt(server)
        assert llm.request_options[-1].temperature == 0.1
        assert tts.requests[-1][0] == "soft" and tts.requests[-1][1].speed == 0.8
        # reply_chars 10: "Hello!" + " How can I help?" stops after the first sentence
        turns = await server.store.device_turns(DEV, limit=1)
        await server.store.flush()
        turns = await server.store.device_turns(DEV, limit=1)
        assert turns[0].reply == "Hello! How can I help?"[: len(turns[0].reply or "")]

        write(path, DEPLOYMENT.format(data=data, kids="KIDS TWO"))
        lines = server.reload_config()
        assert "1 profile(s)" in lines[0]
        await say(server, "and now?")
        assert "KIDS TWO" in last_prompt(server)

        write(path, DEPLOYMENT.format(data=data, kids="KIDS THREE"), "bogus: 1\n")
        with pytest.raises(ConfigError) as refused:
            server.reload_config()
        assert refused.value.path == "bogus" and refused.value.file == str(path)
        write(
            path,
            DEPLOYMENT.format(data=data, kids="KIDS THREE").replace(
                "voice: soft", "voice: soft\n        server_tools: [no_such_tool]"
            ),
        )
        with pytest.raises(ConfigError) as refused:
            server.reload_config()
        assert refused.value.path == "profiles.kids.server_tools"
        await say(server, "still there?")
        assert "KIDS TWO" in last_prompt(server)  # the running config stayed

        # devices: in YAML maps a device the store has no profile for
        await say(server, "who am I?", device="FF:FF:00:00:00:09")
        assert "KIDS TWO" in last_prompt(server)
    finally:
        await server.stop()


@pytest.mark.slow
async def test_a_store_that_goes_down_costs_no_turn(tmp_path: Path) -> None:
    pg = PostgresServer()
    pg.start()
    try:
        section = {
            "url": pg.create_database(),
            "flush_interval": 0.05,
            "read_timeout": 0.5,
            "connect_timeout": 1.0,
        }
        server = await start(store=section, memory={"provider": "history"})
        try:
            await say(server, "before the outage")
            assert server.store is not None
            assert await server.store.flush(5)
            pg.stop()
            for i in range(3):  # turns go on: no alert, a reply each time
                dev = await say(server, f"during the outage {i}")
                assert not dev.messages("alert")
                assert dev.messages("stt")[0]["text"] == f"during the outage {i}"
            assert not await server.store.flush(0.5)  # queued, not written
            pg.start()
            assert await server.store.flush(20)
            turns = await server.store.device_turns(DEV)
            assert [t.text for t in turns][::-1] == [
                "before the outage",
                "during the outage 0",
                "during the outage 1",
                "during the outage 2",
            ]
            assert server.store.stats.retries > 0
        finally:
            await server.stop()
    finally:
        pg.destroy()


async def test_transcripts_off_keeps_no_text(tmp_path: Path) -> None:
    section = {**store_section("sqlite", tmp_path, None), "transcripts": False}
    server = await start(store=section)
    try:
        await say(server, "a secret")
        assert server.store is not None
        await server.store.flush()
        turns = await server.store.device_turns(DEV)
        assert [(t.text, t.reply, t.outcome) for t in turns] == [(None, None, "ok")]
        metrics = server.render_metrics().decode()  # StoreCollector on the registry
        assert 'xiaozhi_store_events_total{outcome="written"} 3.0' in metrics
    finally:
        await server.stop()


async def test_one_log_line_per_turn_with_device_text_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="xiaozhi_core.session.session")
    server = await start(store={"enabled": False})
    try:
        await say(server, "tell me " + "very " * 600 + "long", device="aa:bb:cc:00:00:0a")
    finally:
        await server.stop()
    lines = [r for r in caplog.records if r.getMessage().startswith("turn ")]
    assert len(lines) == 1
    turn = lines[0].turn  # type: ignore[attr-defined]
    assert (turn["device"], turn["profile"], turn["outcome"], turn["kind"]) == (
        "aa:bb:cc:00:00:0a",
        "default",
        "ok",
        "text",
    )
    assert turn["reply"] == "Nice to meet you." and "total_ms" in turn["latency"]
    assert turn["text"].startswith("tell me very") and turn["text"].endswith("chars)")
    assert len(turn["text"]) < 530 and len(lines[0].getMessage()) < 600


class BlockingMemory:
    """A ``cpu`` memory provider: its calls block in the pool, its DeviceMemory too."""

    calls: list[str] = []

    def __init__(self, options: Any) -> None:
        pass

    def recall(self, memory: Any) -> Recall:
        BlockingMemory.calls.append(f"recall {memory.device_id}")
        pairs = memory.history(1000)
        return Recall(
            memory.note("cpu") or "",
            [Message(r, t) for u, a in pairs for r, t in (("user", u), ("assistant", a))],
        )

    def consolidate(self, memory: Any) -> None:
        pairs = memory.session_history()
        memory.save_note("cpu", f"{len(pairs)} exchanges, last: {pairs[-1][0]}")
        BlockingMemory.calls.append("consolidate")


class CpuMemoryPlugin:
    @hookimpl
    def xiaozhi_providers(self) -> list[ProviderSpec]:
        return [
            ProviderSpec(
                role="memory",
                name="blocking",
                execution="cpu",
                factory=BlockingMemory,
                capabilities={"consolidate"},
            )
        ]


@pytest.mark.slow
async def test_a_cpu_memory_provider_gets_a_blocking_device_memory(tmp_path: Path) -> None:
    registry = default_registry()
    registry.register(CpuMemoryPlugin())
    raw = merge(
        config().raw,
        {"store": store_section("sqlite", tmp_path, None), "memory": {"provider": "blocking"}},
    )
    server = await XiaozhiServer.create(_validate(raw, registry, ["<test>"]))
    await server.start(port=0, http_port=0)
    try:
        await say(server, "first words")
        assert server.store is not None
        for _ in range(200):
            if await server.store.get_memory(DEV, "cpu"):
                break
            await asyncio.sleep(0.05)
        assert await server.store.get_memory(DEV, "cpu") == "1 exchanges, last: first words"
        await say(server, "second words")
        prompt = last_prompt(server)
        assert "1 exchanges, last: first words" in prompt
        assert "user: first words\nassistant: Nice to meet you." in prompt
        assert BlockingMemory.calls[:3] == [f"recall {DEV}", "consolidate", f"recall {DEV}"]
    finally:
        await server.stop()


@pytest.mark.slow
def test_a_simulate_conversation_leaves_device_session_and_turn_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.sim.conftest import SECTIONS, ThreadedServer, write_test_wav
    from xiaozhi_core.cli import main

    section = store_section("sqlite", tmp_path, None)
    ts = ThreadedServer(**merge(SECTIONS, {"store": section}))
    with ts as server:
        wav = write_test_wav(tmp_path / "q.wav")
        code = main(
            [
                "simulate",
                "--ota",
                server.ota_url,
                "--wav",
                str(wav),
                "--turns",
                "2",
                "--device-id",
                "aa:bb:cc:00:00:5e",
                "--timeout",
                "20",
            ]
        )
        assert code == 0, capsys.readouterr().out
    store = asyncio.run(_rows(section, "aa:bb:cc:00:00:5e"))
    device, sessions, turns = store
    assert device is not None and device.firmware  # simulate's OTA reports a version
    assert len(sessions) == 1 and sessions[0].ended is not None
    assert [(t.kind, t.text, t.reply, t.outcome) for t in turns][::-1] == [
        ("voice", "what time is it", "It is noon. Anything else?", "ok")
    ] * 2
    assert all(t.latency and t.latency["first_frame_sent_ms"] > 0 for t in turns)


async def _rows(section: dict[str, Any], device: str) -> tuple[Any, Any, Any]:
    store = await read_store(section)
    try:
        return (
            await store.get_device(device),
            await store.device_sessions(device),
            await store.device_turns(device),
        )
    finally:
        await store.close()
