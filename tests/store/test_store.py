"""The Store on SQLite and PostgreSQL: what the batched writer records is what the
reads return; profiles, memory, voiceprints, pruning, and the limits (clipping, a full
queue, a closed store)."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest

from xiaozhi_core.store import Store, StoreError, StoreSettings

DEV = "aa:bb:cc:dd:ee:01"


def _turn(
    store: Store,
    n: int,
    *,
    text: str | None = "hello",
    reply: str | None = "hi!",
    outcome: str = "ok",
    kind: str = "voice",
    at: float | None = None,
    session: str = "s-1",
    device: str = DEV,
    **extra: object,
) -> None:
    store.turn_recorded(
        session_id=session,
        device_id=device,
        turn=n,
        kind=kind,
        outcome=outcome,
        text=text,
        reply=reply,
        at=at,
        latency={
            "turn": n,
            "kind": kind,
            "asr_final_ms": 120.5,
            "total_ms": 900.0 + n,
            "error": None,
        },
        **extra,
    )  # type: ignore[arg-type]


async def test_recorded_events_are_written_in_batches_and_read_back(store: Store) -> None:
    t0 = time.time() - 60
    store.device_seen(DEV, client_id="c-1", board="bread-compact-wifi", firmware="1.6.2", at=t0)
    store.device_seen(DEV, at=t0 + 10)  # a connection: reports no board, keeps it
    store.session_started("s-1", DEV, transport="websocket", at=t0 + 10)
    for n in range(1, 6):
        _turn(
            store,
            n,
            text=f"question {n}",
            reply=f"answer {n}",
            at=t0 + 10 + n,
            speaker="alice" if n == 2 else None,
        )
    _turn(store, 6, outcome="failed", text="broken", reply=None, error="llm timed out")
    store.session_ended("s-1", reason="idle timeout", at=t0 + 30)
    assert store.stats.recorded == 10 and store.stats.written == 0  # nothing awaited yet
    assert await store.flush()
    stats = store.stats
    assert (stats.written, stats.dropped, stats.failed, stats.queue_depth) == (10, 0, 0, 0)
    assert stats.batches >= 1 and 0 < stats.batch_seconds_max <= stats.batch_seconds_total

    [device] = await store.list_devices()
    assert device == await store.get_device(DEV)
    assert (device.client_id, device.board, device.firmware, device.profile) == (
        "c-1",
        "bread-compact-wifi",
        "1.6.2",
        None,
    )
    assert device.first_seen == dt.datetime.fromtimestamp(t0, dt.UTC)
    assert device.last_seen > device.first_seen and device.last_seen.tzinfo is not None

    [session] = await store.device_sessions(DEV)
    assert (session.id, session.transport, session.close_reason) == (
        "s-1",
        "websocket",
        "idle timeout",
    )
    assert session.ended is not None and session.ended > session.started

    turns = await store.device_turns(DEV, limit=50)
    assert [t.turn_no for t in turns] == [6, 5, 4, 3, 2, 1]  # newest first
    assert turns[0].outcome == "failed" and turns[0].error == "llm timed out"
    second = turns[4]
    assert (second.text, second.reply, second.speaker) == ("question 2", "answer 2", "alice")
    assert second.latency == {
        "turn": 2,
        "kind": "voice",
        "asr_final_ms": 120.5,
        "total_ms": 902.0,
        "error": None,
    }
    page = await store.device_turns(DEV, limit=2, before=turns[1].id)
    assert [t.turn_no for t in page] == [4, 3]
    assert await store.get_device("ff:ff:ff:ff:ff:ff") is None


async def test_recent_turns_fit_the_budget_oldest_first(store: Store) -> None:
    store.session_started("s-1", DEV, transport="websocket")
    for n in range(1, 5):
        _turn(store, n, text="q" * 10, reply=f"a{n}" + "a" * 8)  # 20 characters a turn
    _turn(store, 5, text=None, reply="Hi, I'm listening.", kind="greeting")
    _turn(store, 6, text="lost", reply=None, outcome="failed")
    _turn(store, 1, device="other", text="not mine")
    assert await store.flush()
    recent = await store.recent_turns(DEV, max_chars=45)
    assert [t.turn_no for t in recent] == [3, 4]
    assert [t.reply[:2] for t in recent if t.reply] == ["a3", "a4"]
    assert len(await store.recent_turns(DEV, max_chars=10_000)) == 4
    # the newest turn alone is over the budget: still given (as in-session memory)
    assert [t.turn_no for t in await store.recent_turns(DEV, max_chars=5)] == [4]
    assert await store.recent_turns("nobody", max_chars=100) == []


async def test_transcripts_off_keeps_no_text(settings: StoreSettings) -> None:
    settings.transcripts = False
    async with Store(settings) as store:
        _turn(store, 1, text="my secret", reply="noted", speaker="bob")
        assert await store.flush()
        [turn] = await store.device_turns(DEV)
        assert (turn.text, turn.reply, turn.speaker, turn.outcome) == (None, None, "bob", "ok")
        assert turn.latency is not None and turn.latency["total_ms"] == 901.0


async def test_profiles_and_memory(store: Store) -> None:
    store.device_seen(DEV)
    assert await store.flush()
    assert await store.device_profile(DEV) is None
    assert await store.set_profile(DEV, "kids") is True
    assert await store.device_profile(DEV) == "kids"
    assert (await store.get_device(DEV)).profile == "kids"  # type: ignore[union-attr]
    assert await store.set_profile("12:34:56:78:9a:bc", "kids") is False
    assert await store.get_device("12:34:56:78:9a:bc") is None
    assert await store.set_profile("12:34:56:78:9a:bc", "guests", create=True) is True
    assert await store.device_profile("12:34:56:78:9a:bc") == "guests"
    assert await store.set_profile(DEV, None) is True
    assert await store.device_profile(DEV) is None
    # a later device_seen does not undo the mapping
    await store.set_profile(DEV, "kids")
    store.device_seen(DEV, firmware="1.7.0")
    assert await store.flush()
    assert await store.device_profile(DEV) == "kids"

    assert await store.get_memory(DEV) is None
    await store.set_memory(DEV, "summary", "Likes dinosaurs. Named Mia.")
    await store.set_memory(DEV, "summary", "Likes dinosaurs and trains. Named Mia.")
    await store.set_memory(DEV, "facts", "lives in Hangzhou")
    assert await store.get_memory(DEV) == "Likes dinosaurs and trains. Named Mia."
    assert await store.get_memory(DEV, "facts") == "lives in Hangzhou"


async def test_voiceprint_round_trip(store: Store) -> None:
    rng = np.random.default_rng(1)
    alice, bob = (rng.standard_normal(256).astype(np.float32) for _ in range(2))
    await store.save_voiceprint("alice", "resemblyzer-v1", alice.tobytes())
    await store.save_voiceprint("bob", "resemblyzer-v1", bob.tobytes())
    await store.save_voiceprint("alice", "other-model", b"\x00\x01\x02")
    refined = (alice * 0.5).astype(np.float32)
    await store.save_voiceprint("alice", "resemblyzer-v1", refined.tobytes(), samples=2)

    prints = await store.load_voiceprints("resemblyzer-v1")
    assert [(p.name, p.samples) for p in prints] == [("alice", 2), ("bob", 1)]
    assert np.array_equal(np.frombuffer(prints[0].embedding, np.float32), refined)
    assert np.array_equal(np.frombuffer(prints[1].embedding, np.float32), bob)
    assert prints[0].updated >= prints[0].created
    assert len(await store.load_voiceprints()) == 3

    assert await store.remove_voiceprint("alice", "other-model") == 1
    assert await store.remove_voiceprint("alice") == 1
    assert await store.remove_voiceprint("alice") == 0
    assert [p.name for p in await store.load_voiceprints()] == ["bob"]


async def test_prune_deletes_old_turns_and_sessions(store: Store) -> None:
    old, new = time.time() - 40 * 86400, time.time() - 3600
    store.session_started("old-session", DEV, transport="websocket", at=old)
    store.session_started("new-session", DEV, transport="websocket", at=new)
    for n in range(3):
        _turn(store, n, session="old-session", at=old + n)
        _turn(store, n, session="new-session", at=new + n)
    assert await store.flush()
    assert (await store.prune(0)).as_dict() == {"turns": 0, "sessions": 0}  # 0: keep all
    assert (await store.prune(60)).as_dict() == {"turns": 0, "sessions": 0}
    result = await store.prune(30)
    assert (result.turns, result.sessions) == (3, 1)
    assert {t.session_id for t in await store.device_turns(DEV)} == {"new-session"}
    assert [s.id for s in await store.device_sessions(DEV)] == ["new-session"]
    assert await store.get_device(DEV) is not None  # devices are kept
    assert (await store.prune()).turns == 0  # the default, retention_days = 90


async def test_device_supplied_strings_are_clipped_not_refused(store: Store) -> None:
    store.device_seen(DEV, board="b" * 500 + "\x00", firmware="1.0\x00-evil", client_id="c" * 100)
    _turn(store, 1, text="nul\x00inside " + "x" * 20000, reply="ok", speaker="s" * 300)
    store.device_seen("", board="ignored")  # no id: nothing to record
    assert await store.flush()
    assert store.stats.failed == 0 and store.stats.written == 2
    device = await store.get_device(DEV)
    assert device is not None
    assert (len(device.board or ""), device.firmware, len(device.client_id or "")) == (
        128,
        "1.0-evil",
        64,
    )
    [turn] = await store.device_turns(DEV)
    assert turn.text is not None and turn.text.startswith("nulinside ")
    assert len(turn.text) == 16000 and len(turn.speaker or "") == 128


async def test_a_full_queue_drops_and_counts(settings: StoreSettings) -> None:
    settings.batch_size, settings.queue_bound = 10, 10
    async with Store(settings) as store:
        start = time.perf_counter()
        for n in range(25):  # no await in between: the writer cannot run
            _turn(store, n)
        assert time.perf_counter() - start < 0.5  # never waits (a loaded CI box: not 50 ms)
        assert (store.stats.recorded, store.stats.dropped) == (10, 15)
        assert await store.flush()
        assert store.stats.written == 10
        assert len(await store.device_turns(DEV)) == 10


async def test_closed_or_unopened_store(settings: StoreSettings) -> None:
    store = Store(settings)
    _turn(store, 1)  # not open: dropped and counted, no error
    assert store.stats.dropped == 1
    assert await store.recent_turns(DEV, 100) == []
    with pytest.raises(StoreError, match="not open"):
        await store.list_devices()
    await store.open()
    _turn(store, 2)
    await store.close()  # writes what is queued
    assert (store.stats.written, store.stats.lost_on_close) == (1, 0)
    _turn(store, 3)
    assert store.stats.dropped == 2


async def test_an_event_the_database_refuses_costs_only_itself(store: Store) -> None:
    _turn(store, 1)
    _turn(store, 2**70)  # out of every backend's integer range
    _turn(store, 3)
    assert await store.flush()
    assert (store.stats.written, store.stats.failed, store.stats.retries) == (2, 1, 0)
    assert [t.turn_no for t in await store.device_turns(DEV)] == [3, 1]


async def test_session_turns_and_the_prometheus_export(store: Store) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from xiaozhi_core.store import StoreCollector

    for n in (1, 2, 3):
        _turn(store, n, session="s-a")
    _turn(store, 1, session="s-b")
    assert await store.flush()
    assert [t.turn_no for t in await store.session_turns("s-a")] == [1, 2, 3]
    assert await store.session_turns("nope") == []

    registry = CollectorRegistry()
    registry.register(StoreCollector(store.stats))
    text = generate_latest(registry).decode()
    assert 'xiaozhi_store_events_total{outcome="written"} 4.0' in text
    assert 'xiaozhi_store_events_total{outcome="dropped"} 0.0' in text
    assert "xiaozhi_store_queue_depth 0.0" in text
    assert "xiaozhi_store_batches_total" in text
