"""Vision ``openai``: a real JPEG/PNG goes out as an image part of one chat completion;
the reply's text comes back; errors are named."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from fake_openai import ChatReply, ErrorReply, FakeOpenAI
from xiaozhi_testkit.images import jpeg, png

from xiaozhi_core.errors import ConfigError, ProviderError


@pytest.mark.parametrize("image,mime", [(jpeg(), "image/jpeg"), (png(), "image/png")])
async def test_explains_a_real_image(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any], image, mime
) -> None:
    vision = make_provider("vision", model="qwen-vl-plus", detail="low")
    fake_openai.script_chat(ChatReply("  A red square on a gradient.  "))
    assert (
        await vision.explain(image, mime, "What is in the middle?") == "A red square on a gradient."
    )
    body = fake_openai.requests[-1].json
    assert body["model"] == "qwen-vl-plus" and body["stream"] is False
    assert body["max_tokens"] == 300
    system, user = body["messages"]
    assert system["role"] == "system" and "spoken" in system["content"]
    text, picture = user["content"]
    assert text == {"type": "text", "text": "What is in the middle?"}
    head, _, data = picture["image_url"]["url"].partition(",")
    assert head == f"data:{mime};base64" and picture["image_url"]["detail"] == "low"
    assert base64.b64decode(data) == image


async def test_the_fake_refuses_what_is_not_an_image(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    # the fake checks the bytes like OpenAI; the provider passes its 400 on, named
    vision = make_provider("vision")
    with pytest.raises(ProviderError, match="unsupported image"):
        await vision.explain(b"not an image at all", "image/jpeg", "what?")


async def test_empty_reply_and_server_errors_are_named(
    fake_openai: FakeOpenAI, make_provider: Callable[..., Any]
) -> None:
    vision = make_provider("vision", model="text-only-model")
    fake_openai.script_chat(ChatReply(""), ErrorReply.server_error(503))
    with pytest.raises(ProviderError, match="does model 'text-only-model' accept images"):
        await vision.explain(png(), "image/png", "what?")
    with pytest.raises(ProviderError, match="503"):
        await vision.explain(png(), "image/png", "what?")


def test_detail_is_validated() -> None:
    from xiaozhi_openai.plugin import xiaozhi_providers

    spec = next(s for s in xiaozhi_providers() if str(s.role) == "vision")
    with pytest.raises(ConfigError, match="detail: 'ultra' is not allowed; allowed: 'low'"):
        spec.validate({"detail": "ultra"}, path="vision.options")
