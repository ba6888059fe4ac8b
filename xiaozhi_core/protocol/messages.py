"""JSON messages between device and server (text frames).

Parsing is strict about shape (an object with a string ``type``) and tolerant about
everything else: missing optional fields get defaults, unknown fields are kept.

Example:
    >>> parse_message('{"type":"listen","state":"start","mode":"auto"}')["mode"]
    'auto'
    >>> try:
    ...     parse_message('[1,2]')
    ... except ProtocolError as exc:
    ...     print(exc)
    message must be a JSON object with a string "type", got list
    >>> server_hello("s1", 24000, 60)["transport"]
    'websocket'
"""

from __future__ import annotations

import json
import re

__all__ = [
    "EMOTIONS",
    "ProtocolError",
    "alert",
    "dumps",
    "llm_emotion",
    "mcp",
    "parse_message",
    "server_hello",
    "stt",
    "tts",
]

#: Emotions the firmware knows (``llm`` message); anything else shows as neutral.
EMOTIONS = (
    "neutral",
    "happy",
    "laughing",
    "funny",
    "sad",
    "angry",
    "crying",
    "loving",
    "embarrassed",
    "surprised",
    "shocked",
    "thinking",
    "winking",
    "cool",
    "relaxed",
    "delicious",
    "kissy",
    "confident",
    "sleepy",
    "silly",
    "confused",
)

_EMOJI = {
    "neutral": "😶",
    "happy": "🙂",
    "laughing": "😆",
    "funny": "😂",
    "sad": "😔",
    "angry": "😠",
    "crying": "😭",
    "loving": "😍",
    "embarrassed": "😳",
    "surprised": "😯",
    "shocked": "😱",
    "thinking": "🤔",
    "winking": "😉",
    "cool": "😎",
    "relaxed": "😌",
    "delicious": "🤤",
    "kissy": "😘",
    "confident": "😏",
    "sleepy": "😴",
    "silly": "😜",
    "confused": "🙄",
}


class ProtocolError(ValueError):
    """A text frame that is not a valid protocol message."""


#: A JSON escape of a UTF-16 surrogate (``\\ud800``..``\\udfff``).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def _sanitise(value: object) -> object:
    """``value`` with every lone surrogate in its strings replaced by U+FFFD (a device can
    send ``"\\ud800"``; echoing it back would fail to encode and drop the connection)."""
    if isinstance(value, str):
        return _SURROGATES.sub("\ufffd", value)
    if isinstance(value, dict):
        return _sanitise_object(value)
    if isinstance(value, list):
        return [_sanitise(v) for v in value]
    return value


def _sanitise_object(obj: dict[str, object]) -> dict[str, object]:
    """:func:`_sanitise` of a JSON object (whose keys are strings)."""
    return {_SURROGATES.sub("\ufffd", k): _sanitise(v) for k, v in obj.items()}


def parse_message(text: str | bytes) -> dict[str, object]:
    """Decode one text frame into a dict with at least a string ``type``. Text from the
    device is sanitised here, once: lone surrogates become U+FFFD.

    >>> parse_message('{"type":"listen","text":"hi \\\\ud800"}')["text"]
    'hi \ufffd'
    >>> parse_message("[" * 100_000)
    Traceback (most recent call last):
    ...
    xiaozhi_core.protocol.messages.ProtocolError: text frame is not valid JSON: nested too deeply
    """
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"text frame is not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("text frame is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolError(
            f'message must be a JSON object with a string "type", got {type(data).__name__}'
            if not isinstance(data, dict)
            else 'message has no string "type" field'
        )
    # JSON escapes are the only way a surrogate gets into a frame that was valid UTF-8;
    # str frames from other transports may carry raw ones (surrogateescape)
    raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
    if ("\\u" in raw and _SURROGATE_ESCAPE.search(raw)) or (
        not raw.isascii() and _SURROGATES.search(raw)
    ):
        try:
            clean = _sanitise_object(data)
        except RecursionError:
            raise ProtocolError("text frame is not valid JSON: nested too deeply") from None
        return clean
    return data


def dumps(message: dict[str, object]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def server_hello(session_id: str, sample_rate: int, frame_duration: int) -> dict[str, object]:
    """The server hello: ``transport`` and ``session_id`` are mandatory for firmware."""
    return {
        "type": "hello",
        "transport": "websocket",
        "session_id": session_id,
        "audio_params": {
            "format": "opus",
            "sample_rate": sample_rate,
            "channels": 1,
            "frame_duration": frame_duration,
        },
    }


def stt(session_id: str, text: str) -> dict[str, object]:
    return {"type": "stt", "text": text, "session_id": session_id}


def llm_emotion(session_id: str, emotion: str) -> dict[str, object]:
    """``{"type":"llm","emotion":...,"text":<emoji>}``; unknown emotions become neutral.

    >>> llm_emotion("s", "happy")["text"]
    '🙂'
    """
    if emotion not in _EMOJI:
        emotion = "neutral"
    return {"type": "llm", "emotion": emotion, "text": _EMOJI[emotion], "session_id": session_id}


def tts(session_id: str, state: str, text: str | None = None) -> dict[str, object]:
    msg: dict[str, object] = {"type": "tts", "state": state, "session_id": session_id}
    if text is not None:
        msg["text"] = text
    return msg


def alert(
    session_id: str, message: str, status: str = "error", emotion: str = "sad"
) -> dict[str, object]:
    """An alert: ``status``, ``message`` and ``emotion`` are all required by firmware."""
    return {
        "type": "alert",
        "status": status,
        "message": message,
        "emotion": emotion,
        "session_id": session_id,
    }


def mcp(session_id: str, payload: dict[str, object]) -> dict[str, object]:
    return {"type": "mcp", "payload": payload, "session_id": session_id}
