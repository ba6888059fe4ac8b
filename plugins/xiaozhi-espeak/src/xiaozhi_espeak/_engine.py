"""ctypes binding to libespeak-ng, as shipped (with its voice data) by ``espeakng-loader``.

libespeak-ng keeps all of its state in globals: one voice, one set of parameters, one
synthesis callback per loaded library. This module therefore owns exactly one
:class:`EspeakEngine` per process (:func:`get_engine`): it initialises the library once,
keeps the ctypes callback object alive for the life of the process, and serialises every
library call with one lock, so the core's worker threads can call it concurrently.

The library is opened from a private copy of the file (made in a temporary directory and
removed right after ``dlopen``): code elsewhere in the same process that loads
``espeakng_loader``'s library (a phonemizer, say) then gets its own instance and cannot
change this engine's voice or callback behind its back.

Nothing here runs the ``espeak-ng`` program; all work goes through the C API
(``espeak_Initialize`` in ``AUDIO_OUTPUT_SYNCHRONOUS`` mode, ``espeak_SetVoiceByName`` /
``espeak_SetVoiceByProperties``, ``espeak_SetParameter``, ``espeak_Synth``,
``espeak_ListVoices``).

Example:
    >>> engine = get_engine()
    >>> engine.sample_rate
    22050
    >>> pcm = engine.synthesize("Hello.", voice="en-us")
    >>> pcm.dtype, 0.2 < len(pcm) / engine.sample_rate < 2.0
    (dtype('int16'), True)
    >>> any(v.identifier == "sit/cmn" for v in engine.list_voices("cmn"))
    True
"""

from __future__ import annotations

import ctypes
import difflib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xiaozhi_core.errors import ProviderError

__all__ = ["EspeakEngine", "UnknownVoiceError", "VoiceInfo", "get_engine", "list_voices"]

# espeak_AUDIO_OUTPUT
_AUDIO_OUTPUT_SYNCHRONOUS = 2
# espeak_Initialize options: return an error instead of calling exit() on missing data.
_INITIALIZE_DONT_EXIT = 0x8000
# espeak_ERROR
_EE_OK = 0
_EE_NOT_FOUND = 2
# espeak_POSITION_TYPE
_POS_CHARACTER = 1
# espeak_Synth flags
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
# espeak_PARAMETER
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
#: Length in ms of the buffers espeak hands to the synth callback.
_CALLBACK_MS = 60

_GENDERS = {0: "", 1: "male", 2: "female"}

HOW_TO_LIST = (
    "list the voices with `python -m xiaozhi_espeak voices [LANGUAGE]` (or "
    "xiaozhi_espeak.tts.list_voices()); a voice is a language code such as 'en-us', "
    "'en-gb', 'cmn', 'yue', 'fr', 'de', a voice name or identifier ('English (America)', "
    "'gmw/en-US'), optionally with a variant: 'en-us+f3'"
)


class UnknownVoiceError(ProviderError):
    """The requested voice is not in espeak-ng's voice data."""


