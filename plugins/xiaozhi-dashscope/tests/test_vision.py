"""Vision ``qwen_vl``: a real JPEG/PNG to DashScope's multimodal API (local fake), the
answer's text back, errors named; the question is never treated as a file path."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from xiaozhi_dashscope.plugin import xiaozhi_providers
from xiaozhi_testkit.images import jpeg, png

from xiaozhi_core.errors import ProviderError, ProviderTimeout


def make(server: Any, **options: Any) -> Any:
    spec = next(s for s in xiaozhi_providers() if s.name == "qwen_vl")
    return spec.create({"api_key": "sk-test", "base_http_url": server.http_url, **options})


@pytest.mark.parametrize("image,mime", [(jpeg(), "image/jpeg"), (png(), "image/png")])
async def test_explains_a_real_image(fake_dashscope, fake_module, image, mime) -> None:
    vl = make(fake_dashscope, model="qwen-vl-max", max_tokens=100)
    try:
        fake_dashscope.vl_turns.append(fake_module.VLTurn("  一个红色方块。 "))
        assert await vl.explain(image, mime, "中间是什么？") == "一个红色方块。"
    finally:
        await vl.close()
    record = fake_dashscope.http[-1]
    assert record.headers["Authorization"] == "Bearer sk-test"
    body = record.body
    assert body["model"] == "qwen-vl-max" and body["parameters"] == {"max_tokens": 100}
    system, user = body["input"]["messages"]
    assert system["role"] == "system"
    picture, question = user["content"]
    head, _, data = picture["image"].partition(",")
    assert head == f"data:{mime};base64" and base64.b64decode(data) == image
    assert question == {"text": "中间是什么？"}


async def test_a_question_naming_a_local_file_is_sent_as_text(fake_dashscope, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload")
    vl = make(fake_dashscope)
    try:
        await vl.explain(png(), "image/png", str(secret))
    finally:
        await vl.close()
    assert fake_dashscope.http[-1].body["input"]["messages"][1]["content"][1] == {
        "text": str(secret)
    }


async def test_errors_are_named(fake_dashscope, fake_module) -> None:
    vl = make(fake_dashscope, timeout=0.3)
    try:
        with pytest.raises(ProviderError, match="InvalidParameter: The image format is illegal"):
            await vl.explain(b"GIF89a-not-accepted", "image/gif", "what?")
        fake_dashscope.vl_turns.append(fake_module.VLTurn(status=429, code="Throttling"))
        with pytest.raises(ProviderError, match="throttled"):
            await vl.explain(png(), "image/png", "what?")
        fake_dashscope.vl_turns.append(fake_module.VLTurn(text=""))
        with pytest.raises(ProviderError, match="is 'qwen-vl-plus' a vision model"):
            await vl.explain(png(), "image/png", "what?")
        fake_dashscope.vl_turns.append(fake_module.VLTurn(delay=1.0))
        with pytest.raises(ProviderTimeout, match="within 0.3 s"):
            await vl.explain(png(), "image/png", "what?")
    finally:
        await vl.close()
    bad = make(fake_dashscope, api_key="sk-wrong")
    try:
        with pytest.raises(ProviderError, match="API key is invalid"):
            await bad.explain(png(), "image/png", "what?")
    finally:
        await bad.close()
