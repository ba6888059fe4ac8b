"""Profiles ("agents") as sessions use them, and the book that lets a config reload
reach new turns without touching running ones.

A :class:`Profile` is a named profile of ``profiles:`` with every unset key filled in
from ``session:``. A :class:`ProfileSet` is everything a turn needs to pick its profile:
the profiles, the default, and the ``devices:`` mapping of one config. The
:class:`ProfileBook` holds the current set; the server builds a new set from a reloaded
config (validated first, so a broken one never replaces the running one) and swaps it in
with one assignment. The frozen :class:`~xiaozhi_core.session.host.SessionHost` keeps
the same book, and every turn resolves its profile from ``book.current`` when it starts:
a reload applies to the next turn of every session, never to a turn under way.

Example:
    >>> from xiaozhi_core.testing import fake_config
    >>> config = fake_config(profiles={"kids": {"system_prompt": "Be gentle.",
    ...                                         "voice": "soft"}},
    ...                      devices={"AA:BB": "kids"})
    >>> book = ProfileBook(build_profiles(config))
    >>> book.current.resolve("aa:bb", None).system_prompt
    'Be gentle.'
    >>> book.current.resolve("cc:dd", None).name, book.current.resolve("cc:dd", "kids").voice
    ('default', 'soft')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..config import DeploymentConfig, LanguageSettings, ProfileSettings, SessionSettings
from ..errors import ConfigError
from ..language import AUTO, BUILTIN_LANGUAGES, script_language
from ..providers import ProviderSpec, TTSCapabilities
from .tools import SERVER_TOOLS

__all__ = [
    "DEFAULT",
    "Profile",
    "ProfileBook",
    "ProfileSet",
    "Speech",
    "ToolPolicy",
    "WakeWords",
    "build_profiles",
    "session_profile",
]

#: The name of the profile made of the ``session:`` settings alone.
DEFAULT = "default"


@dataclass(frozen=True)
class ToolPolicy:
    """Which tools a turn may offer the LLM.

    >>> p = ToolPolicy(frozenset({"get_time"}), frozenset({"self.light.on"}))
    >>> p.allows_device("self.light.on"), p.allows_device("self.reboot")
    (True, False)
    >>> ToolPolicy(frozenset(), True).allows_device("anything")
    True
    """

    server: frozenset[str]
    #: True: every tool the device offers; else the allowed MCP names.
    device: bool | frozenset[str] = True

    def allows_device(self, mcp_name: str) -> bool:
        return self.device if isinstance(self.device, bool) else mcp_name in self.device


@dataclass(frozen=True)
class Speech:
    """How a profile speaks one language: its phrases and its TTS voice (None: the
    provider's configured voice)."""

    language: str
    name: str
    greeting: str
    goodbye: str
    apology: str
    voice: str | None


@dataclass(frozen=True)
class Profile:
    """A profile with every setting resolved.

    ``language`` is the profile's own (``session.language`` or the profile's): None
    (no language set: the ASR's own setting, the configured voice), ``auto`` or a code;
    ``speech`` how it speaks each known language. A turn speaks one language (see
    :meth:`turn_language`) and takes its prompt, voice and phrases from it:

    >>> from xiaozhi_core.testing import fake_config
    >>> p = build_profiles(fake_config(session={"language": "zh"})).default
    >>> p.turn_language(None), p.asr_language, p.speech_for("zh").greeting
    ('zh', 'zh', '你好，我是小智，有什么可以帮你？')
    >>> p.prompt_for("zh").endswith("Always answer in this language: Simplified Chinese (zh).")
    True
    >>> a = build_profiles(fake_config(session={"language": "auto"})).default
    >>> a.asr_language, a.turn_language("en"), a.turn_language(None, "今天几号")
    (None, 'en', 'zh')
    >>> a.turn_language(None) is None
    True
    """

    name: str
    system_prompt: str
    voice: str | None
    language: str | None
    greeting: str
    goodbye: str
    #: Reply-length budget in characters (0: none).
    reply_chars: int
    tools: ToolPolicy
    #: Validated per-request options for the LLM / TTS provider (None: pass none).
    llm_options: object | None = None
    tts_options: object | None = None
    #: Language code → how this profile speaks it (every known language).
    speech: Mapping[str, Speech] = field(default_factory=dict)
    #: The apology of the profile's own language.
    apology: str = BUILTIN_LANGUAGES["en"].apology or ""
    #: Whether a wake word said in another language gets that language's greeting:
    #: only when the TTS speaks several languages, and not when the profile has no
    #: language but its own greeting (which then stays the greeting, as before).
    wake_languages: bool = False

    def greeting_language(self, said_in: str | None) -> str | None:
        """The language of the greeting for a wake word said in ``said_in``.

        >>> from xiaozhi_core.testing import fake_config
        >>> en = build_profiles(fake_config(session={"language": "en"})).default
        >>> en.greeting_language("zh"), en.greeting_language(None)
        ('zh', 'en')
        >>> custom = build_profiles(fake_config(session={"greeting": "Yo"})).default
        >>> custom.greeting_language("zh") is None, custom.greeting_for(None)
        (True, 'Yo')
        """
        if said_in is not None and self.wake_languages and said_in in self.speech:
            return said_in
        return self.turn_language(None)

    @property
    def asr_language(self) -> str | None:
        """The language the ASR is asked for (None: its own setting or detection)."""
        return None if self.language == AUTO else self.language

    def turn_language(self, detected: str | None, text: str | None = None) -> str | None:
        """The language a turn answers in: the profile's; with ``auto``, the language
        the ASR ``detected`` (or ``text``'s script) when it is a known one."""
        if self.language != AUTO:
            return self.language
        for code in (detected, script_language(text or "")):
            if code is not None and code in self.speech:
                return code
        return None

    def speech_for(self, language: str | None) -> Speech | None:
        """How this profile speaks ``language`` (None: no known language)."""
        return self.speech.get(language) if language is not None else None

    @property
    def prompt(self) -> str:
        """The system prompt, with the language stated when the profile sets one."""
        return self.prompt_for(self.asr_language)

    def prompt_for(self, language: str | None) -> str:
        """The system prompt of a turn in ``language`` (stated when known)."""
        speech = self.speech_for(language)
        if speech is not None:
            named = speech.name if speech.name == language else f"{speech.name} ({language})"
            return f"{self.system_prompt}\nAlways answer in this language: {named}."
        if language:
            return f"{self.system_prompt}\nAlways answer in this language: {language}."
        if self.language == AUTO:
            return f"{self.system_prompt}\nAnswer in the language the user speaks."
        return self.system_prompt

    def voice_for(self, language: str | None) -> str | None:
        """The TTS voice of a turn in ``language`` (None: the configured voice)."""
        speech = self.speech_for(language)
        return speech.voice if speech is not None else self.voice

    def greeting_for(self, language: str | None) -> str:
        speech = self.speech_for(language)
        return speech.greeting if speech is not None else self.greeting

    def goodbye_for(self, language: str | None) -> str:
        speech = self.speech_for(language)
        return speech.goodbye if speech is not None else self.goodbye

    def apology_for(self, language: str | None) -> str:
        speech = self.speech_for(language)
        return speech.apology if speech is not None else self.apology


@dataclass(frozen=True)
class WakeWords:
    """The words that are only a wake word, and the language each is said in.

    >>> from xiaozhi_core.testing import fake_config
    >>> w = build_profiles(fake_config()).wake_words
    >>> w.match("你好，小智！"), w.match("Hey Xiaozhi"), w.match(""), w.match("what time is it")
    (('zh',), ('en',), (None,), None)
    """

    #: Normalised word (lower case, letters and digits only) → its language (None: not
    #: known; the profile's own).
    words: Mapping[str, str | None]

    @staticmethod
    def norm(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    def match(self, text: str) -> tuple[str | None] | None:
        """``(language,)`` when ``text`` is only a wake word (or empty), else None."""
        norm = self.norm(text)
        if not norm:
            return (None,)
        if norm in self.words:
            return (self.words[norm],)
        return None


@dataclass(frozen=True)
class ProfileSet:
    """The profiles of one config, and how a device finds its own."""

    profiles: dict[str, Profile]
    default: Profile
    #: Device id (lower case) → profile name, from ``devices:``.
    devices: dict[str, str]
    #: The wake words and their languages (``session.wake_words``, ``languages``).
    wake_words: WakeWords = field(default_factory=lambda: WakeWords({}))

    def resolve(self, device_id: str, stored: str | None) -> Profile:
        """The profile of ``device_id``: the one the store maps it to (when this config
        defines it), else ``devices:``, else the default."""
        if stored is not None and stored in self.profiles:
            return self.profiles[stored]
        mapped = self.devices.get(device_id.lower())
        if mapped is not None and mapped in self.profiles:
            return self.profiles[mapped]
        return self.default

    def names(self) -> list[str]:
        """The profile names a device can be mapped to."""
        return sorted(self.profiles)


def _tools(names: Iterable[str], path: str) -> frozenset[str]:
    out = frozenset(names)
    unknown = sorted(out - set(SERVER_TOOLS))
    if unknown:
        raise ConfigError(
            f"unknown server tool {unknown[0]!r}; available: {', '.join(sorted(SERVER_TOOLS))}",
            path=path,
        )
    return out


def _languages(s: SessionSettings) -> dict[str, LanguageSettings]:
    """Every known language: the built-in ones with ``session.languages`` over them."""
    return {
        code: BUILTIN_LANGUAGES.get(code, LanguageSettings()).overlay(
            s.languages.get(code, LanguageSettings())
        )
        for code in s.known_languages()
    }


def _speech(
    home: str | None,
    s: SessionSettings,
    p: ProfileSettings | None,
    voice: str | None,
    tts: ProviderSpec | None,
    tts_options: object,
) -> dict[str, Speech]:
    """How a profile whose language is ``home`` speaks each known language.

    A phrase comes from ``session.languages.<code>``, else from the profile's or the
    session's own key when it applies to that language (the profile's language, or every
    language when that is null or ``auto``), else from the built-in language, else
    English. The voice: ``languages.<code>.voice``, else the configured voice
    (``voice``) for the profile's own language, else the TTS provider's voice for the
    language (``voice_for_language``), else the configured voice.
    """
    english = BUILTIN_LANGUAGES["en"]
    own_applies_to_all = home is None or home == AUTO
    out: dict[str, Speech] = {}
    for code, lang in _languages(s).items():
        user = s.languages.get(code, LanguageSettings())
        own = own_applies_to_all or code == home

        def phrase(
            key: str, user: LanguageSettings = user, own: bool = own, lang: LanguageSettings = lang
        ) -> str:
            value = getattr(user, key)
            if value is None and own:
                value = getattr(p, key, None) if p is not None else None
                value = getattr(s, key) if value is None else value
            for fallback in (lang, english):
                value = getattr(fallback, key) if value is None else value
            return str(value)

        chosen = user.voice
        if chosen is None and code == home and voice is not None:
            chosen = voice
        if chosen is None and tts is not None and tts.voice_for_language is not None:
            chosen = tts.voice_for_language(tts_options, code, voice)
        out[code] = Speech(
            code,
            lang.name or code,
            phrase("greeting"),
            phrase("goodbye"),
            phrase("apology"),
            chosen if chosen is not None else voice,
        )
    return out


def _profile(
    name: str,
    p: ProfileSettings,
    s: SessionSettings,
    request: dict[str, object | None],
    tts: ProviderSpec | None = None,
    tts_options: object = None,
) -> Profile:
    path = f"profiles.{name}"
    device: bool | frozenset[str] = True
    if isinstance(p.device_tools, list):
        device = frozenset(p.device_tools)
    elif p.device_tools is not None:
        device = bool(p.device_tools)
    language = p.language if p.language is not None else s.language
    voice = p.voice if p.voice is not None else s.tts_voice
    speech = _speech(language, s, p, voice, tts, tts_options)
    own_greeting = p.greeting if p.greeting is not None else s.greeting
    wake_languages = (tts is None or TTSCapabilities.of(tts).multilingual) and not (
        language in (None, AUTO) and own_greeting is not None
    )
    home = speech.get("en" if language in (None, AUTO) else language)
    assert home is not None
    return Profile(
        name=name,
        system_prompt=s.system_prompt if p.system_prompt is None else p.system_prompt,
        voice=voice,
        language=language,
        greeting=home.greeting,
        goodbye=home.goodbye,
        reply_chars=p.reply_chars or 0,
        tools=ToolPolicy(
            _tools(
                s.server_tools if p.server_tools is None else p.server_tools, f"{path}.server_tools"
            ),
            device,
        ),
        llm_options=request.get("llm"),
        tts_options=request.get("tts"),
        speech=speech,
        apology=home.apology,
        wake_languages=wake_languages,
    )


def session_profile(
    s: SessionSettings, tts: ProviderSpec | None = None, tts_options: object = None
) -> Profile:
    """The profile made of the ``session:`` settings alone.

    >>> from xiaozhi_core.config import SessionSettings
    >>> session_profile(SessionSettings(greeting="Yo")).greeting_for("en")
    'Yo'
    >>> session_profile(SessionSettings()).greeting_for("zh")
    '你好，我是小智，有什么可以帮你？'
    """
    return _profile(
        DEFAULT,
        ProfileSettings(),
        s,
        {},
        tts,
        tts_options,
    )


def wake_words(s: SessionSettings) -> WakeWords:
    """``session.wake_words`` and every language's ``wake_words``, each with its
    language: the language that lists it, else the one its script shows (Chinese
    characters: ``zh``), else unknown (the profile's own)."""
    words: dict[str, str | None] = {}
    for code, lang in _languages(s).items():
        for word in lang.wake_words or []:
            words.setdefault(WakeWords.norm(word), code)
    for word in s.wake_words:
        norm = WakeWords.norm(word)
        if norm and norm not in words:
            words[norm] = script_language(word)
    words.pop("", None)
    return WakeWords(words)


def build_profiles(config: DeploymentConfig) -> ProfileSet:
    """Resolve a validated config's profiles. Raises :class:`ConfigError` (with the key
    path) for what only the session layer can check, e.g. an unknown server tool."""
    s = config.session
    tts, tts_options = config.tts.spec, config.tts.options
    profiles = {
        name: _profile(name, p, s, config.request_options.get(name, {}), tts, tts_options)
        for name, p in config.profiles.items()
    }
    if s.default_profile is not None:
        default = profiles[s.default_profile]
    else:
        _tools(s.server_tools, "session.server_tools")
        default = profiles.get(DEFAULT) or session_profile(s, tts, tts_options)
    return ProfileSet(profiles, default, dict(config.devices), wake_words(s))


class ProfileBook:
    """The current :class:`ProfileSet`; replaced as a whole on reload (one assignment,
    on the event loop, so a turn never sees half of one config and half of another)."""

    def __init__(self, current: ProfileSet) -> None:
        self.current = current

    def swap(self, new: ProfileSet) -> ProfileSet:
        """Make ``new`` current; returns the previous set."""
        old, self.current = self.current, new
        return old
