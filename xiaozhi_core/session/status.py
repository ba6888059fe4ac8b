"""What a live session looks like from outside, for the operator console
(``GET /api/v1/sessions``): read from attributes the session keeps anyway, so asking
costs a few attribute reads and never touches the audio path.

``state`` is ``connecting`` (no hello yet), ``idle``, ``listening``, or the stage of the
current turn: ``recognising`` (ASR), ``thinking`` (waiting for the LLM's first token),
``synthesising`` (waiting for the first TTS audio or frame), ``speaking`` (frames going
out), or ``closed``.

Example:
    >>> from xiaozhi_core.session.latency import TurnLatency
    >>> lat = TurnLatency(turn_id=3, kind="voice", end_of_speech=10.0)
    >>> turn_stage(lat)
    'recognising'
    >>> lat.asr_final = 10.3
    >>> turn_stage(lat)
    'thinking'
    >>> lat.llm_first_token, lat.first_frame_sent = 10.6, 10.9
    >>> turn_stage(lat)
    'speaking'
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .latency import TurnLatency

if TYPE_CHECKING:
    from .session import Session

__all__ = ["session_status", "turn_stage"]


def turn_stage(latency: TurnLatency) -> str:
    """The stage a running turn is in, from the milestones it has reached."""
    if latency.first_frame_sent is not None:
        return "speaking"
    if latency.kind == "voice" and latency.asr_final is None:
        return "recognising"
    if latency.kind in ("voice", "text") and latency.llm_first_token is None:
        return "thinking"
    return "synthesising"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def session_status(session: Session, now: float | None = None) -> dict[str, object]:
    """A JSON-ready summary of ``session`` (see the module docstring for ``state``)."""
    mono = time.monotonic() if now is None else now
    turn = session.turn
    task = session.turn_task
    running = turn is not None and task is not None and not task.done()
    if session.closed:
        state = "closed"
    elif session.hello is None:
        state = "connecting"
    elif running and turn is not None:
        state = turn_stage(turn.latency)
    else:
        state = "listening" if session.listening else "idle"
    current = None
    if running and turn is not None:
        current = {
            "id": turn.id,
            "kind": turn.latency.kind,
            "stage": state,
            "elapsed_ms": _ms(mono - turn.latency.end_of_speech),
        }
    lane = session.lane
    peer = session.device
    last = session.latencies[-1] if session.latencies else None
    return {
        "session_id": session.session_id,
        "device_id": peer.device_id,
        "client_id": peer.client_id,
        "remote": peer.remote,
        "transport": session.transport.kind,
        "protocol_version": session.protocol_version,
        "profile": session.profile.name,
        "connected_at": round(session.started_at, 3),
        "state": state,
        "listen_mode": session.listen_mode,
        "speaker": session.speaker,
        "turn": current,
        "turns": session.turn_seq,
        "last_turn": last,
        "lane": {
            "lag_ms": _ms(lane.lag_last),
            "lag_max_ms": _ms(lane.lag_max),
            "queued": lane.queue.qsize(),
            "frames_in": lane.frames_in,
            "frames_processed": lane.frames_processed,
            "frames_lost": lane.frames_lost,
        },
    }
