"""Languages a session speaks: codes, the built-in phrases, and telling a text's language
by its script.

A language is a short code (``en``, ``zh``; ISO 639-1 style, region dropped). Each one
has a :class:`LanguageSettings`: its name (stated in the LLM's system prompt), the
greeting, goodbye and apology, an optional TTS voice and the wake words said in it.
English and Chinese are built in (:data:`BUILTIN_LANGUAGES`); ``session.languages``
overrides their keys or adds languages.

Example:
    >>> normalize_language(" zh-CN "), normalize_language("EN_us"), normalize_language(None)
    ('zh', 'en', None)
    >>> BUILTIN_LANGUAGES["zh"].greeting
    '你好，我是小智，有什么可以帮你？'
    >>> script_language("今天天气怎么样"), script_language("What time is it?")
    ('zh', None)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

__all__ = [
    "AUTO",
    "BUILTIN_LANGUAGES",
    "LanguageSettings",
    "is_language_code",
    "normalize_language",
    "script_language",
]

#: ``session.language: auto``: recognise without a language hint and answer in the
#: language the ASR reports (or, for typed text, the one its script shows).
AUTO = "auto"

_CODE_RE = re.compile(r"^[a-z]{2,3}$")
# Han ideographs (CJK Unified + Extension A) and CJK punctuation: Chinese text.
_HAN_RE = re.compile(r"[\u3400-\u9fff]")


@dataclass
class LanguageSettings:
    """One language under ``session.languages``. Every key is optional: an unset one
    comes from ``session:``'s own key where that applies (see ``session.greeting``),
    else from the built-in language of that code, else from English.

    Example::

        session:
          language: zh
          languages:
            zh: {greeting: 你好呀！, voice: zh-CN-YunxiNeural}
            en: {greeting: "Hello! What can I do?"}
    """

    #: The language's name, as the system prompt states it ("Always answer in ...").
    name: str | None = None
    #: Spoken on a wake word said in this language.
    greeting: str | None = None
    #: Spoken before an idle session closes.
    goodbye: str | None = None
    #: Spoken (and shown) when a turn fails.
    apology: str | None = None
    #: TTS voice for this language (null: the TTS provider's voice for it, if it
    #: declares one, else the configured voice).
    voice: str | None = None
    #: Wake words said in this language: ``listen detect`` with one of them gets this
    #: language's greeting, in its voice.
    wake_words: list[str] | None = None

    def overlay(self, other: LanguageSettings) -> LanguageSettings:
        """``other``'s set keys over this one's.

        >>> lang = LanguageSettings(name="x", greeting="a").overlay(LanguageSettings(greeting="b"))
        >>> lang.name, lang.greeting, lang.goodbye
        ('x', 'b', None)
        """
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for f in fields(other):
            if getattr(other, f.name) is not None:
                values[f.name] = getattr(other, f.name)
        return LanguageSettings(**values)


#: The languages every deployment knows, with their phrases and wake words.
BUILTIN_LANGUAGES: dict[str, LanguageSettings] = {
    "en": LanguageSettings(
        name="English",
        greeting="Hi, I'm listening.",
        goodbye="I haven't heard from you for a while. Goodbye!",
        apology="Sorry, something went wrong. Please try again.",
        wake_words=["hi xiaozhi", "hey xiaozhi", "hello xiaozhi", "xiaozhi"],
    ),
    "zh": LanguageSettings(
        name="Simplified Chinese",
        greeting="你好，我是小智，有什么可以帮你？",
        goodbye="好久没听到你说话了，我先休息啦，再见！",
        apology="抱歉，刚才出了点问题，请再说一遍。",
        wake_words=["你好小智", "小智", "小智小智", "嗨小智", "哈喽小智", "你好小志", "小志"],
    ),
}


def normalize_language(value: str | None) -> str | None:
    """A language code from a user's spelling: lower case, region dropped (``zh-CN`` →
    ``zh``); ``auto`` stays ``auto``; None and "" are None. Not checked against any list
    (see :func:`is_language_code`).

    >>> normalize_language("Auto"), normalize_language("")
    ('auto', None)
    """
    if value is None or not str(value).strip():
        return None
    return str(value).strip().lower().replace("_", "-").split("-")[0]


def is_language_code(value: str) -> bool:
    """Whether ``value`` looks like a language code (2-3 lower-case letters).

    >>> is_language_code("zh"), is_language_code("yue"), is_language_code("chinese")
    (True, True, False)
    """
    return bool(_CODE_RE.match(value))


def script_language(text: str) -> str | None:
    """``zh`` when ``text`` holds Han characters, else None (not told by the script).

    >>> script_language("打开 WiFi"), script_language("")
    ('zh', None)
    """
    return "zh" if _HAN_RE.search(text) else None