class _Voice(ctypes.Structure):
    """``espeak_VOICE`` from speak_lib.h."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        # A sequence of (priority byte, NUL-terminated language) pairs, ended by a 0 byte.
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events)
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(frozen=True)
class VoiceInfo:
    """One espeak-ng voice. ``languages`` is ``[(language, priority), ...]`` (a lower
    priority number is a better match); ``code`` is the first language: pass it (or the
    name or identifier) as ``voice``.

    >>> VoiceInfo("English (America)", "gmw/en-US", (("en-us", 2), ("en", 3)), "male").code
    'en-us'
    """

    name: str
    identifier: str
    languages: tuple[tuple[str, int], ...]
    gender: str = ""

    @property
    def code(self) -> str:
        return self.languages[0][0] if self.languages else self.identifier


def _languages(address: int | None) -> tuple[tuple[str, int], ...]:
    out: list[tuple[str, int]] = []
    if not address:
        return ()
    p = address
    while True:
        priority = ctypes.c_ubyte.from_address(p).value
        if priority == 0:
            break
        lang = ctypes.string_at(p + 1)
        out.append((lang.decode("utf-8", "replace"), priority))
        p += 2 + len(lang)
    return tuple(out)


def _load_private_copy(path: str) -> ctypes.CDLL:
    """dlopen a private copy of ``path`` (see the module docstring for why)."""
    tmp = tempfile.mkdtemp(prefix="xiaozhi-espeak-")
    copy = os.path.join(tmp, os.path.basename(path))
    try:
        shutil.copyfile(path, copy)
        return ctypes.CDLL(copy)
    finally:
        # The mapping survives the unlink (POSIX). Where the OS refuses (Windows keeps
        # loaded DLLs locked) the temporary file is left behind, which is harmless.
        shutil.rmtree(tmp, ignore_errors=True)


class EspeakEngine:
    """The process-wide libespeak-ng instance. Use :func:`get_engine`, not the class."""

    def __init__(self, library_path: str | None = None, data_path: str | None = None) -> None:
        if library_path is None or data_path is None:
            try:
                import espeakng_loader
            except ImportError as exc:
                raise ProviderError(
                    "tts provider 'espeak': the Python package 'espeakng-loader' (which ships "
                    "libespeak-ng and its voice data) is not installed; install it with "
                    "`pip install espeakng-loader`"
                ) from exc
            library_path = library_path or espeakng_loader.get_library_path()
            try:
                data_path = data_path or espeakng_loader.get_data_path()
            except RuntimeError as exc:
                raise ProviderError(
                    f"tts provider 'espeak': espeak-ng voice data not found ({exc}); "
                    "reinstall it with `pip install --force-reinstall espeakng-loader`"
                ) from exc
        if not Path(library_path).is_file():
            raise ProviderError(
                f"tts provider 'espeak': libespeak-ng not found at {library_path}; reinstall "
                "it with `pip install --force-reinstall espeakng-loader`"
            )
        try:
            lib = _load_private_copy(library_path)
        except OSError as exc:
            raise ProviderError(
                f"tts provider 'espeak': cannot load libespeak-ng from {library_path}: {exc}"
            ) from exc
        self.library_path = library_path
        self.data_path = data_path
        self._lib = lib
        self._declare(lib)
        self._lock = threading.Lock()
        self._voice_list: tuple[VoiceInfo, ...] | None = None
        self._voice: str | None = None  # the voice the library currently has selected
        self._sink: list[bytes] | None = None
        # Kept alive as long as the engine (for the process): the library stores the
        # raw function pointer.
        self._callback = _SYNTH_CALLBACK(self._on_audio)
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _CALLBACK_MS, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise ProviderError(
                f"tts provider 'espeak': espeak_Initialize failed (returned {rate}) with data "
                f"path {data_path}; reinstall `espeakng-loader`"
            )
        self.sample_rate: int = int(rate)
        lib.espeak_SetSynthCallback(self._callback)

    @staticmethod
    def _declare(lib: ctypes.CDLL) -> None:
        c_int, c_uint, c_char_p, c_void_p = (
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_char_p,
            ctypes.c_void_p,
        )
        lib.espeak_Initialize.argtypes = [c_int, c_int, c_char_p, c_int]
        lib.espeak_Initialize.restype = c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [c_char_p]
        lib.espeak_SetVoiceByName.restype = c_int
        lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_SetVoiceByProperties.restype = c_int
        lib.espeak_SetParameter.argtypes = [c_int, c_int, c_int]
        lib.espeak_SetParameter.restype = c_int
        lib.espeak_Synth.argtypes = [
            c_char_p,
            ctypes.c_size_t,
            c_uint,
            c_int,
            c_uint,
            c_uint,
            ctypes.POINTER(c_uint),
            c_void_p,
        ]
        lib.espeak_Synth.restype = c_int
        lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))

    # -- called by libespeak-ng, on the thread inside espeak_Synth (holding the lock) ------
    def _on_audio(
        self, wav: ctypes._Pointer[ctypes.c_short], count: int, events: int | None
    ) -> int:
        sink = self._sink
        if sink is None:
            return 1  # nobody is listening: abort
        if count > 0 and wav:
            sink.append(ctypes.string_at(wav, count * 2))
        return 0

    # -- voice selection (lock held) ---------------------------------------------------
    def _select_voice(self, voice: str) -> None:
        if voice == self._voice:
            return
        self._voice = None  # a failed selection leaves the library's voice undefined
        raw = voice.strip().encode("utf-8")
        if not raw or b"\x00" in raw:
            raise UnknownVoiceError(
                f"tts provider 'espeak': invalid voice {voice!r}; {HOW_TO_LIST}"
            )
        # espeak-ng picks *some* voice for any name it does not know ('klingon' would
        # silently speak another language): accept only installed names, identifiers
        # and language tags
        if not self._known(voice):
            raise UnknownVoiceError(self._unknown(voice))
        rc = self._lib.espeak_SetVoiceByName(raw)
        if rc == _EE_NOT_FOUND and b"+" not in raw:
            # Not a voice name/identifier: try it as a language tag ('zh', 'en-gb').
            spec = _Voice()
            lang = ctypes.create_string_buffer(raw.lower())
            spec.languages = ctypes.cast(lang, ctypes.c_void_p).value
            rc = self._lib.espeak_SetVoiceByProperties(ctypes.byref(spec))
        if rc == _EE_NOT_FOUND:
            raise UnknownVoiceError(self._unknown(voice))
        if rc != _EE_OK:
            raise ProviderError(
                f"tts provider 'espeak': selecting voice {voice!r} failed (espeak error {rc})"
            )
        self._voice = voice

    def _known(self, voice: str) -> bool:
        """Whether ``voice`` (without its ``+variant``) names an installed voice, its
        identifier, or a language some voice speaks (exactly or as a prefix: 'en')."""
        base = voice.strip().partition("+")[0].lower()
        for v in self._voices_locked():
            if base in (
                v.name.lower(),
                v.identifier.lower(),
                v.identifier.lower().rpartition("/")[2],
            ):
                return True
            if any(lang == base or lang.startswith(base + "-") for lang, _ in v.languages):
                return True
        return False

    def _unknown(self, voice: str) -> str:
        """The message for an unknown voice: the closest installed one and all codes."""
        codes = sorted({v.code for v in self._voices_locked()})
        close = difflib.get_close_matches(voice.strip().lower()[:50], codes, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (
            f"tts provider 'espeak': unknown voice {voice!r}{hint}; installed voices: "
            f"{', '.join(codes)}; {HOW_TO_LIST}"
        )

    def check_voice(self, voice: str) -> None:
        """Raise :class:`UnknownVoiceError` unless ``voice`` can be selected."""
        with self._lock:
            self._select_voice(voice)

    # -- synthesis -----------------------------------------------------------------------
    def synthesize(
        self,
        text: str,
        *,
        voice: str,
        rate: int = 175,
        pitch: int = 50,
        volume: int = 100,
        pitch_range: int = 50,
        end_pause: bool = True,
    ) -> np.ndarray:
        """Speak ``text`` with ``voice``; returns int16 samples at :attr:`sample_rate`.

        Holds the engine lock for the whole synthesis (espeak-ng renders roughly a
        thousand times faster than real time, a few ms per sentence).
        """
        data = text.replace("\x00", " ").encode("utf-8")
        flags = _CHARS_UTF8 | (_ENDPAUSE if end_pause else 0)
        with self._lock:
            self._select_voice(voice)
            for param, value in (
                (_RATE, rate),
                (_PITCH, pitch),
                (_VOLUME, volume),
                (_RANGE, pitch_range),
            ):
                self._lib.espeak_SetParameter(param, int(value), 0)
            sink: list[bytes] = []
            self._sink = sink
            try:
                rc = self._lib.espeak_Synth(
                    data, len(data) + 1, 0, _POS_CHARACTER, 0, flags, None, None
                )
            finally:
                self._sink = None
        if rc != _EE_OK:
            raise ProviderError(
                f"tts provider 'espeak': espeak_Synth failed (espeak error {rc}) for "
                f"{len(text)} characters with voice {voice!r}"
            )
        return np.frombuffer(b"".join(sink), dtype="<i2").astype(np.int16, copy=False)

    def _voices_locked(self) -> tuple[VoiceInfo, ...]:
        """Every installed voice (lock held; read once, the voice data does not change)."""
        if self._voice_list is None:
            array = self._lib.espeak_ListVoices(None)
            voices = []
            i = 0
            while array[i]:
                v = array[i].contents
                voices.append(
                    VoiceInfo(
                        name=(v.name or b"").decode("utf-8", "replace"),
                        identifier=(v.identifier or b"").decode("utf-8", "replace"),
                        languages=_languages(v.languages),
                        gender=_GENDERS.get(v.gender, ""),
                    )
                )
                i += 1
            self._voice_list = tuple(voices)
        return self._voice_list

    def list_voices(self, language: str | None = None) -> list[VoiceInfo]:
        """The installed voices, optionally only those speaking ``language`` (a prefix
        match on language codes: ``"en"`` finds en-us, en-gb...)."""
        want = language.lower() if language else None
        with self._lock:
            voices = list(self._voices_locked())
        if want:
            voices = [
                v
                for v in voices
                if any(lang == want or lang.startswith(want + "-") for lang, _ in v.languages)
            ]
        return voices


_engine: EspeakEngine | None = None
_engine_lock = threading.Lock()


def get_engine() -> EspeakEngine:
    """The process's engine, created (library loaded and initialised) on first use."""
    global _engine
    engine = _engine
    if engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = EspeakEngine()
            engine = _engine
    return engine


def _forget_engine_in_child() -> None:
    # After fork() the child's copy of the lock may be held by a thread that does not
    # exist there; the child builds its own engine on first use instead.
    global _engine, _engine_lock
    _engine = None
    _engine_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_engine_in_child)


def list_voices(language: str | None = None) -> list[VoiceInfo]:
    """The voices espeak-ng offers (see :meth:`EspeakEngine.list_voices`).

    >>> [v.name for v in list_voices("en-us")]
    ['English (America)', 'English (America, New York City)']
    """
    return get_engine().list_voices(language)
