"""Command line: list espeak-ng voices, or speak a text into a WAV file.

    python -m xiaozhi_espeak voices [LANGUAGE]
    python -m xiaozhi_espeak say "Hello there." -o hello.wav [--voice cmn] [--sample-rate 16000]

``say`` prints the time to the first chunk and the real-time factor.
"""

from __future__ import annotations

import argparse
import sys
import time
import wave
from collections.abc import Sequence

from xiaozhi_core.errors import ProviderError

__all__ = ["main"]


def _voices(language: str | None) -> int:
    from ._engine import list_voices

    voices = list_voices(language)
    if not voices:
        print(f"no espeak-ng voice speaks {language!r}", file=sys.stderr)
        return 1
    width = max(len(v.code) for v in voices)
    for v in voices:
        langs = ", ".join(lang for lang, _ in v.languages)
        print(f"{v.code:<{width}}  {v.name}  [{v.identifier}]  ({langs})")
    return 0


def _say(args: argparse.Namespace) -> int:
    from .plugin import EspeakOptions
    from .tts import EspeakTTS

    tts = EspeakTTS(
        EspeakOptions(
            voice=args.voice, sample_rate=args.sample_rate, rate=args.rate, pitch=args.pitch
        )
    )
    t0 = time.perf_counter()
    first = None
    audio = bytearray()
    for chunk in tts.synthesize(args.text):
        if first is None:
            first = time.perf_counter() - t0
        audio += chunk
    elapsed = time.perf_counter() - t0
    seconds = len(audio) / 2 / tts.sample_rate
    with wave.open(args.output, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(tts.sample_rate)
        w.writeframes(bytes(audio))
    rtf = elapsed / seconds if seconds else float("nan")
    print(
        f"{args.output}: {seconds:.2f} s of audio at {tts.sample_rate} Hz; first chunk "
        f"after {1000 * (first or 0):.1f} ms; real-time factor {rtf:.4f}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xiaozhi_espeak", description="espeak-ng voices and test synthesis"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_voices = sub.add_parser("voices", help="list the voices (optionally for one language)")
    p_voices.add_argument("language", nargs="?", help="language code prefix, e.g. en, cmn")
    p_say = sub.add_parser("say", help="speak TEXT into a WAV file")
    p_say.add_argument("text")
    p_say.add_argument("-o", "--output", default="espeak.wav")
    p_say.add_argument("-v", "--voice", default="en-us")
    p_say.add_argument("--sample-rate", type=int, choices=(16000, 24000), default=24000)
    p_say.add_argument("--rate", type=int, default=175, help="words per minute (80-450)")
    p_say.add_argument("--pitch", type=int, default=50, help="0-100")
    args = parser.parse_args(argv)
    try:
        if args.command == "voices":
            return _voices(args.language)
        return _say(args)
    except (ProviderError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
